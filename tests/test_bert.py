"""BERT end to end with real LoadGen on a synthetic SQuAD set: partitions merge to the single
run, the index shift fails, unit checks of the SQuAD metric and the payload contract."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit import targets
from evalkit.accuracy_log import Writer, iter_entries

from conftest import evalkit, one_line_error

MERGED = "merged_mlperf_log_accuracy.json"
N = 12


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bert_synth")
    evalkit("synth", "bert", "--out", out, "--n", N, "--seed", 0, check=True)
    return out


def run(synth, log, *extra):
    return evalkit("run", "bert", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--batch_size", 4, "--threads", 1, *extra)


def test_partitions_merge_to_single_run_and_shift_fails(synth, tmp_path):
    one = run(synth, tmp_path / "p1")
    assert one.returncode == 0 and "RESULT: PASS" in one.stdout, one.stderr
    three = run(synth, tmp_path / "p3", "--n_devices", 2, "--n_partitions", 3, "--partition_offset", 0)
    assert three.returncode == 0, three.stderr
    three = run(synth, tmp_path / "p3", "--n_devices", 1, "--n_partitions", 3, "--partition_offset", 2)
    assert three.returncode == 0 and "RESULT: PASS" in three.stdout, three.stderr
    a = sorted((e["qsl_idx"], e["data"]) for e in iter_entries(tmp_path / "p1" / MERGED))
    b = sorted((e["qsl_idx"], e["data"]) for e in iter_entries(tmp_path / "p3" / MERGED))
    assert len(a) == N and [x[0] for x in a] == [x[0] for x in b]
    for (_, x), (_, y) in zip(a, b):  # batching may move logits by an ulp; the answers may not
        assert np.allclose(np.frombuffer(bytes.fromhex(x), np.float32), np.frombuffer(bytes.fromhex(y), np.float32), atol=1e-4)
    text = (tmp_path / "p3" / "accuracy.txt").read_text()
    assert targets.parse_accuracy_txt(text, "F1") == [100.0]
    shifted = tmp_path / "shifted"
    shutil.copytree(tmp_path / "p1", shifted)
    es = sorted(iter_entries(shifted / MERGED), key=lambda e: e["qsl_idx"])
    with open(shifted / MERGED, "w") as f:
        w = Writer(f)
        for e in es:
            w.write({"seq_id": e["seq_id"], "qsl_idx": (e["qsl_idx"] + 1) % N, "data": e["data"]})
        w.close()
    cp = evalkit("check", shifted)
    assert cp.returncode == 1
    assert json.loads((shifted / "accuracy.json").read_text())["metrics"]["F1"] < 50.0


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
