"""Whisper (speech_recognition/whisper): the reference speech2text's settings, layout, payload and
WER rules (Whisper's English normaliser, the concatenation-aware alignment), the cached greedy loop,
and accuracy.txt read by the v6.1 checker's pattern. The end-to-end runs (1 and 3 partitions,
PASS, index shift, bad payloads) are the contract tests'."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SYNTH_N
from evalkit.errors import KitError

# The v6.1 checker's ACC_PATTERN["ACCURACY"] and whisper's accuracy-target (constants.py), as facts.
CHECKER_PATTERN = r"Word Error Rate\:.*, accuracy=([0-9\.]+)%"
CHECKER_BOUND = (100.0 - 2.0671) * 0.99


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("whisper", SYNTH_N)  # the set the contract test uses too


def test_reference_settings():
    from speech_recognition.whisper import text
    from speech_recognition.whisper.benchmark import BENCHMARK as b, GEN_DEFAULTS, MAX_DURATION, PROMPT

    assert GEN_DEFAULTS == {"max_new_tokens": 200} and MAX_DURATION == 30.0  # reference_SUT.py, QSL.py
    assert PROMPT == ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
    assert b.payload_dtype == "int64" and b.dataset_size == 1633 and b.checker_names == {"99": "whisper"}
    assert "".join(text.LABELS) == " abcdefghijklmnopqrstuvwxyz'0123456789$%+-"  # accuracy_eval.py labels


def test_accuracy_txt_parses_with_the_checker_pattern():
    from evalkit import targets
    from speech_recognition.whisper.benchmark import BENCHMARK as b

    (line,) = b.accuracy_lines({"wer": 2.0671, "ACCURACY": 97.9329})
    assert line == "Word Error Rate: 2.0671%, accuracy=97.9329%"  # accuracy_eval.py's print
    assert float(re.match(CHECKER_PATTERN, line).group(1)) == 97.9329
    (bound,) = targets.get("whisper").bounds
    assert bound.metric == "ACCURACY" and bound.kind == "min" and bound.value == pytest.approx(CHECKER_BOUND, rel=1e-12)


@pytest.mark.parametrize("hyp, ref, want", [
    ("the wellknown man", "the well known man", (0, 4)),   # 2 reference words = 1 hypothesis word
    ("the well known man", "the wellknown man", (0, 3)),   # and the other way round
    ("a bcd e", "a b c d e", (0, 5)),                      # up to 3 words
    ("abcd", "a b c d", (4, 4)),                           # not 4: a substitution, 3 deletions
    ("a x c", "a b c", (1, 3)),
    ("a b c d", "a b", (2, 2)),                            # words left over are insertions
    ("", "a b", (2, 2)),
    ("a b", "", (2, 0)),                                   # no reference word: the hypothesis words count
])
def test_concatenation_aware_alignment(hyp, ref, want):
    from speech_recognition.whisper.text import utterance_errors

    assert utterance_errors(hyp.split(), ref.split()) == want


def test_english_normaliser_rules(synth, tmp_path):
    from speech_recognition.whisper import text

    norm = text.normalizer(synth / "model")
    cases = {"i won't go": "i will not go", "twenty five dollars": "$25", "uh hmm it is 5 percent": "it is 5%",
             "one hundred and twenty three": "123", "the nineteen eighties": "the 1980s",
             "my favourite colour": "my favorite color",  # the checkpoint's normalizer.json spelling map
             "the well-known man": "the well known man"}
    assert {k: norm(k) for k in cases} == cases
    shutil.copytree(synth / "model", tmp_path / "m")
    (tmp_path / "m" / "normalizer.json").unlink()
    with pytest.raises(KitError, match=r"m/normalizer.json not found"):
        text.normalizer(tmp_path / "m")


def test_payload_and_reference_characters():
    from speech_recognition.whisper import text

    # the SUT: lower case, strip, label characters only
    assert text.to_text(text.hypothesis_indices("  Hello, World! It's 42% + 3-4.\n")) == "hello world it's 42% + 3-4"
    # a transcript keeps its label characters; others (upper case included) are dropped, as parse_transcript does
    assert text.to_text(text.to_indices("HELLO world, ok")) == " world ok"


def test_manifest_layout(synth, tmp_path):
    from speech_recognition.whisper.benchmark import BENCHMARK as b, MANIFEST, read_manifest

    entries = json.loads((synth / "dataset" / MANIFEST).read_text())
    assert all(e["files"][0]["fname"].startswith("/data/dev-all-repack/") for e in entries)  # as published
    clips = read_manifest(synth / "dataset")
    assert [c["wav"] for c in clips] == [synth / "dataset" / "dev-all-repack" / Path(e["files"][0]["fname"]).name
                                         for e in entries]
    ds = tmp_path / "ds"
    shutil.copytree(synth / "dataset", ds)
    long = dict(entries[0], original_duration=30.5)
    (ds / MANIFEST).write_text(json.dumps([long] + entries))
    assert len(read_manifest(ds)) == len(entries)  # over 30 s: dropped, as manifest.py's max_duration
    bad = json.loads(json.dumps(entries))
    bad[2]["files"][0]["fname"] = "dev-all-repack/../../etc/passwd"
    (ds / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(KitError, match=r"dev-all-repack.json entry 2: file .* not a path inside the dataset dir"):
        b.open_dataset(ds, synth / "model")


def test_greedy_loop_is_plain_argmax_decoding(synth):
    """The cached loop = argmax of the full decoder recomputed from the prompt at every step (no
    logits processor, no suppressed token), stopped at the first stop id."""
    import torch

    from speech_recognition.whisper.benchmark import BENCHMARK as b

    t = b.load_model(synth / "model", "cpu", "fp32", {})
    ds = b.open_dataset(synth / "dataset", synth / "model")
    entries = json.loads((synth / "dataset" / "dev-all-repack.json").read_text())
    short = sorted(range(len(entries)), key=lambda i: len(entries[i]["transcript"]))[:2]  # recomputing is O(n^2)
    feats = b.make_batch([ds.load(i) for i in short], "cpu", "fp32", {})
    got = t.greedy(feats)
    with torch.inference_mode():
        enc = t.model.get_encoder()(input_features=feats)
        for r in range(2):
            ids = list(t.prompt)
            while len(ids) - len(t.prompt) < t.max_new_tokens:
                logits = t.model(encoder_outputs=(enc.last_hidden_state[r:r + 1],),
                                 decoder_input_ids=torch.tensor([ids])).logits[0, -1]
                ids.append(int(logits.argmax()))
                if ids[-1] in t.eos:
                    break
            assert got[r] == ids[len(t.prompt):]


def test_score_applies_the_reference_rules(synth):
    """A hypothesis that writes two reference words as one still scores 100 (the alignment's
    concatenation rule), and an upper-case payload is impossible (the labels are lower case)."""
    from speech_recognition.whisper import text
    from speech_recognition.whisper.benchmark import BENCHMARK as b, MANIFEST

    entries = json.loads((synth / "dataset" / MANIFEST).read_text())
    pairs = [(i, np.asarray(text.to_indices(e["transcript"]), dtype=np.int64)) for i, e in enumerate(entries)]
    assert b.score(pairs, synth / "dataset", len(pairs))["ACCURACY"] == 100.0
    k = next(i for i, e in enumerate(entries) if len(e["transcript"].split()) >= 3)
    words = entries[k]["transcript"].split()
    glued = " ".join([words[0] + words[1]] + words[2:])
    pairs[k] = (k, np.asarray(text.to_indices(glued), dtype=np.int64))
    m = b.score(pairs, synth / "dataset", len(pairs))
    assert m["ACCURACY"] == 100.0 and m["errors"] == 0
    pairs[k] = (k, np.asarray(text.to_indices(" ".join(words[1:])), dtype=np.int64))  # a word dropped
    assert b.score(pairs, synth / "dataset", len(pairs))["errors"] == 1
    with pytest.raises(KitError, match="qsl_idx 0: the payload holds"):
        b.score([(0, np.array([5, 42]))], synth / "dataset", 1)
