"""Llama-2-70B and the LLM pieces it shares with Mixtral (language/llm.py, language/frames.py):
the K-device split, payload trimming, pickles only from the kit's data dir, batched greedy ==
batch 1. The end-to-end runs (1 and 3 partitions, PASS, index shift) are the contract test's."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit.errors import KitError


N = 8  # conftest.SYNTH_N: the set the contract test uses too


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("llama2", N)


def test_reference_settings():
    from language.llama2.benchmark import BENCHMARK as b, GEN_DEFAULTS

    assert GEN_DEFAULTS == {"max_new_tokens": 1024, "min_new_tokens": 1}
    assert b.payload_dtype == "int32" and b.token_payload and b.multi_device
    assert b.dataset_size == 24576 and b.mlperf_name == "llama2-70b"


def test_layer_split_is_even_and_contiguous():
    from language.llm import layer_device_map, split_devices

    dm = layer_device_map(80, split_devices("cuda:0,cuda:1,cuda:2,cuda:3"))
    per = [sum(dm[f"model.layers.{i}"] == f"cuda:{d}" for i in range(80)) for d in range(4)]
    assert per == [20, 20, 20, 20]
    assert [dm[f"model.layers.{i}"] for i in (0, 19, 20, 79)] == ["cuda:0", "cuda:0", "cuda:1", "cuda:3"]
    assert dm["model.embed_tokens"] == "cuda:0" and dm["lm_head"] == dm["model.norm"] == "cuda:3"
    assert set(layer_device_map(2, ["cpu", "cpu"]).values()) == {"cpu"}
    with pytest.raises(KitError):
        split_devices("cuda:0,,cuda:1")


def test_trimming_rules():
    from language.llm import cut_after_eos, strip_trailing

    row = np.array([5, 6, 2, 2, 2])
    assert cut_after_eos(row, 2).tolist() == [5, 6, 2]           # llama2: EOS kept, padding gone
    assert cut_after_eos(np.array([5, 6]), 2).tolist() == [5, 6]
    assert strip_trailing(np.array([5, 0, 6, 2, 0, 2]), (2, 0)).tolist() == [5, 0, 6]
    assert strip_trailing(np.array([2, 2]), (2, 0)).tolist() == []


def test_pickle_only_from_the_kit_data_dir(synth, tmp_path, monkeypatch):
    from language import frames
    from language.llama2.benchmark import PICKLE

    pq = synth / "dataset" / (Path(PICKLE).stem + ".parquet")
    only_pickle = tmp_path / "pkl"
    only_pickle.mkdir()
    shutil.copy(synth / "dataset" / PICKLE, only_pickle / PICKLE)
    with pytest.raises(KitError, match="pickles run code") as e:
        frames.open_table(only_pickle, PICKLE, ("tok_input",))
    assert "\n" not in str(e.value)
    a = frames.open_table(synth / "dataset", PICKLE, ("tok_input", "output"))  # parquet copy
    assert frames.table_file(synth / "dataset", PICKLE) == pq
    monkeypatch.setattr(frames, "TRUSTED_ROOT", tmp_path)            # now inside "the data dir"
    assert frames.table_file(only_pickle, PICKLE).suffix == ".pkl"
    b = frames.open_table(only_pickle, PICKLE, ("tok_input", "output"))
    assert a["output"].tolist() == b["output"].tolist()
    assert [list(x) for x in a["tok_input"]] == [list(x) for x in b["tok_input"]]
    with pytest.raises(KitError, match="lacks column"):
        frames.open_table(only_pickle, PICKLE, ("tok_input", "gt_output"))


def test_batched_equals_batch_one_on_two_devices_and_kit_generator(synth):
    import torch

    from language.llama2.benchmark import BENCHMARK as b

    torch.set_num_threads(1)
    ds = b.open_dataset(synth / "dataset")
    g = b.load_model(synth / "model", "cpu,cpu", "fp32", {})   # K=2: the split code path on CPU
    assert g.devices == ["cpu", "cpu"]
    prompts = [ds.load(i) for i in range(N)]
    assert len({len(p.ids) for p in prompts}) > 1                 # left padding is exercised
    batched = b.postprocess(b.forward(g, prompts), N)
    for i, p in enumerate(prompts):
        assert np.array_equal(b.postprocess(b.forward(g, [p]), 1)[0], batched[i]), i
    assert all(x.dtype == np.int32 for x in batched)
    assert sum(x[-1] == g.tok.eos_token_id for x in batched) >= 1  # some answers end with EOS, kept once
    assert all((x == g.tok.eos_token_id).sum() <= 1 for x in batched)
    g.settings["generator"] = "kit"  # language/generate.py: the same tokens
    kit = b.postprocess(b.forward(g, prompts), N)
    assert all(np.array_equal(x, y) for x, y in zip(kit, batched))
