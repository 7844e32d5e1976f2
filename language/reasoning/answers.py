"""Answer rules the DeepSeek-R1 and gpt-oss-120b evaluation scripts (language/deepseek-r1 and
language/gpt-oss-120b eval_accuracy.py) apply alike; facts of those scripts, written here:

* a row's dataset picks the first rule whose key is a substring of its lowercased name, in the
  model's order of keys; none: an error naming the row.
* math500: the content of the last \\boxed{...} (braces balanced); graded by PRM800K's
  grade_answer (math_grader.py).
* aime: the last \\boxed{digits}, else the last "Answer: digits" (not followed by "."), over the
  whole text; 0-999; correct when it equals int(ground truth).
* multiple choice (gpqa A-D, mmlu_pro / mmlu A-J): correct when the letter is a valid option and
  equals the ground truth, upper-cased.
What differs per model (the multiple-choice and code extraction) lives in its own answers.py."""
from __future__ import annotations

import re
from typing import Sequence

from evalkit.errors import KitError

OPTIONS = {"gpqa": "ABCD", "mmlu_pro": "ABCDEFGHIJ", "mmlu": "ABCDEFGHIJ"}


def kind_of(dataset, where: str, kinds: Sequence[str]) -> str:
    name = str(dataset).lower() if dataset is not None else ""
    if not name:
        raise KitError(f"{where}: empty dataset name")
    for k in kinds:
        if k in name:
            return k
    raise KitError(f"{where}: dataset {dataset!r} has no evaluator in the reference (one of {', '.join(kinds)})")


def clean(text) -> str:
    return "" if text is None else str(text).strip()


def answer_phrase_letter(text: str, last: str) -> str | None:
    """The last "ANSWER"/"FINAL ANSWER" [:=] letter A-<last> (optionally in parentheses, followed by
    the end or a non-letter), case-insensitive; both references' multiple-choice search."""
    pat = rf"\b(?:ANSWER|FINAL\s*ANSWER)\b\s*[:=]?\s*(?:\(?\s*([A-{last}])\s*\)?)(?:\s*$|[^A-Za-z])"
    hits = list(re.finditer(pat, text, re.IGNORECASE))
    return hits[-1].group(1).upper() if hits else None


def parse_boxed(text: str) -> str | None:
    text = clean(text)
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
    text = clean(text)
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


def _missing(gt) -> bool:
    try:
        import pandas as pd

        return gt is None or bool(pd.isna(gt))
    except (TypeError, ValueError):
        return False


def correct(kind: str, extracted, ground_truth) -> bool:
    """The references' verdict for every kind but livecodebench (the caller runs its programs)."""
    if extracted is None or _missing(ground_truth):
        return False
    if kind in OPTIONS:
        gt = str(ground_truth).upper()
        return bool(extracted) and bool(gt) and extracted.upper() in OPTIONS[kind] and extracted.upper() == gt
    if kind == "aime":
        try:
            return int(extracted) == int(ground_truth)
        except (TypeError, ValueError):
            return False
    if kind == "math500":
        from .math_grader import grade_answer

        given = str(extracted).strip()
        return bool(given) and bool(str(ground_truth)) and grade_answer(given, str(ground_truth))
    raise KitError(f"correct(): {kind} answers are programs; run them with language/reasoning/livecodebench.py")


def judge(kinds: Sequence[str], extracted: Sequence, truths: Sequence, dataset_dir) -> list[bool]:
    """Each answer right or wrong by its set's rule: LiveCodeBench programs run against their problem's
    tests in the sandbox (language/reasoning/livecodebench.py, all at once), the rest by `correct`."""
    from pathlib import Path

    from . import livecodebench

    right = [k != "livecodebench" and correct(k, x, t) for k, x, t in zip(kinds, extracted, truths)]
    lcb = [i for i, k in enumerate(kinds) if k == "livecodebench"]
    if lcb:
        passed = livecodebench.evaluate([(extracted[i], str(truths[i])) for i in lcb], Path(dataset_dir))
        for i, ok in zip(lcb, passed):
            right[i] = ok
    return right
