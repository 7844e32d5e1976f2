"""The RNN-T alphabet, transcript normalisation and word error rate as the reference has them.

Labels (accuracy_eval.py): space, a..z, apostrophe; the model adds a blank (index 28).
Transcripts are normalised as parts/manifest.py does: lower case, punctuation (except the
labels' own, '+' and '&') to spaces, whitespace collapsed, characters outside the labels
dropped. The reference's english_cleaners also spell out numbers and abbreviations;
LibriSpeech transcripts hold neither (upper-case words and apostrophes only), so that step
is left out and a digit is simply dropped.
WER = word-level Levenshtein distances summed over utterances / reference words summed
(pytorch/metrics.py word_error_rate).
"""
from __future__ import annotations

import re
import string
import unicodedata

LABELS = [" "] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]
BLANK = len(LABELS)  # 28
_LABEL_SET = set(LABELS)
_PUNCT = "".join(c for c in string.punctuation if c not in "+&" and c not in _LABEL_SET)
_TABLE = str.maketrans(_PUNCT, " " * len(_PUNCT))


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"\s+", " ", text.lower().translate(_TABLE)).strip()
    return "".join(c for c in text if c in _LABEL_SET)


def to_indices(text: str) -> list[int]:
    return [LABELS.index(c) for c in text]


def to_text(indices) -> str:
    return "".join(LABELS[int(i)] for i in indices)


def _levenshtein(a: list[str], b: list[str]) -> int:
    if len(a) > len(b):
        a, b = b, a
    row = list(range(len(a) + 1))
    for i, wb in enumerate(b, 1):
        prev, row = row, [i] + [0] * len(a)
        for j, wa in enumerate(a, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (wa != wb))
    return row[-1]


def word_errors(hypothesis: str, reference: str) -> tuple[int, int]:
    """(edit distance in words, reference words)."""
    ref = reference.split()
    return _levenshtein(hypothesis.split(), ref), len(ref)


def wer(hypotheses: list[str], references: list[str]) -> float:
    errors = words = 0
    for h, r in zip(hypotheses, references, strict=True):
        e, w = word_errors(h, r)
        errors += e
        words += w
    return errors / words if words else float("inf")
