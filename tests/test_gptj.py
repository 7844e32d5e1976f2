"""GPT-J end to end with real LoadGen on a synthetic CNN/DM set (tiny GPTJForCausalLM, BPE trained
here): partitions merge to the single run, batched == batch-1 tokens, index shift fails."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


from conftest import evalkit

MERGED = "merged_mlperf_log_accuracy.json"
N = 8  # conftest.SYNTH_N: the set the contract test uses too


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("gpt-j", N)


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


