"""Answer extraction of the DeepSeek-R1 reference (language/deepseek-r1/eval_accuracy.py) where
it is its own; the rules it shares with gpt-oss-120b (dataset keys, AIME, MATH500, the verdicts)
are language/reasoning/answers.py. Facts of that script, written here (not copied):

* gpqa: the last "ANSWER"/"FINAL ANSWER" [:=] letter A-D (optionally in parentheses, followed by
  the end or a non-letter), case-insensitive.
* mmlu_pro: the same with A-J, and when no such phrase: the last standalone letter A-J.
* livecodebench: the first ```python ... ``` block, stripped; run against the problem's tests
  (language/reasoning/livecodebench.py, in the sandbox).
The text is the decoded output (skip_special_tokens) stripped; an artifact ['...'] wrapper is
removed and literal "\\n" / "\\'" unescaped before the multiple-choice search. Keys in order:
gpqa, mmlu_pro, math500, aime, livecodebench."""
from __future__ import annotations

import re

from language.reasoning.answers import answer_phrase_letter, clean as _clean, correct, kind_of as _kind_of, parse_aime, parse_boxed

KINDS = ("gpqa", "mmlu_pro", "math500", "aime", "livecodebench")
__all__ = ["KINDS", "kind_of", "parse", "correct", "parse_multiple_choice", "parse_code"]


def kind_of(dataset: str, where: str) -> str:
    return _kind_of(dataset, where, KINDS)


def parse_multiple_choice(text: str, last: str) -> str | None:
    text = _clean(text)
    if not text:
        return None
    if text.startswith(("['", '["')) and text.endswith(("']", '"]')):
        text = text[2:-2].strip()
    text = text.replace(r"\n", "\n").replace(r"\'", "'")
    said = answer_phrase_letter(text, last)
    if said:
        return said
    if last == "J":
        alone = list(re.finditer(r"\b([A-J])\b", text, re.IGNORECASE))
        if alone:
            return alone[-1].group(1).upper()
    return None


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
