"""MATH-500 grading as PRM800K's `grade_answer(given_answer, ground_truth)` decides it (the grader
the DeepSeek-R1 and gpt-oss references import from openai/prm800k). Written here from its rules:

1. Hendrycks-MATH string normalisation of both (`normalize_answer`): equal -> correct.
2. PRM800K's own normalisation (`_normalize`): \\text{} unwrapped, %, $, units and "^\\circ"
   removed, "million/billion/trillion" as powers of ten, "or"/"and" as commas, whole floats as
   integers, LaTeX rendered to text (pylatexenc) with sqrt/pi/inf spelled out, mixed numbers
   "7 3/4" -> "7+3/4", spaces and braces removed, lowercase, integers with thousands commas
   canonical. Equal -> correct; empty given -> wrong.
3. Tuples/intervals split on top-level commas: the same brackets and count, then element by
   element: two fractions must be written identically; an integer never equals a non-integer;
   otherwise sympy must simplify (gt) - (given) to 0, tried only for expressions with at most
   two unknown letters and without exponent forms that sympy could blow up on.
"""
from __future__ import annotations

import re

# ------------------------------------------------------------------------ Hendrycks MATH (step 1)


def _fix_fracs(s: str) -> str:
    subs = s.split("\\frac")
    out = subs[0]
    for sub in subs[1:]:
        out += "\\frac"
        if sub and sub[0] == "{":
            out += sub
            continue
        if len(sub) < 2:
            return s
        a, b = sub[0], sub[1]
        if b != "{":
            out += "{" + a + "}{" + b + "}" + sub[2:]
        else:
            out += "{" + a + "}" + b + sub[2:]
    return out


def _fix_a_slash_b(s: str) -> str:
    if len(s.split("/")) != 2:
        return s
    a, b = s.split("/")
    try:
        ai, bi = int(a), int(b)
    except ValueError:
        return s
    return s if s != f"{ai}/{bi}" else "\\frac{" + str(ai) + "}{" + str(bi) + "}"


def _remove_right_units(s: str) -> str:
    if "\\text{ " in s:
        return s.split("\\text{ ")[0]
    return s


def _fix_sqrt(s: str) -> str:
    if "\\sqrt" not in s:
        return s
    parts = s.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        if part and part[0] != "{":
            out += "\\sqrt{" + part[0] + "}" + part[1:]
        else:
            out += "\\sqrt" + part
    return out


