"""Issue 24 items 6 and 7 (the core parts): errors that lose their name, tracebacks where one
line is promised, a dead worker shown as running, and one exit code for "needs a resume".

Each test runs the real CLI on a tiny synthetic RNN-T set (writing one takes seconds). The
filesystem tests mount a real tmpfs (full, or remounted read-only): they need root and the right
to mount, and are skipped where mounting fails. Every mount is undone in a finally.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, evalkit, kit_env, one_line_error, worker_of

N = 4  # utterances: partitions of 2 + 2 when split in two


@pytest.fixture(scope="module")
def rnnt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rnnt_robust")
    evalkit("synth", "rnnt", "--out", out, "--n", N, "--seed", 0, check=True)
    return out


def run_args(synth: Path, log: Path, *extra) -> list[str]:
    return ["run", "rnnt", "--dataset", synth / "dataset", "--model_path", synth / "model", "--log_path", log,
            "--threads", "1", *extra]


def wav_of(dataset: Path, index: int) -> Path:
    """The audio file of global sample `index`, as the dataset numbers them (long utterances dropped)."""
    from evalkit import registry
    return Path(registry.get("rnnt").open_dataset(dataset).utterances[index]["wav"])


def tree_digest(d: Path) -> dict[str, str]:
    return {str(f.relative_to(d)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(Path(d).rglob("*")) if f.is_file()}


# ------------------------------------------------------------------ 1. a bad sample file keeps its name

def test_truncated_sample_file_is_named_with_its_qsl_idx(rnnt, tmp_path):
    """Was: `error: partition 1: the model failed: KeyError: 1` (the loader's error swallowed inside
    LoadGen's load callback, then the store's KeyError when the sample was issued). The user's case;
    whichever layer refuses the file (the dataset's own checks, or the core while LoadGen loads), the
    line names the file and the global qsl_idx."""
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(rnnt / "dataset"), str(data)], check=True)
    bad = wav_of(data, 3)  # partition 1 of 2 holds global 2..3: the error must give the global index
    bad.write_bytes(bad.read_bytes()[:30])
    log = tmp_path / "run"
    cp = evalkit("run", "rnnt", "--dataset", data, "--model_path", rnnt / "model", "--log_path", log,
                 "--threads", "1", "--n_partitions", 2, "--partition_offset", 1)
    line = one_line_error(cp)
    assert "KeyError" not in cp.stderr and "the model failed" not in line, cp.stderr
    assert re.search(r"\bqsl_idx 3\b", line) and str(bad) in line, line


# The core's part, whatever the dataset checks beforehand: a sample that fails while LoadGen loads it.
LOADER_RAISES = """
import sys
from evalkit.errors import KitError
from speech_recognition.rnnt import benchmark as m
case = sys.argv.pop(1)
load, store_sample = m.LibriSpeech.load, type(m.BENCHMARK).store_sample
def bad_load(self, i):
    if i == 1 and case == "kit_error":
        raise KitError("audio file /data/x.wav is unreadable: no 'data' chunk")
    if i == 1 and case == "value_error":
        raise ValueError("header says 7 channels")
    return load(self, i) if case != "store_sample" or i != 1 else "bad"
def bad_store(self, sample):
    if isinstance(sample, str):
        raise FileNotFoundError(2, "No such file or directory", "/data/x.cache")
    return store_sample(self, sample)
m.LibriSpeech.load = bad_load
type(m.BENCHMARK).store_sample = bad_store
from evalkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("case, says", [
    ("kit_error", "sample qsl_idx 1: audio file /data/x.wav is unreadable: no 'data' chunk"),  # names its file
    ("value_error", "sample qsl_idx 1: ValueError: header says 7 channels"),  # any other exception: wrapped
    ("store_sample", "sample qsl_idx 1 (/data/x.cache): FileNotFoundError: No such file or directory"),
], ids=["kit_error", "value_error", "store_sample"])
def test_a_sample_that_fails_to_load_is_the_partitions_one_line_error(rnnt, tmp_path, case, says):
    log = tmp_path / "run"
    cp = subprocess.run([sys.executable, "-c", LOADER_RAISES, case, *map(str, run_args(rnnt, log))],
                        cwd=ROOT, env=kit_env(), capture_output=True, text=True, timeout=300)
    line = one_line_error(cp)
    assert line == f"error: partition 0: {says}", cp.stderr
    assert "KeyError" not in cp.stderr
    pr = json.loads((log / "0" / "progress.json").read_text())
    assert pr["status"] == "failed" and pr["error"] == line.removeprefix("error: "), pr


# ------------------------------------------------------------------ 2. full or read-only filesystems

@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m"):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(fs: Path, leave: int = 0) -> None:
    """Fill the filesystem of fs, leaving `leave` bytes (whole pages) free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize - leave
    with open(fs / "filler", "wb") as f:
        try:
            f.write(b"\0" * free)
        except OSError:
            pass
    st = os.statvfs(fs)
    assert st.f_bavail * st.f_frsize == leave, (st.f_bavail, leave)


def remount_ro(fs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)


def test_full_filesystem_at_launch_is_one_line_and_keeps_what_was_there(rnnt, tmp_path):
    with tmpfs(tmp_path / "fs") as fs:
        log = fs / "run"
        cp = evalkit(*run_args(rnnt, log, "--n_partitions", 2, "--no_check"))  # partition 0 of 2: complete
        assert cp.returncode == 0, cp.stderr
        before = tree_digest(log)
        fill(fs)
        cp = evalkit(*run_args(rnnt, log, "--n_partitions", 2, "--partition_offset", 1))
        line = one_line_error(cp)
        assert "no space left writing " + str(log) in line and "free some space" in line, line
        assert tree_digest(log) == before, "a full disk at launch lost or changed what was there"
        # the same on a filesystem without a single free page: the run dir is not even creatable
        cp = evalkit(*run_args(rnnt, fs / "new"))
        assert "no space left writing " + str(fs / "new") in one_line_error(cp)


def test_read_only_log_path_is_one_line_naming_it(rnnt, tmp_path):
    with tmpfs(tmp_path / "fs") as fs:
        log = fs / "run"
        cp = evalkit(*run_args(rnnt, log, "--n_partitions", 2, "--no_check"))
        assert cp.returncode == 0, cp.stderr
        before = tree_digest(log)
        remount_ro(fs)
        cp = evalkit(*run_args(rnnt, log, "--n_partitions", 2, "--partition_offset", 1))
        line = one_line_error(cp)
        assert f"{log}" in line and "read-only" in line and "writable LOG_PATH" in line, line
        cp = evalkit(*run_args(rnnt, fs / "new"))  # the run dir cannot even be created
        assert str(fs / "new") in (line := one_line_error(cp)) and "read-only" in line, line
        assert tree_digest(log) == before


def test_full_filesystem_during_gather_keeps_the_old_merged_log(rnnt, tmp_path):
    with tmpfs(tmp_path / "fs") as fs:
        log = fs / "run"
        cp = evalkit(*run_args(rnnt, log))  # runs, gathers and checks: merged log + gather.json exist
        assert cp.returncode == 0, cp.stderr
        merged = log / "merged_mlperf_log_accuracy.json"
        (log / "0" / "worker.log").write_text("make the next gather differ\n")  # not read by gather
        before = tree_digest(log)
        assert merged.exists() and (log / "gather.json").exists()
        # no free page: the new merged log cannot be written at all
        fill(fs)
        cp = evalkit("gather", "--force", log)
        line = one_line_error(cp)
        assert f"no space left writing {merged}" in line and "unchanged" in line, line
        assert tree_digest(log) == before
        # one free page: the new merged log fits and replaces the old, then gather.json cannot be written
        (fs / "filler").unlink()
        fill(fs, leave=os.statvfs(fs).f_frsize)
        cp = evalkit("gather", "--force", log)
        line = one_line_error(cp)
        assert "no space left writing " in line and "unchanged" in line, line
        assert tree_digest(log) == before, "gather left a half-done merge (new log with the old gather.json)"
        assert not list(log.glob("*.bak")) and not list(log.glob(".*.tmp")), sorted(os.listdir(log))
        # read-only: the same, in one line
        (fs / "filler").unlink()
        remount_ro(fs)
        cp = evalkit("gather", "--force", log)
        assert "read-only" in one_line_error(cp)
        assert tree_digest(log) == before


# ------------------------------------------------------------------ 3. a dead worker is not "running"

def wait_for(pred, timeout=120.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def running(log: Path, p: int) -> bool:
    try:
        return json.loads((log / str(p) / "progress.json").read_text())["status"] == "running"
    except (OSError, ValueError):
        return False


def test_status_shows_a_killed_worker_as_failed_at_once_with_its_resume_command(rnnt, tmp_path):
    """Was: `running` until the 10-minute stall limit. The worker is frozen mid-run, the launcher held
    (SIGSTOP) so that it cannot mark the partition itself, then the worker is SIGKILLed: only the owner
    record tells status that it is gone."""
    for attempt in range(3):  # a 2-sample partition may finish before it is caught running: try again
        log = tmp_path / f"run{attempt}"
        proc = subprocess.Popen([sys.executable, "-m", "evalkit",
                                 *map(str, run_args(rnnt, log, "--n_devices", 2, "--batch_size", 1))],
                                cwd=ROOT, env=kit_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pid = None
        try:
            got = wait_for(lambda log=log: (running(log, 1) and any((log / "0" / f).exists() for f in (
                "owner.json", "progress.json", "partition.json")) and worker_of(log, 1))
                or ((log / "1" / "partition.json").exists() or proc.poll() is not None) and "done",
                what="partition 1 running (or done)")
            if got == "done":
                continue  # finished before it was caught running (a loaded machine): try again
            pid = got
            os.kill(pid, signal.SIGSTOP)
            if not running(log, 1):
                continue  # it finished first
            os.kill(proc.pid, signal.SIGSTOP)  # the launcher cannot reap or mark it now
            os.kill(pid, signal.SIGKILL)       # a zombie until the launcher resumes: dead all the same
            wait_for(lambda pid=pid: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                     what="the worker to die")
            t0 = time.time()
            cp = evalkit("status", log)
            took = time.time() - t0
            rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^  p(\d+) .*$", cp.stdout, re.M)}
            assert re.match(rf"  p1\s+failed\s+\d/2  worker pid {pid} on this host is gone$", rows[1]), cp.stdout
            assert re.match(r"  p0\s+(running|complete) ", rows[0]), cp.stdout
            launch = json.loads((log / "run.json").read_text())["launches"]["0-1"]
            assert f"resume partitions 1 with: {launch['command']}" in cp.stdout, cp.stdout
            assert launch["command"].startswith("cd ")
            assert cp.returncode == 4, cp.stdout + cp.stderr
            assert took < 60
            break
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            proc.communicate(timeout=300)
    else:
        pytest.fail("partition 1 finished before it could be caught running, three times")
    assert proc.returncode == 2
    pr = json.loads((log / "1" / "progress.json").read_text())
    assert pr["status"] == "failed" and pr["error"] == "killed by SIGKILL"  # the launcher, resumed, agrees


def test_status_sees_a_reused_pid_as_gone(tmp_path):
    """The owner record's pid is alive but is another process (its start time differs): gone."""
    import socket
    log = tmp_path / "run"
    (log / "0").mkdir(parents=True)
    now = time.time()
    (log / "0" / "progress.json").write_text(json.dumps(
        {"partition": 0, "done": 1, "total": 4, "rate": 0.5, "started": now - 60, "updated": now,
         "status": "running", "model": "rnnt", "n_partitions": 1, "n_count": 4}))
    (log / "0" / "owner.json").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": "1", "started": now - 60}))
    cp = evalkit("status", log)
    assert re.search(rf"^  p0\s+failed\s+1/4  worker pid {os.getpid()} on this host is gone "
                     r"\(the pid now belongs to another process\)$", cp.stdout, re.M), cp.stdout
    assert cp.returncode == 4
    # the same record with this process's real start time: alive, running
    from evalkit.owner import _proc_start
    (log / "0" / "owner.json").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
         "started": now - 60}))
    cp = evalkit("status", log)
    assert re.search(r"^  p0\s+running\s+1/4 ", cp.stdout, re.M) and cp.returncode == 0, cp.stdout


