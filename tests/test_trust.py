"""The trust gaps found by checking the kit with MLCommons' own tools, and the core's owners:
MultiStream repeats, checkpoints by content, performance horizon, model options, one reader
of the run dir (status == report), the self-enforcing Benchmark contract, `pip install .`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit import identity, registry
from evalkit.accuracy_log import Writer, iter_entries
from evalkit.errors import KitError
from evalkit.plan import resolve_options
from evalkit.rundir import ACCURACY_LOG, MANIFEST

from conftest import evalkit, fresh_clone, one_line_error


def run(synth: Path, log: Path, *extra, **kw):
    return evalkit("run", "resnet", "--dataset", synth / "dataset", "--model_path", kw.pop("model_path", synth / "model"),
                   "--log_path", log, "--batch_size", 4, "--threads", 1, *extra, **kw)


# ---------------------------------------------------------------- 1. MultiStream repeats

def test_multistream_repeats_are_merged_and_progress_counts_distinct(resnet_synth, tmp_path):
    """20 samples over 3 partitions (7, 7, 6): LoadGen's 8-sample queries repeat some samples."""
    log = tmp_path / "ms"
    cp = run(resnet_synth, log, "--scenario", "MultiStream", "--n_count", 20, "--n_devices", 3)
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stdout + cp.stderr
    info = json.loads((log / "gather.json").read_text())
    assert info["repeats"] > 0 and info["repeats"] == sum(p["repeats"] for p in info["partitions"])
    assert [p["entries"] for p in info["partitions"]] == [7, 7, 6]
    for p, size in enumerate((7, 7, 6)):
        pr = json.loads((log / str(p) / "progress.json").read_text())
        assert pr["done"] == pr["total"] == size  # never 8/7 (114 %)
    # a repeat whose payload differs is refused, naming the partition and sample
    log2 = tmp_path / "ms2"
    shutil.copytree(log, log2)
    (log2 / "merged_mlperf_log_accuracy.json").unlink()
    es = list(iter_entries(log2 / "1" / ACCURACY_LOG))
    dup = next(i for i, e in enumerate(es) if any(x["qsl_idx"] == e["qsl_idx"] for x in es[:i]))
    es[dup]["data"] = "0000803F" if es[dup]["data"] != "0000803F" else "00000040"
    with open(log2 / "1" / ACCURACY_LOG, "w") as f:
        w = Writer(f)
        for e in es:
            w.write(e)
        w.close()
    m = json.loads((log2 / "1" / MANIFEST).read_text())
    import hashlib
    data = (log2 / "1" / ACCURACY_LOG).read_bytes()
    m["logs"][ACCURACY_LOG] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (log2 / "1" / MANIFEST).write_text(json.dumps(m))
    err = one_line_error(evalkit("gather", log2))
    assert "partition 1" in err and "twice with different payloads" in err


# ---------------------------------------------------------------- 2. checkpoint by content

def _same_size_other_weights(src: Path, dst: Path) -> Path:
    import torch
    shutil.copytree(src, dst)
    state = torch.load(dst / "resnet50.pth", weights_only=True)
    state["fc.bias"][0] += 1.0  # a "fine-tuned" checkpoint: same tensors, same file size
    torch.save(state, dst / "resnet50.pth")
    assert (dst / "resnet50.pth").stat().st_size == (src / "resnet50.pth").stat().st_size
    return dst


def test_another_checkpoint_of_the_same_size_is_not_merged(resnet_synth, tmp_path):
    other = _same_size_other_weights(resnet_synth / "model", tmp_path / "model_b")
    # two nodes, manual offsets: node B has the other checkpoint; gather refuses to merge them
    a, b = tmp_path / "a", tmp_path / "b"
    cp = run(resnet_synth, a, "--n_count", 8, "--n_partitions", 2, "--partition_offset", 0, "--no_check")
    assert cp.returncode == 0, cp.stderr
    cp = run(resnet_synth, b, "--n_count", 8, "--n_partitions", 2, "--partition_offset", 1, "--no_check",
             model_path=other)
    assert cp.returncode == 0, cp.stderr
    err = one_line_error(evalkit("gather", a, b, "--out", tmp_path / "merged"))
    assert "partition 1" in err and "differs in checkpoint: resnet50.pth (sha256" in err
    # one shared run dir: the second launch is refused before it runs, nothing written
    err = one_line_error(run(resnet_synth, a, "--n_count", 8, "--n_partitions", 2, "--partition_offset", 1,
                             model_path=other))
    assert "holds another run" in err and "checkpoint: resnet50.pth" in err
    assert not (a / "1").exists()


