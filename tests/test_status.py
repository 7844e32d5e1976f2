"""`evalkit status` over a run with one finished, one failed (worker SIGKILLed, real launcher),
one running and one stalled partition (progress.json with controlled timestamps), one missing."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, evalkit, kit_env, worker_pid

N, P = 12, 5   # partitions of 3, 3, 2, 2, 2 samples (the first 12 of the set)


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("gpt-j", 24)  # the session's 24-sample set: test_scripts.py's `make demo` runs on it too


def write_progress(log: Path, p: int, done: int, total: int, rate: float, updated: float) -> None:
    (log / str(p)).mkdir(parents=True)
    (log / str(p) / "progress.json").write_text(json.dumps(
        {"partition": p, "done": done, "total": total, "rate": rate, "started": updated - 100, "updated": updated,
         "status": "running", "cached": 0, "computed": done, "model": "gpt-j", "n_partitions": P, "n_count": N}))


def test_status_finished_failed_running_stalled_missing(synth, tmp_path):
    log = tmp_path / "run"
    args = ["run", "gpt-j", "--dataset", str(synth / "dataset"), "--model_path", str(synth / "model"),
            "--log_path", str(log), "--n_count", str(N), "--threads", "1", "--batch_size", "1", "--n_partitions", str(P),
            "--n_devices", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", *args], cwd=ROOT, env=kit_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(worker_pid(log, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err
    # the launcher's live line is the status code's line
    assert re.search(r"^2 partitions: \d+/6 .*samples/s ETA .* \| p0 \d+/3 .* \| p1 \d+/3 ", err, re.M), err
    pr1 = json.loads((log / "1" / "progress.json").read_text())
    assert pr1["status"] == "failed" and pr1["error"] == "killed by SIGKILL", "the launcher marks a killed worker"
    launch = json.loads((log / "run.json").read_text())["launches"]["0-1"]
    # pasted from any directory it resumes: it starts by going where the run was launched
    cd, _, rest = launch["command"].partition(" && ")
    assert cd == f"cd {shlex.quote(str(ROOT))}"
    assert shlex.split(rest)[2:] == ["-m", "evalkit", *args] and shlex.split(rest)[0].startswith("PYTHONPATH=")

    now = time.time()
    write_progress(log, 2, 1, 2, 0.5, now - 5)          # running: 1 left at 0.5/s -> ETA 00:02
    write_progress(log, 3, 1, 2, 0.5, now - 3600)       # stalled: no update for an hour

    cp = evalkit("status", log, "--stall_minutes", 10)
    assert cp.returncode == 4, cp.stdout + cp.stderr  # 4: some partition needs a resume (1 = a scored FAIL)
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^  p(\d+) .*$", cp.stdout, re.M)}
    assert sorted(rows) == [0, 1, 2, 3, 4], cp.stdout
    assert re.match(r"  p0\s+complete\s+3/3$", rows[0]), rows[0]
    assert re.match(r"  p1\s+failed\s+\d/3  killed by SIGKILL$", rows[1]), rows[1]
    assert re.match(r"  p2\s+running\s+1/2  0.50 samples/s  ETA 00:02  updated \d+ s ago$", rows[2]), rows[2]
    assert re.match(r"  p3\s+stalled\s+1/2  no update since 60 min ago", rows[3]), rows[3]
    assert re.match(r"  p4\s+missing\s+0/2  not started", rows[4]), rows[4]
    done = 3 + pr1["done"] + 1 + 1
    assert f"total: {done}/12 " in cp.stdout and "ETA --:--" in cp.stdout, cp.stdout
    assert "[1 complete, 1 running, 1 stalled, 1 failed, 1 missing]" in cp.stdout
    assert f"resume partitions 1 with: {launch['command']}" in cp.stdout
    assert "partitions 3, 4: no launch recorded in run.json" in cp.stdout

