"""Issue 18's frictions that live in the core: errors early and in one line, Ctrl-C, honest tables
and progress lines, outputs others can read."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from evalkit import targets
from evalkit.progress import line

from conftest import ROOT, evalkit, kit_env, one_line_error
from test_ownership import args, wait_progress


def run(synth: Path, log: Path, *extra):
    return evalkit("run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--batch_size", 4, "--threads", 1, *extra)


def test_an_undefined_accuracy_target_fails_before_the_run(resnet_synth, tmp_path):
    err = one_line_error(run(resnet_synth, tmp_path / "r", "--accuracy_target", "99.9"))
    assert "--accuracy_target 99.9 is not defined for resnet (choose 99)" in err
    assert not (tmp_path / "r").exists()  # nothing ran, nothing written


def test_another_n_count_into_an_existing_run_dir_is_refused_untouched(resnet_synth, tmp_path):
    log = tmp_path / "r"
    assert run(resnet_synth, log, "--n_count", 8).returncode == 0
    before = {f: f.read_bytes() for f in log.rglob("*") if f.is_file()}
    cp = run(resnet_synth, log, "--n_count", 12)
    err = one_line_error(cp)
    assert "holds another run" in err and "n_count" in err and "use a new LOG_PATH" in err
    assert "resume" not in err and "complete" not in cp.stderr
    assert {f: f.read_bytes() for f in log.rglob("*") if f.is_file()} == before  # run.json included


def test_a_bad_number_is_one_line_not_the_usage(tmp_path):
    cp = evalkit("run", "resnet", "--n_count", "abc")
    err = one_line_error(cp)
    assert "--n_count" in err and "abc" in err
    assert "usage:" not in cp.stderr


def test_ctrl_c_keeps_state_and_says_how_to_resume(resnet_synth, tmp_path):
    log = tmp_path / "int"
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", *args(resnet_synth, log)], cwd=ROOT, env=kit_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_progress(log, 0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75 and "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "SIGINT" in lines[0] and "resume with: cd " in lines[0], err
    st = evalkit("status", log)
    # preempted, not failed (issue 29): a Ctrl-C keeps the state for a resume
    assert "p0   preempted" in st.stdout and "failed" not in st.stdout, st.stdout
    assert "preempted by SIGINT" in st.stdout and "resume partitions 0 with: cd " in st.stdout


def test_a_scaled_row_has_a_scaled_reference():
    v = targets.evaluate(targets.get("gptj-99"), {"ROUGE1": 43, "ROUGE2": 20, "ROUGEL": 30, "GEN_LEN": 2372},
                         scale={"GEN_LEN": 2474 / 4016878})
    row = next(r for r in v.rows if r["metric"] == "GEN_LEN")
    assert row["reference"] == pytest.approx(2474) and row["target"] == pytest.approx(2474 * 0.9)
    assert row["pct_of_reference"] == pytest.approx(100 * 2372 / 2474)  # not 47.94 % of an unscaled reference


def test_progress_lines_say_complete_and_no_zero_rate():
    assert line("partition 0", 8, 8, 0.0, 0.0) == "partition 0: 8/8 (100.0%) complete"
    assert "-- samples/s" in line("partition 0", 0, 8, 0.0, None)


def test_kit_outputs_respect_the_umask(resnet_synth, tmp_path):
    log = tmp_path / "r"
    old = os.umask(0o022)
    try:
        cp = run(resnet_synth, log, "--n_count", 4)
    finally:
        os.umask(old)
    assert cp.returncode == 0, cp.stderr
    for name in ("accuracy.json", "gather.json", "accuracy.txt", "run.json", "0/partition.json", "0/progress.json"):
        mode = stat.S_IMODE((log / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