def test_checkpoint_hash_is_computed_once_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("EVALKIT_HASH_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "ckpt" / "w.bin"
    f.parent.mkdir()
    f.write_bytes(b"a" * 1000)
    calls = []
    real = identity.sha256_file
    monkeypatch.setattr(identity, "sha256_file", lambda p: calls.append(p) or real(p))
    first = identity.checkpoint_identity(f.parent)
    assert identity.checkpoint_identity(f.parent) == first and len(calls) == 1  # cached
    f.write_bytes(b"b" * 1000)  # same size, new content (and mtime)
    os.utime(f, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    second = identity.checkpoint_identity(f.parent)
    assert len(calls) == 2 and second[0][1] == first[0][1] and second[0][2] != first[0][2]


# ---------------------------------------------------------------- 4. performance horizon

def test_performance_run_knows_how_many_samples_loadgen_issues(resnet_synth, tmp_path):
    log = tmp_path / "perf"
    cp = run(resnet_synth, log, "--mode", "performance", "--n_count", 8, "--min_query_count", 16,
             "--min_duration", 100)
    assert cp.returncode == 0, cp.stderr
    assert "LoadGen will issue 16 samples" in cp.stderr, cp.stderr
    pr = json.loads((log / "0" / "progress.json").read_text())
    assert pr["total"] == 16 and pr["done"] == 16


# ---------------------------------------------------------------- 5. options belong to their model

def test_model_options_are_the_models_own():
    resnet, bert = registry.get("resnet"), registry.get("bert")
    assert resolve_options(resnet, {}) == {"channels_last": False}  # the reference's layout by default
    assert resolve_options(resnet, {"channels_last": "true"}) == {"channels_last": True}
    assert resolve_options(bert, {}) == {}
    with pytest.raises(KitError, match="channels_last is not an option of bert"):
        resolve_options(bert, {"channels_last": False})
    with pytest.raises(KitError, match="num_beams"):
        resolve_options(registry.get("gpt-j"), {"num_beams": "four"})


def test_a_vision_option_is_refused_for_bert_before_any_model_loads(tmp_path):
    err = one_line_error(evalkit("run", "bert", "--data", "synthetic", "--no_channels_last",
                                 "--dataset", tmp_path / "none", "--log_path", tmp_path / "r"))
    assert "channels_last is not an option of bert" in err


# ---------------------------------------------------------------- one reader of the run dir

def test_status_and_report_agree_on_every_partition_state(resnet_synth, tmp_path):
    from evalkit import report, status

    log = tmp_path / "run"
    cp = run(resnet_synth, log, "--n_count", 12, "--n_partitions", 6, "--no_check")
    assert cp.returncode == 0, cp.stderr
    now = time.time()
    # p1 loading its model (user.conf only), p2 running, p3 stalled, p4 failed, p5 missing
    for p in (1, 2, 3, 4):
        (log / str(p)).mkdir(exist_ok=True)
        (log / str(p) / "user.conf").write_text("")
    for p, status_, upd in ((2, "running", now - 5), (3, "running", now - 7200), (4, "failed", now - 5)):
        (log / str(p) / "progress.json").write_text(json.dumps(
            {"partition": p, "done": 1, "total": 2, "rate": 0.5, "started": now - 60, "updated": upd,
             "status": status_, "error": "boom" if status_ == "failed" else None}))
    st = status.collect([log])
    run_ = report.load_run(log, tmp_path, {})
    by_status = {p: x.state for p, x in st.parts.items()}
    by_report = {r["partition"]: r["state"] for r in run_["partitions"]}
    assert by_status == {0: "complete", 1: "running", 2: "running", 3: "stalled", 4: "failed", 5: "missing"}
    assert by_report == by_status
    assert st.parts[1].phase == "loading"


# ---------------------------------------------------------------- the contract enforces itself

INCOMPLETE = '''
from evalkit.benchmark import Benchmark

class Half(Benchmark):
    name = "half"
    mlperf_name = "resnet50"
    checker_names = {"99": "resnet"}
    dataset_size = 10
    def open_dataset(self, path, model_path=None): ...
    def load_model(self, model_path, device, data_type, options): ...
    def make_batch(self, samples, device, data_type, options): ...
    def postprocess(self, outputs, n): ...
    # score, accuracy_lines, synthesize, synthetic_reference: not written

BENCHMARK = Half()
'''

WRONG_NAMES = '''
from evalkit.benchmark import Benchmark

class Odd(Benchmark):
    name = "odd"
    mlperf_name = "odd"
    checker_names = {"99": "no-such-checker"}
    dataset_size = 10
''' + "".join(f"    def {m}(self, *a, **k): ...\n" for m in (
    "open_dataset", "load_model", "make_batch", "postprocess", "score", "accuracy_lines", "synthesize",
    "synthetic_reference")) + "\nBENCHMARK = Odd()\n"


@pytest.mark.parametrize("name,source,expect", [("half", INCOMPLETE, "abstract"),
                                                ("odd", WRONG_NAMES, "no-such-checker")])
def test_an_incomplete_model_fails_when_registered(tmp_path, monkeypatch, name, source, expect):
    (tmp_path / f"kit_fake_{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.MODELS, name, f"kit_fake_{name}")
    with pytest.raises(KitError, match="not a complete benchmark definition") as e:
        registry.get(name)
    assert expect in str(e.value)


def test_every_registered_model_is_complete():
    for name in registry.names():
        assert registry.get(name).name == name


# ---------------------------------------------------------------- 6. pip install .

def test_pip_install_into_a_fresh_venv(tmp_path):
    """Packages follow the tree: every registered model's module is installed."""
    src = fresh_clone(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # the kit alone (its build backend from the package index); numpy + loadgen come from the dev env
    site = subprocess.run([sys.executable, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    cp = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(src)],
                        capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = site  # numpy + loadgen from the dev env; the kit only from the install
    cp = subprocess.run([str(py), "-m", "evalkit", "models"], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == registry.names()
    code = ("import importlib.util, evalkit, evalkit.registry as r; "
            "assert '/site-packages/' in evalkit.__file__, evalkit.__file__; "
            "missing = [m for m in r.MODELS.values() if importlib.util.find_spec(m) is None]; "
            "assert not missing, missing")
    cp = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
