"""Answer extraction and exact-match rules of the DeepSeek-R1 reference (language/deepseek-r1/
eval_accuracy.py), per dataset; facts of that script, written here (not copied):

* gpqa: the last "ANSWER"/"FINAL ANSWER" [:=] letter A-D (optionally in parentheses, followed by
  the end or a non-letter), case-insensitive; correct when it equals the ground truth letter.
* mmlu_pro: the same with A-J, and when no such phrase: the last standalone letter A-J.
* math500: the content of the last \\boxed{...} (braces balanced); graded by PRM800K's
  grade_answer (language/deepseek_r1/math_grader.py).
* aime: the last \\boxed{digits}, else the last "Answer: digits" (not followed by "."); 0-999;
  correct when it equals int(ground truth).
* livecodebench: the first ```python ... ``` block, stripped; run against the problem's tests
  (language/deepseek_r1/livecodebench.py, in the sandbox).
The text is the decoded output (skip_special_tokens) stripped; an artifact ['...'] wrapper is
removed and literal "\\n" / "\\'" unescaped before the multiple-choice search. A row's dataset
picks the first rule whose key is a substring of its lowercased name (gpqa, mmlu_pro, math500,
aime, livecodebench), as the reference does; none: an error naming the row."""
from __future__ import annotations

import re

from evalkit.errors import KitError

KINDS = ("gpqa", "mmlu_pro", "math500", "aime", "livecodebench")


def kind_of(dataset: str, where: str) -> str:
    name = str(dataset).lower() if dataset is not None else ""
    if not name:
        raise KitError(f"{where}: empty dataset name")
    for k in KINDS:
        if k in name:
            return k
    raise KitError(f"{where}: dataset {dataset!r} has no evaluator in the reference (one of {', '.join(KINDS)})")


def _clean(text) -> str:
    return "" if text is None else str(text).strip()


def parse_multiple_choice(text: str, last: str) -> str | None:
    text = _clean(text)
    if not text:
        return None
    if text.startswith(("['", '["')) and text.endswith(("']", '"]')):
        text = text[2:-2].strip()
    text = text.replace(r"\n", "\n").replace(r"\'", "'")
    pat = rf"\b(?:ANSWER|FINAL\s*ANSWER)\b\s*[:=]?\s*(?:\(?\s*([A-{last}])\s*\)?)(?:\s*$|[^A-Za-z])"
    hits = list(re.finditer(pat, text, re.IGNORECASE))
    if hits:
        return hits[-1].group(1).upper()
    if last == "J":
        alone = list(re.finditer(r"\b([A-J])\b", text, re.IGNORECASE))
        if alone:
            return alone[-1].group(1).upper()
    return None


def parse_boxed(text: str) -> str | None:
    text = _clean(text)
    at = text.rfind("\\boxed{")
    if at < 0:
        return None
    depth, start = 0, at + len("\\boxed{")
    for i in range(start, len(text)):
        c = text[i]
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return text[start:i].strip()
            depth -= 1
    return None


def parse_aime(text: str) -> int | None:
    text = _clean(text)
    if not text:
        return None
    boxed = list(re.finditer(r"\\boxed{\s*(\d+)\s*}", text))
    if boxed:
        digits = boxed[-1].group(1)
    else:
        said = list(re.finditer(r"Answer:\s*(\d+)(?!\.)\b", text, re.IGNORECASE | re.MULTILINE))
        if not said:
            return None
        digits = said[-1].group(1)
    v = int(digits)
    return v if 0 <= v <= 999 else None


def parse_code(text: str) -> str | None:
    m = re.search(r"```python(.*?)```", _clean(text), re.DOTALL)
    return m.group(1).strip() if m else None


def parse(kind: str, text: str):
    if kind == "gpqa":
        return parse_multiple_choice(text, "D")
    if kind == "mmlu_pro":
        return parse_multiple_choice(text, "J")
    if kind == "math500":
        return parse_boxed(text)
    if kind == "aime":
        return parse_aime(text)
    return parse_code(text)


def _missing(gt) -> bool:
    try:
        import pandas as pd

        return gt is None or bool(pd.isna(gt))
    except (TypeError, ValueError):
        return False


def correct(kind: str, extracted, ground_truth) -> bool:
    """The reference's verdict for every kind but livecodebench (the caller runs its programs)."""
    if extracted is None or _missing(ground_truth):
        return False
    if kind in ("gpqa", "mmlu_pro"):
        valid = "ABCD" if kind == "gpqa" else "ABCDEFGHIJ"
        gt = str(ground_truth).upper()
        return bool(extracted) and bool(gt) and extracted.upper() in valid and extracted.upper() == gt
    if kind == "aime":
        try:
            return int(extracted) == int(ground_truth)
        except (TypeError, ValueError):
            return False
    if kind == "math500":
        from .math_grader import grade_answer

        given = str(extracted).strip()
        return bool(given) and bool(str(ground_truth)) and grade_answer(given, str(ground_truth))
    raise KitError(f"correct(): {kind} answers are programs; run them with language/deepseek_r1/livecodebench.py")
