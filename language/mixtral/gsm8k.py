"""GSM8K answer extraction and scoring, by the rules of the Mixtral reference
(`language/mixtral-8x7b/evaluate-accuracy.py`): the text before the first "\\nQ:", the first
number after the last "The answer is" when there is one, else the last number; thousands
commas removed; compared as floats with `gt_output` (an unparsable answer is wrong)."""
from __future__ import annotations

import re

# A number: optional minus, digits with thousands commas, optional decimals (reference regex).
_NUMBER = re.compile(r"-?[\d,]*\.?\d+", re.MULTILINE | re.DOTALL | re.IGNORECASE)
DELIMITER = "The answer is"


def find_numbers(text: str) -> list[str]:
    return _NUMBER.findall(text)


def find_number(text: str, delimiter: str = DELIMITER) -> str:
    if delimiter in text:
        found = find_numbers(text.split(delimiter)[-1])
        if found:
            return found[0]
    found = find_numbers(text)
    return found[-1] if found else ""


def to_float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def extract(prediction: str) -> str:
    """The answer string the reference compares: first turn only, commas removed."""
    return find_number(prediction.split("\nQ:")[0]).replace(",", "")


def correct(prediction: str, gt_output) -> bool:
    got = to_float(extract(prediction))
    return got is not None and got == to_float(gt_output)
