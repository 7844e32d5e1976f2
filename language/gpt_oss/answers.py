"""Answer extraction of the gpt-oss-120b reference (language/gpt-oss-120b/eval_accuracy.py) where
it differs from DeepSeek-R1's; what both share (dataset keys matched as substrings, AIME, MATH500,
the "ANSWER" phrase, the verdicts) is language/reasoning/answers.py. Facts of that script, written
here (not copied):

* The text is the output decoded with skip_special_tokens=False (the harmony markers stay),
  stripped. Its final section: what follows the first `<|channel|>final` (any characters but "<"
  may follow "final") `<|message|>` up to `<|return|>` or the end, stripped; no such section: the
  whole text.
* Multiple choice (gpqa A-D; mmlu_pro, mmlu A-J): in the final section, with **bold** markers
  removed, a ['...'] wrapper removed and literal "\\n" / "\\'" unescaped: (1) a letter at its start
  (after non-letters, followed by a non-letter or the end); (2) else the first "Answer[:.] X";
  (3) else the last ANSWER-phrase letter of the whole (unescaped) text; (4) mmlu: else the last
  standalone letter of the final section.
* aime, math500: the shared rules over the whole text.
* livecodebench: when a final section was found, its last ```python block, else its last ``` block
  (a leading "python"/"py" line removed); otherwise (or when it has none) the same two searches over
  the whole text. Run against the problem's tests in the sandbox (language/reasoning/livecodebench.py).
Keys in order: gpqa, mmlu_pro, math500, aime, livecodebench, mmlu."""
from __future__ import annotations

import re

from language.reasoning.answers import answer_phrase_letter, clean, correct, kind_of as _kind_of, parse_aime, parse_boxed

KINDS = ("gpqa", "mmlu_pro", "math500", "aime", "livecodebench", "mmlu")
LAST_OPTION = {"gpqa": "D", "mmlu_pro": "J", "mmlu": "J"}
__all__ = ["KINDS", "kind_of", "parse", "correct", "final_section"]

_FINAL = re.compile(r"<\|channel\|>final[^<]*<\|message\|>(.*?)(?:<\|return\|>|$)", re.DOTALL)


def kind_of(dataset, where: str) -> str:
    return _kind_of(dataset, where, KINDS)


def final_section(text: str) -> str:
    text = clean(text)
    m = _FINAL.search(text)
    return m.group(1).strip() if m else text


def parse_multiple_choice(text: str, last: str) -> str | None:
    text = clean(text)
    if not text:
        return None
    final = re.sub(r"\*\*([^*]+)\*\*", r"\1", final_section(text))
    if final.startswith(("['", '["')) and final.endswith(("']", '"]')):
        final = final[2:-2].strip()
    final = final.replace(r"\n", "\n").replace(r"\'", "'")
    m = re.match(rf"^[^a-zA-Z]*([A-{last}])(?:[^a-zA-Z]|$)", final.strip(), re.IGNORECASE)
    if m:
        return m.group(1).upper()
    m = re.search(rf"\b(?:Answer|ANSWER)\s*[:.]?\s*([A-{last}])\b", final, re.IGNORECASE)
    if m:
        return m.group(1).upper()
    said = answer_phrase_letter(text.replace(r"\n", "\n").replace(r"\'", "'"), last)
    if said:
        return said
    if last == "J":
        alone = list(re.finditer(rf"\b([A-{last}])\b", final, re.IGNORECASE))
        if alone:
            return alone[-1].group(1).upper()
    return None


def _last_block(text: str) -> str | None:
    py = list(re.finditer(r"```python(.*?)```", text, re.DOTALL))
    if py:
        return py[-1].group(1).strip()
    plain = list(re.finditer(r"```(.*?)```", text, re.DOTALL))
    if plain:
        return re.sub(r"^(?:python|py)\s*\n", "", plain[-1].group(1).strip(), flags=re.IGNORECASE)
    return None


def parse_code(text: str) -> str | None:
    text = clean(text)
    if not text:
        return None
    final = final_section(text)
    if final != text:
        code = _last_block(final)
        if code is not None:
            return code
    return _last_block(text)


def parse(kind: str, text: str):
    if kind in LAST_OPTION:
        return parse_multiple_choice(text, LAST_OPTION[kind])
    if kind == "math500":
        return parse_boxed(text)
    if kind == "aime":
        return parse_aime(text)
    return parse_code(text)
