"""Llama-3.1-8B (language/llama3_1_8b): the reference's settings, its published JSON layout (the
datacenter and the edge set), the stop ids vLLM stops at, and accuracy.txt read by the v6.1
checker's patterns. The end-to-end runs (1 and 3 partitions, PASS, index shift, bad payloads) are
the contract tests'."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SYNTH_N, evalkit
from evalkit.errors import KitError

# The v6.1 submission checker's ACC_PATTERN entries for llama3.1-8b's metrics
# (mlcommons/inference tools/submission/submission_checker/constants.py), copied as facts.
CHECKER_PATTERNS = {
    "ROUGE1": r".*'rouge1':\s+'?([\d.]+)'?.*",
    "ROUGE2": r".*'rouge2':\s+'?([\d.]+)'?.*",
    "ROUGEL": r".*'rougeL':\s+'?([\d.]+)'?.*",
    "ROUGELSUM": r".*'rougeLsum':\s+'?([\d.]+)'?.*",
    "GEN_LEN": r".*'gen_len':\s([\d.]+).*",
}
# v6.1 MODEL_CONFIG accuracy-target / accuracy-upper-limit, as the checker writes them
CHECKER_BOUNDS = {
    "llama3.1-8b": {"ROUGE1": 38.7792 * 0.99, "ROUGE2": 15.9075 * 0.99, "ROUGEL": 24.4957 * 0.99,
                    "ROUGELSUM": 35.793 * 0.99, "GEN_LEN": (8167644 * 0.9, 8167644 * 1.1)},
    "llama3.1-8b-edge": {"ROUGE1": 39.06 * 0.99, "ROUGE2": 16.1147 * 0.99, "ROUGEL": 24.6375 * 0.99,
                         "ROUGELSUM": 36.124 * 0.99, "GEN_LEN": (3051113 * 0.9, 3051113 * 1.1)},
}


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("llama3.1-8b", SYNTH_N)  # the set the contract test uses too


def test_reference_settings():
    from language.llama3_1_8b.benchmark import BENCHMARK as b, GEN_DEFAULTS

    assert GEN_DEFAULTS == {"max_new_tokens": 128, "min_new_tokens": 1}  # SUT_VLLM.py max_tokens, min_tokens
    assert b.payload_dtype == "int32" and b.token_payload and b.options["generator"] == "hf"
    assert b.dataset_size == 13368 and b.target_sizes == {"edge": 5000} and b.mlperf_name == "llama3_1-8b"
    assert b.checker_names == {"99": "llama3.1-8b", "edge": "llama3.1-8b-edge"}


def test_targets_are_the_v61_checkers():
    from evalkit import targets

    for name, want in CHECKER_BOUNDS.items():
        got: dict = {}
        for bd in targets.get(name).bounds:
            got.setdefault(bd.metric, []).append(bd.value)
        for metric, bound in want.items():
            expect = sorted(bound) if isinstance(bound, tuple) else [bound]
            assert sorted(got[metric]) == pytest.approx(expect, rel=1e-12), (name, metric)


def test_accuracy_txt_parses_with_the_checker_patterns():
    from language.llama3_1_8b.benchmark import BENCHMARK as b

    metrics = {"ROUGE1": 38.9123, "ROUGE2": 16.0, "ROUGEL": 24.5001, "ROUGELSUM": 35.8, "GEN_LEN": np.int64(8167001),
               "GEN_NUM": 13368}
    (line,) = b.accuracy_lines(metrics)
    for metric, pat in CHECKER_PATTERNS.items():
        m = re.match(pat, line)
        assert m, (metric, line)
        assert float(m.group(1)) == pytest.approx(float(metrics[metric]))
    # evaluation.py's own line (ROUGE as quoted strings) reads the same
    ref_line = "{'rouge1': '38.9123', 'rouge2': '16.0', 'rougeL': '24.5001', 'rougeLsum': '35.8', 'gen_len': 8167001, 'gen_num': 13368}"
    assert [float(re.match(p, ref_line).group(1)) for p in CHECKER_PATTERNS.values()] == \
        [float(re.match(p, line).group(1)) for p in CHECKER_PATTERNS.values()]


def test_generation_stops_at_every_stop_id(synth):
    """vLLM stops at the tokenizer's EOS and at every eos_token_id of generation_config.json: the
    synthetic model ends answers with each of its three (<|eot_id|>, <|end_of_text|>, <|eom_id|>).
    With the tokenizer's EOS alone (the kit before stop_ids) those answers would run on."""
    from language.llama3_1_8b.benchmark import BENCHMARK as b

    g = b.load_model(synth / "model", "cpu", "fp32", {})
    tok = g.tok
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>")}
    assert tok.eos_token_id == ids["<|eot_id|>"]
    assert sorted(g.eos) == sorted(ids.values())
    ds = b.open_dataset(synth / "dataset")
    prompts = [ds.load(i) for i in range(ds.size)]
    answers = b.postprocess(b.forward(g, prompts), len(prompts))
    ends = {int(a[-1]) for a in answers if len(a) < ds.cap}
    assert {ids["<|end_of_text|>"], ids["<|eom_id|>"]} <= ends, ends
    for a in answers:  # cut at the first stop id, nothing after it
        hits = np.flatnonzero(np.isin(a, list(ids.values())))
        assert hits.size == 0 or hits[0] == len(a) - 1
    truth = json.loads((synth / "dataset" / "cnn_eval.json").read_text())
    assert [r["output"] for r in truth] == tok.batch_decode([a.tolist() for a in answers], skip_special_tokens=True)
    g.eos = tok.eos_token_id  # as before: only the tokenizer's EOS stops
    early = [i for i, a in enumerate(answers) if a[-1] in (ids["<|end_of_text|>"], ids["<|eom_id|>"])]
    longer = b.postprocess(b.forward(g, [prompts[i] for i in early]), len(early))
    assert all(len(x) > len(answers[i]) for x, i in zip(longer, early))


