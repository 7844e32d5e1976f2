"""BERT specifics (the shared end-to-end suite is tests/test_contract.py): dataset errors,
the SQuAD metric units, the payload contract."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


from conftest import evalkit, one_line_error

MERGED = "merged_mlperf_log_accuracy.json"
N = 8  # conftest.SYNTH_N: the set the contract test uses too


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("bert", N)


def run(synth, log, *extra):
    return evalkit("run", "bert", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--batch_size", 4, "--threads", 1, *extra)


def test_the_synthetic_set_is_the_same_in_every_process(synth, tmp_path):
    """The seed fixes the set: a second process writes the same bytes as the shared one. (The
    vocabulary used to come from tokenizers' WordPieceTrainer, whose ties fall in hash-map order:
    vocab.txt differed every process and, now and then, the questions kept did too.)"""
    evalkit("synth", "bert", "--n", N, "--out", tmp_path / "again", check=True)
    for sub in ("dataset/dev-v1.1.json", "model/vocab.txt", "model/model.safetensors"):
        assert (tmp_path / "again" / sub).read_bytes() == (synth / sub).read_bytes(), sub


def test_bad_dataset_version_is_one_line_error(synth, tmp_path):
    ds = tmp_path / "dataset"
    shutil.copytree(synth / "dataset", ds)
    shutil.copytree(synth / "model", tmp_path / "model")
    d = json.loads((ds / "dev-v1.1.json").read_text())
    d["version"] = "2.0"
    (ds / "dev-v1.1.json").write_text(json.dumps(d))
    err = one_line_error(evalkit("run", "bert", "--dataset", ds, "--model_path", synth / "model",
                                 "--log_path", tmp_path / "r"))
    assert "dev-v1.1.json" in err and "1.1" in err


def test_squad_metric_units():
    from language.bert import squad

    assert squad.normalize_answer("The  Cat, sat!") == "cat sat"
    assert squad.f1_score("a big cat", "the cat") == pytest.approx(2 * 0.5 * 1 / 1.5)
    ex = [squad.Example("q1", "?", [], ["Paris"]), squad.Example("q2", "?", [], ["x"])]
    r = squad.squad_v11(ex, {"q1": "paris."})
    assert r == {"exact_match": 50.0, "f1": 50.0}  # unanswered q2 scores 0
    assert squad.final_text("john smith", "John Smith's") == "John Smith"
