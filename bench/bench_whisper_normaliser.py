"""Whisper's English text normaliser: transformers' implementation (what the kit uses) against
openai-whisper's own (what the reference's accuracy_eval.py imports), on random strings of the
words the normaliser has rules for. Prints how many of them differ.

    pip install --target /tmp/ow --no-deps openai-whisper==20250625 more-itertools
    PYTHONPATH=/tmp/ow python bench/bench_whisper_normaliser.py [N]

Measured (transformers 5.23.0, openai-whisper 20250625): 20000 strings, 0 differ.
"""
from __future__ import annotations

import importlib.util
import json
import random
import sys
import types
from pathlib import Path

WORDS = ["i", "won't", "can't", "it's", "twenty", "five", "one", "hundred", "and", "three", "thousand", "nineteen",
         "eighties", "first", "second", "percent", "dollars", "cents", "point", "colour", "favourite", "mr", "mrs",
         "dr", "st", "uh", "um", "hmm", "the", "a", "of", "o'clock", "twelve", "sixty", "zero", "oh", "double",
         "half", "quarter", "million", "billion", "1", "2", "10", "1990", "5%", "$3", "-", "+", "well-known",
         "rock'n'roll", "there's", "they'd", "we'll", "you're", "ain't", "let's", "y'all", "'em", "eleventh",
         "twentieth", "ones", "sevens"]


def main(n: int = 20000) -> int:
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        print("openai-whisper is not importable; install it as the docstring says", file=sys.stderr)
        return 2
    root = Path(list(spec.submodule_search_locations)[0])
    pkg = types.ModuleType("whisper")  # its normalizers only: the package's __init__ needs numba, tiktoken
    pkg.__path__ = [str(root)]
    sys.modules["whisper"] = pkg
    from whisper.normalizers.english import EnglishTextNormalizer as Reference

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer as Kit

    ref, kit = Reference(), Kit(json.loads((root / "normalizers" / "english.json").read_text()))
    rng = random.Random(0)
    differ = []
    for _ in range(n):
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        if ref(s) != kit(s):
            differ.append((s, ref(s), kit(s)))
    print(f"{'strings':>10} {'differ':>8}\n{n:>10} {len(differ):>8}")
    for s, a, b in differ[:10]:
        print(f"  {s!r}: reference {a!r}, kit {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
