"""ResNet50 end to end with real LoadGen on synthetic data: partitions, merge, check,
index shift, resume, and every bad input of the core issue."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from evalkit.accuracy_log import iter_entries

from conftest import evalkit, one_line_error
from one_process import evalkit_each

MERGED = "merged_mlperf_log_accuracy.json"


def run(synth: Path, log: Path, *extra, **env):
    return evalkit("run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--batch_size", 4, *extra, **env)


def run_partitions(synth: Path, log: Path, n_partitions: int, partitions, *extra) -> None:
    """Partitions `partitions` of an n_partitions run into log, one `evalkit run --partition_offset p` each
    (in one interpreter: tests/one_process.py)."""
    evalkit_each(*(["run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model",
                    "--log_path", log, "--batch_size", 4, "--n_devices", 1, "--n_partitions", n_partitions,
                    "--partition_offset", p, *extra] for p in partitions))
    for p in partitions:
        assert (log / str(p) / "partition.json").is_file(), p


def entries(path: Path) -> list[dict]:
    return sorted(iter_entries(path), key=lambda e: e["qsl_idx"])


def test_resume_reruns_only_the_missing_partition(resnet_synth, tmp_path):
    log = tmp_path / "run"
    assert run(resnet_synth, log, "--n_devices", 3, "--n_partitions", 3).returncode == 0
    before = {p: (log / str(p) / "mlperf_log_accuracy.json").stat().st_mtime_ns for p in range(3)}
    merged_before = (log / MERGED).read_text()
    (log / "1" / "partition.json").unlink()
    cp = run(resnet_synth, log, "--n_devices", 3, "--n_partitions", 3)
    assert cp.returncode == 0, cp.stderr
    after = {p: (log / str(p) / "mlperf_log_accuracy.json").stat().st_mtime_ns for p in range(3)}
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1] != before[1]
    assert "skipped" in (log / "0" / "worker.log").read_text()
    assert "done" in (log / "1" / "worker.log").read_text().splitlines()[-1]
    assert "RESULT: PASS" in cp.stdout
    # same results as before (LoadGen's issue order may differ, so compare sorted by qsl_idx)
    old = sorted(json.loads(merged_before), key=lambda e: e["qsl_idx"])
    assert [(e["qsl_idx"], e["data"]) for e in entries(log / MERGED)] == [(e["qsl_idx"], e["data"]) for e in old]


def test_manual_offsets_over_two_dirs_then_gather(resnet_synth, tmp_path):
    a, b = tmp_path / "node0", tmp_path / "node1"
    cp = run(resnet_synth, a, "--n_partitions", 2, "--partition_offset", 0)
    assert cp.returncode == 0 and "missing [1]" in cp.stderr
    assert run(resnet_synth, b, "--n_partitions", 2, "--partition_offset", 1).returncode == 0
    evalkit("gather", a, b, "--out", tmp_path / "merged", check=True)
    cp = evalkit("check", tmp_path / "merged")
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout


# ----------------------------------------------------------------------- bad input

@pytest.mark.parametrize("n_count", [-1, 0, 25, 1000])
def test_n_count_outside_dataset(resnet_synth, tmp_path, n_count):
    err = one_line_error(run(resnet_synth, tmp_path / "r", "--n_count", n_count))
    assert f"--n_count {n_count}" in err and "[1, 24]" in err
    assert not (tmp_path / "r").exists()


def test_offset_plus_devices_beyond_partitions(resnet_synth, tmp_path):
    err = one_line_error(run(resnet_synth, tmp_path / "r", "--n_partitions", 2, "--partition_offset", 1,
                             "--n_devices", 2))
    assert "--partition_offset 1" in err and "--n_partitions 2" in err


def test_cuda_without_a_gpu_names_device(resnet_synth, tmp_path):
    err = one_line_error(run(resnet_synth, tmp_path / "r", "--device", "cuda", "--n_devices", 2))
    assert "DEVICE=cuda" in err and "no cuda device" in err and "n_devices" not in err


def test_more_cpu_workers_than_cores_is_allowed_with_warning(resnet_synth, tmp_path):
    n = (os.cpu_count() or 1) + 1
    cp = run(resnet_synth, tmp_path / "r", "--n_count", n, "--n_devices", n)
    assert cp.returncode == 0, cp.stderr
    assert "warning:" in cp.stderr and "1 thread" in cp.stderr


def test_unknown_model(tmp_path):
    err = one_line_error(evalkit("run", "resnet51", "--dataset", tmp_path))
    assert "unknown model 'resnet51'" in err and "resnet" in err


def test_missing_dataset_dir(resnet_synth, tmp_path):
    err = one_line_error(evalkit("run", "resnet", "--dataset", tmp_path / "nope", "--model_path",
                                 resnet_synth / "model", "--log_path", tmp_path / "r"))
    assert str(tmp_path / "nope") in err


def test_missing_image_is_an_error_not_a_skip(resnet_synth, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(resnet_synth / "dataset", ds)
    victim = (ds / "val_map.txt").read_text().splitlines()[13].split()[0]
    (ds / victim).unlink()
    cp = evalkit("run", "resnet", "--dataset", ds, "--model_path", resnet_synth / "model",
                 "--log_path", tmp_path / "r", "--n_devices", 2)
    assert cp.returncode != 0
    assert victim in cp.stderr
    assert "partition 1" in cp.stderr  # image 13 lies in partition 1 of 2
    assert (tmp_path / "r" / "0" / "partition.json").exists(), "the good partition is kept"
    assert not (tmp_path / "r" / "1" / "partition.json").exists()


@pytest.fixture(scope="module")
def two_partitions(resnet_synth, tmp_path_factory) -> Path:
    """A complete, not yet gathered run of 2 partitions (each launched on its own, --no_check), made once:
    every test below damages its own copy."""
    log = tmp_path_factory.mktemp("two_partitions") / "r"
    run_partitions(resnet_synth, log, 2, (0, 1), "--no_check")
    return log


def _complete_run(two_partitions: Path, tmp_path: Path, name: str = "r") -> Path:
    return shutil.copytree(two_partitions, tmp_path / name)


def test_truncated_partition_log(two_partitions, tmp_path):
    log = _complete_run(two_partitions, tmp_path)
    f = log / "1" / "mlperf_log_accuracy.json"
    f.write_bytes(f.read_bytes()[:-40])
    err = one_line_error(evalkit("gather", log))
    assert "partition 1" in err and str(f) in err
    assert not (log / MERGED).exists()


def test_corrupt_partition_log_with_matching_manifest(two_partitions, tmp_path):
    """Even a log whose manifest was rewritten to match is parsed entry by entry."""
    log = _complete_run(two_partitions, tmp_path)
    f = log / "0" / "mlperf_log_accuracy.json"
    f.write_text(f.read_text().replace('"data" : "', '"data" : "zz', 1))
    m = json.loads((log / "0" / "partition.json").read_text())
    m["logs"]["mlperf_log_accuracy.json"] = {"size": f.stat().st_size,
                                             "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    (log / "0" / "partition.json").write_text(json.dumps(m))
    err = one_line_error(evalkit("gather", log))
    assert "partition 0" in err


def test_partition_from_another_config(resnet_synth, two_partitions, tmp_path):
    log = _complete_run(two_partitions, tmp_path)
    other = tmp_path / "other"  # only its partition 1 is used
    run_partitions(resnet_synth, other, 2, (1,), "--no_check", "--scenario", "SingleStream")
    shutil.rmtree(log / "1")
    shutil.copytree(other / "1", log / "1")
    err = one_line_error(evalkit("gather", log))
    assert "partition 1" in err and "scenario" in err
    # and running into that dir with this config refuses to reuse the foreign partition
    err = one_line_error(run(resnet_synth, log, "--n_partitions", 2, "--partition_offset", 1))
    assert "partition 1" in err and "holds another run" in err and "scenario" in err


def test_missing_partition(two_partitions, tmp_path):
    log = _complete_run(two_partitions, tmp_path)
    shutil.rmtree(log / "1")
    err = one_line_error(evalkit("gather", log))
    assert "partitions 1 of 0..1" in err


def test_existing_merged_file_is_never_overwritten(two_partitions, tmp_path):
    log = _complete_run(two_partitions, tmp_path)
    (log / MERGED).write_text("precious")
    err = one_line_error(evalkit("gather", log))
    assert MERGED in err and "already exists" in err
    assert (log / MERGED).read_text() == "precious"
    evalkit("gather", log, "--force", check=True)
    baks = list(log.glob(f"{MERGED}.*.bak"))
    assert len(baks) == 1 and baks[0].read_text() == "precious"


def test_eleven_partitions_gather_in_numeric_order(resnet_synth, tmp_path):
    log = tmp_path / "r"
    run_partitions(resnet_synth, log, 11, range(11), "--n_count", 22, "--no_check")
    # the dirs sort as text 0 1 10 2 3 ..: gather must take them as numbers
    assert sorted(p.name for p in log.iterdir() if p.is_dir())[:3] == ["0", "1", "10"]
    evalkit("gather", log, check=True)
    info = json.loads((log / "gather.json").read_text())
    assert [p["partition"] for p in info["partitions"]] == list(range(11))
    es = list(iter_entries(log / MERGED))
    assert [e["seq_id"] for e in es] == list(range(22))
    assert sorted(e["qsl_idx"] for e in es) == list(range(22))
    cp = evalkit("check", log)
    assert cp.returncode == 0 and "PARTIAL run: 22 of 24" in cp.stdout


def test_bad_user_conf_is_rejected_before_the_model_loads(resnet_synth, tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("resnet50.Offline.target_qps = abc\n")
    err = one_line_error(run(resnet_synth, tmp_path / "r", "--user_conf", conf))
    assert "LoadGen rejected user.conf" in err
    err = one_line_error(run(resnet_synth, tmp_path / "r2", "--user_conf", tmp_path / "none.conf"))
    assert "--user_conf" in err and "none.conf" in err


SCENARIOS = ["SingleStream", "MultiStream", "Server"]
DATA_TYPES = ["bf16", "fp16"]


@pytest.fixture(scope="module")
def variant_runs(resnet_synth, tmp_path_factory) -> Path:
    """A checked run of 8 samples in each other scenario, then an unchecked one of 4 in each reduced precision
    (last: nothing of a bf16 run can reach an fp32 one), through the CLI in one interpreter; DIR/<variant>."""
    d = tmp_path_factory.mktemp("variants")
    evalkit_each(*(["run", "resnet", "--dataset", resnet_synth / "dataset", "--model_path", resnet_synth / "model",
                    "--log_path", d / v, "--batch_size", 4, *extra]
                   for v, extra in [(s, ("--n_count", 8, "--scenario", s)) for s in SCENARIOS]
                   + [(t, ("--n_count", 4, "--data_type", t, "--no_check")) for t in DATA_TYPES]))
    return d


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_scores_the_synthetic_reference(variant_runs, scenario):
    log = variant_runs / scenario
    assert json.loads((log / "accuracy.json").read_text())["verdict"] == "PASS"  # the run's check (exit 0)
    m = json.loads((log / "0" / "partition.json").read_text())
    assert m["config"]["scenario"] == scenario


@pytest.mark.parametrize("data_type", DATA_TYPES)
def test_reduced_precision_runs_and_is_recorded(variant_runs, data_type):
    """A random network is not robust to rounding, so only the run itself is checked here."""
    log = variant_runs / data_type
    m = json.loads((log / "0" / "partition.json").read_text())
    assert m["config"]["data_type"] == data_type
    assert sum(1 for _ in iter_entries(log / "0" / "mlperf_log_accuracy.json")) == 4
