"""The RNN-T alphabet, transcript normalisation and word error rate as the reference has them.

Labels (accuracy_eval.py): space, a..z, apostrophe; the model adds a blank (index 28).
Transcripts are normalised as parts/manifest.py does: lower case, punctuation (except the
labels' own, '+' and '&') to spaces, whitespace collapsed, characters outside the labels
dropped. The reference's english_cleaners also spell out numbers and abbreviations;
LibriSpeech transcripts hold neither (upper-case words and apostrophes only), so that step
is left out and a digit is simply dropped.
WER = word-level Levenshtein distances summed over utterances / reference words summed
(pytorch/metrics.py word_error_rate); the edit distances come from jiwer (rapidfuzz),
about 6x faster than the reference's Python table at 2,513 utterances, the same counts.
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


def word_errors_total(hypotheses: list[str], references: list[str]) -> tuple[int, int]:
    """(word-level edit distances summed over utterances, reference words summed): the numerator
    and denominator of the reference's word_error_rate. jiwer (rapidfuzz's Levenshtein on word
    lists) does the alignments; an edit distance is unique, so the counts are the reference's."""
    import jiwer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses vs {len(references)} references")
    if not references:
        return 0, 0
    # the reference splits on any whitespace; jiwer on single spaces after stripping
    hyp = [" ".join(h.split()) for h in hypotheses]
    ref = [" ".join(r.split()) for r in references]
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions


def word_errors(hypothesis: str, reference: str) -> tuple[int, int]:
    """(edit distance in words, reference words) of one utterance."""
    return word_errors_total([hypothesis], [reference])


def wer(hypotheses: list[str], references: list[str]) -> float:
    errors, words = word_errors_total(list(hypotheses), list(references))
    return errors / words if words else float("inf")
