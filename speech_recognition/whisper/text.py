"""Whisper's accuracy arithmetic as the reference's speech2text/accuracy_eval.py has it.

Payloads and references are strings over the reference's 42 labels (space, a-z, apostrophe, 0-9,
$ % + -): the SUT lowercases and strips the decoded text and keeps the characters that are labels;
a manifest transcript keeps its characters that are labels (manifest.py parse_transcript: others,
upper case included, are dropped; the published transcripts are lower case).
Both sides then go through Whisper's English text normaliser (whisper.normalizers.EnglishTextNormalizer
in the reference; here transformers' implementation of the same rules, with the checkpoint's
normalizer.json as its British->American spelling map) and are split on whitespace.
Per utterance the reference aligns the words greedily, taking up to 3 words of one side that
concatenate to one word of the other as a match ("wellknown" = "well known"), and counts the word
Levenshtein distance of the aligned lists (helpers.py compute_wer_with_concatenation); WER = the
distances summed / the reference words summed; accuracy = (1 - WER) x 100.
"""
from __future__ import annotations

import json
from pathlib import Path

from evalkit.errors import KitError

LABELS = [" "] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"] + [str(d) for d in range(10)] + \
    ["$", "%", "+", "-"]
_INDEX = {c: i for i, c in enumerate(LABELS)}
NORMALIZER_FILE = "normalizer.json"
MAX_CONCAT = 3  # words of one side joined to match one word of the other


def to_indices(text: str) -> list[int]:
    """A transcript's label indices: the characters that are labels, in order (others dropped)."""
    return [_INDEX[c] for c in text if c in _INDEX]


def to_text(indices) -> str:
    return "".join(LABELS[int(i)] for i in indices)


def hypothesis_indices(decoded: str) -> list[int]:
    """The SUT's payload from the decoded text: lower case, stripped, label characters only."""
    return to_indices(decoded.lower().strip())


def normalizer(model_path: Path):
    """Whisper's English text normaliser with the checkpoint's spelling map; KitError naming
    normalizer.json when it is missing or not a JSON object of strings."""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    f = Path(model_path) / NORMALIZER_FILE
    try:
        mapping = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{f} not found; the Whisper checkpoint dir must hold it (the English spelling map of "
                       f"Whisper's text normaliser, which the reference's WER applies).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"cannot read {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                       f"re-download it.") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise KitError(f"{f} is not a JSON object of word -> word; re-download it.")
    return EnglishTextNormalizer(mapping)


def align(hyp: list[str], ref: list[str]) -> tuple[list[str], list[str]]:
    """The reference's greedy alignment: equal words pair up; otherwise the first k = 1..3 for which
    k reference words concatenate to the hypothesis word (checked first) or k hypothesis words to
    the reference word pairs those groups; otherwise the two words pair as a substitution. Words
    left over on either side stay unpaired. Returns the two sides' aligned lists, each group
    written without spaces."""
    r_out: list[str] = []
    h_out: list[str] = []
    i = j = 0
    while i < len(ref) and j < len(hyp):
        nr = nh = 1
        if ref[i] != hyp[j]:
            for k in range(1, MAX_CONCAT + 1):
                if i + k <= len(ref) and "".join(ref[i:i + k]) == hyp[j]:
                    nr = k
                    break
                if j + k <= len(hyp) and "".join(hyp[j:j + k]) == ref[i]:
                    nh = k
                    break
        r_out.append("".join(ref[i:i + nr]))
        h_out.append("".join(hyp[j:j + nh]))
        i += nr
        j += nh
    return h_out + hyp[j:], r_out + ref[i:]


def errors_total(utterances) -> tuple[int, int]:
    """(word edit distances of the aligned lists summed, reference words summed) over
    (hypothesis words, reference words) pairs: the numerator and denominator of the reference's WER.
    The distances come from the kit's word edit distance (speech_recognition/rnnt/text.py, jiwer)
    in one batch; an utterance whose reference is empty counts its hypothesis words (jiwer takes
    no empty reference)."""
    from speech_recognition.rnnt.text import word_errors_total

    hyps, refs, empty, words = [], [], 0, 0
    for hyp_words, ref_words in utterances:
        h, r = align(list(hyp_words), list(ref_words))
        words += len(ref_words)
        if r:
            hyps.append(" ".join(h))
            refs.append(" ".join(r))
        else:
            empty += len(h)
    return word_errors_total(hyps, refs)[0] + empty, words


def utterance_errors(hyp_words: list[str], ref_words: list[str]) -> tuple[int, int]:
    """(word edit distance of the aligned lists, reference words) for one utterance."""
    return errors_total([(hyp_words, ref_words)])