def _strip_string(s: str) -> str:
    s = s.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "")
    s = _remove_right_units(s)
    s = s.replace("\\%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    if len(s.split("=")) == 2 and len(s.split("=")[0]) <= 2:
        s = s.split("=")[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    return _fix_a_slash_b(s)


def normalize_answer(answer: str | None) -> str | None:
    if answer is None:
        return None
    answer = answer.strip()
    try:
        m = re.search(r"^\\text\{(?P<text>.+?)\}$", answer)
        if m is not None:
            answer = m.group("text").strip()
        return _strip_string(answer)
    except Exception:  # noqa: BLE001 - the original returns the answer unchanged on any failure
        return answer


# ------------------------------------------------------------------------ PRM800K (steps 2, 3)
_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month",
          "year", "foot", "feet", "inch", "yard")
_BAD_SUBSTRINGS = ("^{", "^(")
_BAD_REGEXES = (r"\^[0-9]+\^", r"\^[0-9][0-9]+")
_TUPLE_CHARS = "()[]"


def _sympy_parse(expr: str):
    from sympy.parsing import sympy_parser

    py = expr.replace("^", "**")
    return sympy_parser.parse_expr(
        py, transformations=sympy_parser.standard_transformations + (sympy_parser.implicit_multiplication_application,))


def _parse_latex(expr: str) -> str:
    from pylatexenc import latex2text

    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    expr = latex2text.LatexNodes2Text().latex_to_text(expr)
    for a, b in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        expr = expr.replace(a, b)
    return expr.strip()


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _is_int(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):
        return False


def _is_frac(s: str) -> bool:
    return bool(re.search(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$", s))


def _str_is_int(s: str) -> bool:
    try:
        s = _strip_properly_formatted_commas(s)
        x = float(s)
        return abs(x - int(round(x))) <= 1e-7
    except (ValueError, OverflowError):
        return False


def _str_to_int(s: str) -> int:
    return int(float(s.replace(",", "")))


def _inject_implicit_mixed_number(s: str) -> str:
    return re.compile(r"([0-9]) +([0-9])").sub("\\1+\\2", s)


def _strip_properly_formatted_commas(expr: str) -> str:
    p = re.compile(r"(\d)(,)(\d\d\d)($|\D)")
    while True:
        nxt = p.sub("\\1\\3\\4", expr)
        if nxt == expr:
            return nxt
        expr = nxt


def _normalize(expr: str | None) -> str | None:
    if expr is None:
        return None
    m = re.search(r"^\\text\{(?P<text>.+?)\}$", expr)
    if m is not None:
        expr = m.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for unit in _UNITS:
        expr = re.sub(f"{unit}(es)?(s)? *(\\^[0-9]+)?", "", expr)
    expr = re.sub(r"\^ *\\circ", "", expr)
    if len(expr) > 0 and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = re.sub(",\\\\! *", "", expr)
    if _is_float(expr) and _is_int(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        try:
            expr = _parse_latex(expr)
        except Exception:  # noqa: BLE001 - the original keeps the text when rendering fails
            pass
    expr = re.sub("- *", "-", expr)
    expr = _inject_implicit_mixed_number(expr)
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _str_is_int(expr):
        expr = str(_str_to_int(expr))
    return expr


def _count_unknown_letters(expr: str) -> int:
    expr = expr.replace("sqrt", "").replace("frac", "")
    return len({c for c in expr if c.isalpha()})


def _should_allow_eval(expr: str) -> bool:
    if _count_unknown_letters(expr) > 2:
        return False
    if any(b in expr for b in _BAD_SUBSTRINGS):
        return False
    return not any(re.search(r, expr) is not None for r in _BAD_REGEXES)


def _equal_under_sympy(gt: str, given: str) -> bool:
    try:
        expr = f"({gt})-({given})"
        if _should_allow_eval(expr):
            import sympy

            if sympy.simplify(_sympy_parse(expr)) == 0:
                return True
    except Exception:  # noqa: BLE001 - unparsable: not equal, as the original
        pass
    return False


def _split_tuple(expr: str) -> list[str]:
    expr = _strip_properly_formatted_commas(expr)
    if not expr:
        return []
    if (len(expr) > 2 and expr[0] in _TUPLE_CHARS and expr[-1] in _TUPLE_CHARS
            and all(ch not in expr[1:-1] for ch in _TUPLE_CHARS)):
        return [e.strip() for e in expr[1:-1].split(",")]
    return [expr]


def grade_answer(given_answer: str | None, ground_truth: str) -> bool:
    if given_answer is None:
        return False
    if normalize_answer(ground_truth) == normalize_answer(given_answer):
        return True
    gt, given = _normalize(ground_truth), _normalize(given_answer)
    if gt is None:
        return False
    if gt == given:
        return True
    if not given:
        return False
    gt_elems, given_elems = _split_tuple(gt), _split_tuple(given)
    if len(gt_elems) > 1 and (gt[0] != given[0] or gt[-1] != given[-1]):
        return False
    if len(gt_elems) != len(given_elems):
        return False
    ok = False
    for g, a in zip(gt_elems, given_elems):
        if _is_frac(g) and _is_frac(a):
            ok = g == a  # an unreduced fraction must be written as the ground truth writes it
        elif _str_is_int(g) != _str_is_int(a):
            ok = False
        else:
            ok = _equal_under_sympy(g, a)
        if not ok:
            break
    return ok