def test_dataset_layout_refusals(synth, tmp_path):
    from language.llama3_1_8b.benchmark import BENCHMARK as b, DATACENTER_FILE, EDGE_FILE

    ds = tmp_path / "ds"
    shutil.copytree(synth / "dataset", ds)
    (ds / EDGE_FILE).write_bytes((ds / DATACENTER_FILE).read_bytes())
    with pytest.raises(KitError, match="holds both cnn_eval.json and sample_cnn_eval_5000.json"):
        b.open_dataset(ds)
    (ds / DATACENTER_FILE).unlink()
    assert b.open_dataset(ds).file.name == EDGE_FILE  # the edge set alone is a dataset dir
    recs = json.loads((ds / EDGE_FILE).read_text())
    recs[3]["tok_input"] = "not ids"
    (ds / EDGE_FILE).write_text(json.dumps(recs))
    with pytest.raises(KitError, match=r"sample_cnn_eval_5000.json sample 3: 'tok_input'"):
        b.open_dataset(ds)
    (ds / EDGE_FILE).unlink()
    with pytest.raises(KitError, match="cnn_eval.json not found"):
        b.open_dataset(ds)


def test_edge_target_checks_against_the_edge_row_and_set_size(synth, tmp_path):
    """ACCURACY_TARGET=edge: the llama3.1-8b-edge row and its own full set size, 5,000 (the datacenter
    row: 13,368). The set is run as a real one (no SYNTHETIC.json), so the sizes are the checker's."""
    ds = tmp_path / "dataset"
    shutil.copytree(synth / "dataset", ds)
    (ds / "SYNTHETIC.json").unlink()
    log = tmp_path / "run"
    cp = evalkit("run", "llama3.1-8b", "--dataset", ds, "--model_path", synth / "model", "--log_path", log,
                 "--batch_size", 4, "--threads", 1)
    assert cp.returncode in (0, 1), cp.stdout + cp.stderr  # judged by the real targets: GEN_LEN fails, fine
    for target, name, size in (("edge", "llama3.1-8b-edge", 5000), ("99", "llama3.1-8b", 13368)):
        cp = evalkit("check", log, "--accuracy_target", target)
        acc = json.loads((log / "accuracy.json").read_text())
        assert (acc["checker_name"], acc["dataset_size"], acc["n_count"]) == (name, size, SYNTH_N), cp.stdout
        assert f"PARTIAL run: {SYNTH_N} of {size} samples" in cp.stdout
