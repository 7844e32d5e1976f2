"""Synthetic English-looking text for the language models' synthetic sets (seeded, no downloads).

Pseudo-words from syllables, sentences with capitals and full stops, so that
tokenizers trained on it, sentence splitting and ROUGE behave as on news text.
"""
from __future__ import annotations

import numpy as np

_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "oo", "ou"]
_CODAS = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck"]


def lexicon(rng: np.random.Generator, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        n_syl = int(rng.integers(1, 4))
        words.add("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syl)))
    return sorted(words)


def sentence(rng: np.random.Generator, words: list[str], lo: int = 5, hi: int = 14) -> str:
    ws = [words[int(i)] for i in rng.integers(0, len(words), int(rng.integers(lo, hi + 1)))]
    if rng.random() < 0.3:
        ws[int(rng.integers(0, len(ws)))] = str(int(rng.integers(2, 2000)))
    s = " ".join(ws)
    return s[0].upper() + s[1:] + "."


def paragraph(rng: np.random.Generator, words: list[str], n_sentences: int) -> str:
    return " ".join(sentence(rng, words) for _ in range(n_sentences))
