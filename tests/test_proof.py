"""A PASS is proof (issue 24, items 1-3): check and status verify what gather vouched for, data
files are identified by content, and DLRM's batch size is part of its identity.

Each test reproduces an audit finding that passed silently before (DLRM, 12 samples, 3 partitions).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evalkit.accuracy_log import Writer, iter_entries
from evalkit.rundir import MERGED

from conftest import evalkit, one_line_error

N = 12


@pytest.fixture(scope="module")
def dlrm(synthetic, tmp_path_factory):
    """A synthetic DLRM set and a PASSing 3-partition run of it (gathered and checked)."""
    synth = synthetic("dlrm", N)
    log = tmp_path_factory.mktemp("dlrm_proof") / "run"
    cp = run(synth / "dataset", log, "--n_devices", 3, "--n_partitions", 3, model=synth / "model")
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stdout + cp.stderr
    return synth, log


def run(dataset: Path, log: Path, *extra, model: Path):
    return evalkit("run", "dlrm", "--dataset", dataset, "--model_path", model, "--log_path", log,
                   "--threads", 1, *extra)


def without_partition_1(log: Path, tmp_path: Path) -> Path:
    """A copy of the gathered run with partition 1 and the gather outputs removed: partitions 0 and 2
    to gather with a partition 1 run elsewhere."""
    mixed = tmp_path / "mixed"
    shutil.copytree(log, mixed)
    shutil.rmtree(mixed / "1")
    for f in ("gather.json", MERGED):
        (mixed / f).unlink()
    return mixed


def test_check_refuses_a_merged_log_with_an_entry_deleted(dlrm, tmp_path):
    """Audit 1a: one entry deleted from the merged log gave RESULT: PASS, queries=11."""
    _, log = dlrm
    run_dir = tmp_path / "short"
    shutil.copytree(log, run_dir, symlinks=True)
    es = list(iter_entries(run_dir / MERGED))[:-1]
    with open(run_dir / MERGED, "w") as f:
        w = Writer(f)
        for e in es:
            w.write(e)
        w.close()
    err = one_line_error(evalkit("check", run_dir))
    assert str(run_dir / MERGED) in err and "12 entries" in err and "shorter" in err, err
    assert "gather --force" in err, err  # the hint: paste it and the run is whole again
    err = one_line_error(evalkit("status", run_dir))
    assert "not the log gather wrote" in err, err


def test_check_and_status_refuse_a_partition_replaced_after_gather(dlrm, tmp_path):
    """Audit 1b: gather, then partition 1 replaced by one from another checkpoint: gather --force
    refused, yet check printed PASS on the old merged log and status said 12/12 complete."""
    synth, log = dlrm
    run_dir = tmp_path / "run"
    shutil.copytree(log, run_dir)
    info = json.loads((run_dir / "gather.json").read_text())
    for part in info["partitions"]:  # the copy's gather.json must point at the copy's partitions
        part["dir"] = str(run_dir / str(part["partition"]))
    (run_dir / "gather.json").write_text(json.dumps(info))
    assert evalkit("check", run_dir).returncode == 0  # the copy itself is fine
    other = tmp_path / "model"
    shutil.copytree(synth / "model", other)
    dense = other / "dense.pt"
    data = bytearray(dense.read_bytes())
    data[len(data) // 2] ^= 1  # another checkpoint of the same size
    dense.write_bytes(bytes(data))
    cp = run(synth / "dataset", tmp_path / "p1", "--n_partitions", 3, "--partition_offset", 1, model=other)
    assert cp.returncode == 0, cp.stdout + cp.stderr  # one partition: ran, not gathered
    shutil.rmtree(run_dir / "1")
    shutil.copytree(tmp_path / "p1" / "1", run_dir / "1")
    err = one_line_error(evalkit("check", run_dir))
    assert "partition 1" in err and "changed since gather" in err, err
    cp = evalkit("status", run_dir)
    err = one_line_error(cp)
    assert "partition 1" in err and "dense.pt" in err, err  # named file by file
    assert "complete" in cp.stdout  # the table is still printed above the refusal
    err = one_line_error(evalkit("gather", "--force", run_dir))
    assert "dense.pt" in err, err


@pytest.mark.parametrize("edit", ["labels_inverted", "dense_rows_reversed"])
def test_a_partition_run_on_other_data_of_the_same_size_does_not_merge(dlrm, tmp_path, edit):
    """Audit 2: DLRM's dense/label files were identified by byte size: a copy with inverted labels or
    reversed dense rows merged with the originals under the same config hash and scored PASS."""
    synth, log = dlrm
    data = tmp_path / "dataset"
    shutil.copytree(synth / "dataset", data)
    name = "day_23_labels.npy" if edit == "labels_inverted" else "day_23_dense.npy"
    a = np.load(data / name)
    np.save(data / name, 1 - a if edit == "labels_inverted" else a[::-1].copy())
    assert (data / name).stat().st_size == (synth / "dataset" / name).stat().st_size
    cp = run(data, tmp_path / "other", "--n_partitions", 3, "--partition_offset", 1, model=synth / "model")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    err = one_line_error(evalkit("gather", without_partition_1(log, tmp_path), tmp_path / "other"))
    assert "partition 1" in err and f"dataset file {name}" in err, err
    # and a checked run scored against the edited copy is refused too: the labels are part of the data
    err = one_line_error(evalkit("check", log, "--dataset", data))
    assert f"dataset file {name}" in err or name in err, err


def test_dlrm_batch_size_is_in_its_identity(dlrm, tmp_path):
    """Audit 3: batch 16 and batch 1 gave the same config hash and different bytes (<= 6e-8)."""
    synth, log = dlrm
    cp = run(synth / "dataset", tmp_path / "b1", "--n_partitions", 3, "--partition_offset", 1, "--batch_size", 1,
             model=synth / "model")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    err = one_line_error(evalkit("gather", without_partition_1(log, tmp_path), tmp_path / "b1"))
    assert "partition 1" in err and "batch_size" in err, err


def test_a_gather_json_without_the_merged_record_is_refused(dlrm, tmp_path):
    """A run gathered by an older kit (no record of the merged log) is gathered again, not trusted."""
    _, log = dlrm
    run_dir = tmp_path / "old"
    shutil.copytree(log, run_dir)
    info = json.loads((run_dir / "gather.json").read_text())
    del info["merged"]
    (run_dir / "gather.json").write_text(json.dumps(info))
    err = one_line_error(evalkit("check", run_dir))
    assert "gather --force" in err and "older kit" in err, err


def test_the_report_shows_a_pass_that_no_longer_holds_as_error(dlrm, tmp_path):
    """The report reads accuracy.json: a merged log edited after the check must not show as PASS."""
    from evalkit.report import collect_runs, error_line

    _, log = dlrm
    logs = tmp_path / "logs"
    run_dir = logs / "dlrm" / "Offline" / "run"
    shutil.copytree(log, run_dir)
    info = json.loads((run_dir / "gather.json").read_text())
    for part in info["partitions"]:
        part["dir"] = str(run_dir / str(part["partition"]))
    (run_dir / "gather.json").write_text(json.dumps(info))
    (run := collect_runs(logs)[0])
    assert run["accuracy"]["verdict"] == "PASS" and run["check_error"] is None
    with open(run_dir / MERGED, "a") as f:
        f.write(" ")
    run = collect_runs(logs)[0]
    assert run["accuracy"] is None and "no longer holds" in error_line(run), error_line(run)
