"""GPT-J end to end with real LoadGen on a synthetic CNN/DM set (tiny GPTJForCausalLM, BPE trained
here): partitions merge to the single run, batched == batch-1 tokens, index shift fails."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit import targets
from evalkit.accuracy_log import Writer, iter_entries

from conftest import evalkit

MERGED = "merged_mlperf_log_accuracy.json"
N = 6


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gptj_synth")
    evalkit("synth", "gpt-j", "--out", out, "--n", N, "--seed", 0, check=True)
    return out


def run(synth, log, *extra):
    return evalkit("run", "gpt-j", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--threads", 1, *extra)


def test_reference_generation_defaults():
    from language.gptj.benchmark import BENCHMARK, GEN_DEFAULTS, MAX_INPUT_TOKENS

    assert GEN_DEFAULTS == {"num_beams": 4, "min_new_tokens": 30, "max_new_tokens": 128, "early_stopping": True}
    assert MAX_INPUT_TOKENS == 1919 and BENCHMARK.payload_dtype == "int64" and BENCHMARK.token_payload


@pytest.mark.parametrize("opts", [{"num_beams": 1, "max_new_tokens": 40}, {}], ids=["greedy", "beam4"])
def test_batched_equals_batch_one(synth, opts):
    import torch

    from language.gptj.benchmark import BENCHMARK as b, CNNDailyMail

    torch.set_num_threads(1)
    ds = CNNDailyMail(synth / "dataset")
    g = b.load_model(synth / "model", "cpu", "fp32", opts)
    prompts = [ds.load(i) for i in range(N)]
    batched = b.postprocess(b.forward(g, prompts), N)
    for i, p in enumerate(prompts):
        assert np.array_equal(b.postprocess(b.forward(g, [p]), 1)[0], batched[i]), i
    assert len(g.tok(prompts[2], truncation=True, max_length=1919)["input_ids"]) == 1919  # truncated sample


def test_partitions_merge_to_single_run_and_shift_fails(synth, tmp_path):
    one = run(synth, tmp_path / "p1", "--batch_size", 1)
    assert one.returncode == 0 and "RESULT: PASS" in one.stdout, one.stderr
    three = run(synth, tmp_path / "p3", "--n_devices", 2, "--n_partitions", 3, "--batch_size", 2)
    assert three.returncode == 0, three.stderr
    three = run(synth, tmp_path / "p3", "--n_partitions", 3, "--partition_offset", 2, "--batch_size", 2)
    assert three.returncode == 0 and "RESULT: PASS" in three.stdout, three.stderr
    a = sorted((e["qsl_idx"], e["data"]) for e in iter_entries(tmp_path / "p1" / MERGED))
    b = sorted((e["qsl_idx"], e["data"]) for e in iter_entries(tmp_path / "p3" / MERGED))
    assert a == b and len(a) == N
    text = (tmp_path / "p3" / "accuracy.txt").read_text()
    assert targets.parse_accuracy_txt(text, "ROUGE1") == [100.0]
    assert targets.parse_accuracy_txt(text, "GEN_LEN")
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
    assert json.loads((shifted / "accuracy.json").read_text())["metrics"]["ROUGE1"] < 50.0
