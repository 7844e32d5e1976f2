"""Two launches on one run dir, preemption and a full disk: lose nothing, blame the right thing."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalkit.rundir import MERGED

from conftest import ROOT, evalkit, kit_env, worker_pid


def args(synth: Path, log: Path, *extra) -> list[str]:
    return ["run", "resnet", "--dataset", str(synth / "dataset"), "--model_path", str(synth / "model"),
            "--log_path", str(log), "--batch_size", "1", "--threads", "1", "--n_count", "12", *map(str, extra)]


def start(synth: Path, log: Path, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evalkit", *args(synth, log, *extra)], cwd=ROOT, env=kit_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_progress(log: Path, p: int, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pr = json.loads((log / str(p) / "progress.json").read_text())
            if pr["done"] > 0 and pr["status"] == "running":
                return pr
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"partition {p} of {log} never answered a sample")


@pytest.fixture(scope="module")
def baseline(resnet_synth, tmp_path_factory) -> bytes:
    log = tmp_path_factory.mktemp("own") / "base"
    cp = evalkit(*args(resnet_synth, log))
    assert cp.returncode == 0, cp.stderr
    return (log / MERGED).read_bytes()


def test_second_launch_refuses_and_the_first_passes_untouched(resnet_synth, baseline, tmp_path):
    log = tmp_path / "cc"
    first = start(resnet_synth, log, "--n_devices", 2)
    worker_pid(log, 0)
    second = evalkit(*args(resnet_synth, log, "--n_devices", 2))
    assert second.returncode == 3, second.stderr
    err = [x for x in second.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "another launch is running" in err[0] and f"host {socket.gethostname()}" in err[0], err
    assert "nothing was started or changed" in err[0]
    out, errs = first.communicate(timeout=600)
    assert first.returncode == 0 and "RESULT: PASS" in out, errs
    assert (log / MERGED).read_bytes() == baseline
    launches = json.loads((log / "run.json").read_text())["launches"]
    assert list(launches) == ["0-1"]


def test_a_live_owner_shows_in_status(resnet_synth, tmp_path):
    log = tmp_path / "st"
    first = start(resnet_synth, log)
    wait_progress(log, 0)
    cp = evalkit("status", log)
    assert f"[host {socket.gethostname()} pid {first.pid}" in cp.stdout, cp.stdout
    first.communicate(timeout=600)


@pytest.mark.parametrize("owner", ["dead_pid", "silent_host"])
def test_a_stale_owner_is_taken_over(resnet_synth, baseline, tmp_path, owner):
    log = tmp_path / "stale"
    (log / "0").mkdir(parents=True)
    if owner == "dead_pid":
        dead = subprocess.Popen(["true"])
        dead.wait()
        o = {"host": socket.gethostname(), "pid": dead.pid, "proc_start": "1", "started": time.time() - 60}
    else:  # another node whose heartbeat stopped an hour ago
        o = {"host": "node-gone", "pid": 1, "proc_start": "1", "started": time.time() - 7200}
    f = log / "0" / "owner.json"
    f.write_text(json.dumps(o))
    if owner == "silent_host":
        os.utime(f, (time.time() - 3600, time.time() - 3600))
    cp = evalkit(*args(resnet_synth, log))
    assert cp.returncode == 0, cp.stderr
    assert "warning: partition 0: taking over from host" in cp.stderr
    assert (log / MERGED).read_bytes() == baseline and not f.exists()


def test_a_fresh_owner_on_another_host_is_respected(resnet_synth, tmp_path):
    log = tmp_path / "other"
    (log / "0").mkdir(parents=True)
    (log / "0" / "owner.json").write_text(json.dumps({"host": "node-7", "pid": 4242, "started": time.time()}))
    cp = evalkit(*args(resnet_synth, log))
    assert cp.returncode == 3
    err = [x for x in cp.stderr.splitlines() if x.startswith("error:")]
    assert len(err) == 1 and "host node-7 pid 4242" in err[0]
    assert sorted(x.name for x in (log / "0").iterdir()) == ["owner.json"]  # nothing else written


@pytest.mark.parametrize("devices", [1, 2])
def test_sigterm_then_rerun_is_byte_identical_and_computes_each_sample_once(resnet_synth, baseline, tmp_path,
                                                                              devices):
    log = tmp_path / "pre"
    proc = start(resnet_synth, log, "--n_devices", devices)
    wait_progress(log, 0)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "resume with: cd " in lines[0], err
    answered = {}
    for p in range(devices):
        pr = json.loads((log / str(p) / "progress.json").read_text())
        assert pr["status"] in ("preempted", "complete"), pr
        answered[p] = pr["done"]
        assert not (log / str(p) / "owner.json").exists()
    cmd = lines[0].split("resume with: ", 1)[1]
    cp = subprocess.run(["bash", "-c", cmd], cwd="/", env=kit_env(), capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    assert (log / MERGED).read_bytes() == baseline
    for p in range(devices):
        t = json.loads((log / str(p) / "partition.json").read_text())["timings"]
        if answered[p] < t["samples_computed"] + t["samples_cached"]:  # not finished before the signal
            assert t["samples_cached"] == answered[p]  # every sample answered before the signal is reused


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_fails_in_one_line_and_the_rerun_finishes(resnet_synth, baseline, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mnt)], check=True)
    try:
        log = mnt / "run"
        cp = evalkit(*args(resnet_synth, log))
        assert cp.returncode == 2, cp.stderr
        err = [x for x in cp.stderr.splitlines() if x.startswith("error:")]
        assert len(err) == 1 and "MiB free" in err[0] and str(log) in err[0], cp.stderr
        assert "Traceback" not in cp.stderr
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
        cp = evalkit(*args(resnet_synth, log))
        assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
        assert (log / MERGED).read_bytes() == baseline
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