# ------------------------------------------------------------------ 4. one exit code for "needs a resume"

def test_needs_a_resume_has_one_exit_code_in_code_and_readme(tmp_path):
    """The docs gave 4 (exit-code list) and 1 (status section); the code returns 4."""
    from evalkit.errors import KitError, PartitionOwned, Preempted
    # what the code returns: status over a partition preempted by SIGTERM (state kept, needs a resume)
    log = tmp_path / "run"
    (log / "0").mkdir(parents=True)
    (log / "0" / "progress.json").write_text(json.dumps(
        {"partition": 0, "done": 1, "total": 4, "started": 1.0, "updated": 2.0, "status": "preempted",
         "error": "preempted by SIGTERM", "model": "rnnt", "n_partitions": 1, "n_count": 4}))
    cp = evalkit("status", log)
    needs_resume = cp.returncode
    assert needs_resume not in (0, 1, KitError.exit_code, PartitionOwned.exit_code, Preempted.exit_code), cp.stderr
    # the exit-code list (docs/errors.md) and the status section (docs/running.md); lines wrap anywhere
    text = " ".join(" ".join((ROOT / "docs" / f).read_text() for f in ("errors.md", "running.md")).split())
    claims = re.findall(r"(\d+)(?: `status`:| when) some partition needs a resume", text)
    assert claims and set(claims) == {str(needs_resume)}, claims
    listed = re.search(r"Exit codes of `bin/evalkit` \(`python -m evalkit`\) and the scripts: (.*?)\.", text).group(1)
    codes = {int(m.group(1)): m.group(2) for m in re.finditer(r"(\d+) ([^,]+)", listed)}
    assert codes[KitError.exit_code] == "an error" and "another live launch" in codes[PartitionOwned.exit_code]
    assert "preempted" in codes[Preempted.exit_code] and "needs a resume" in codes[needs_resume], codes
    from evalkit import cli
    assert cli.NEEDS_RESUME == needs_resume
