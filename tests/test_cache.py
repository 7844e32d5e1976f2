"""Response cache: a real `evalkit run` process is SIGKILLed mid-partition; the rerun answers
the cached samples without the model, repairs a torn tail, refuses another config's cache,
and its merged log equals an uninterrupted run's byte for byte."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, evalkit, kit_env, one_line_error
from evalkit.cache import CACHE_FILE, ResponseCache

MERGED = "merged_mlperf_log_accuracy.json"
N = 8  # conftest.SYNTH_N: the gpt-j set the contract test and test_gptj.py use too (made once)


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("gpt-j", N)


def run_args(synth: Path, log: Path, *extra) -> list[str]:
    return ["run", "gpt-j", "--dataset", str(synth / "dataset"), "--model_path", str(synth / "model"),
            "--log_path", str(log), "--threads", "1", "--batch_size", "1", "--n_devices", "1", *extra]


def kill_after_some_samples(args: list[str], log: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", *args], cwd=ROOT, env=kit_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                pr = json.loads((log / "0" / "progress.json").read_text())
            except (OSError, ValueError):
                pr = {}
            if pr.get("status") == "running" and pr.get("done", 0) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_then_rerun_answers_cached_samples_and_log_is_identical(synth, tmp_path):
    base = tmp_path / "base"
    cp = evalkit(*run_args(synth, base))
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    assert not (base / "0" / CACHE_FILE).exists(), "cache is deleted once the manifest is written"
    assert json.loads((base / "0" / "partition.json").read_text())["timings"]["samples_computed"] == N

    log = tmp_path / "killed"
    kill_after_some_samples(run_args(synth, log), log)
    cache_file = log / "0" / CACHE_FILE
    assert not (log / "0" / "partition.json").exists()

    # Another config (a generation option is in the config hash) must not use these answers: refused
    # before it starts, the cache untouched.
    size0 = cache_file.stat().st_size
    other = evalkit(*run_args(synth, log, "--option", "num_beams=1"))
    err = one_line_error(other)
    assert "holds another run" in err and "use a new LOG_PATH" in err
    hashes = [w.strip("(),;") for w in err.split() if len(w.strip("(),;")) == 16]
    assert len(set(hashes)) == 2, err
    assert cache_file.stat().st_size == size0

    # A record torn by the kill: its head and half its payload, the crc cannot match.
    size = cache_file.stat().st_size
    with open(cache_file, "ab") as f:
        f.write(struct.pack("<QII", 9, 400, 12345) + b"\x01" * 100)

    cp = evalkit(*run_args(synth, log))
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    assert f"warning: {cache_file}: dropped 116 bytes" in cp.stderr
    m = json.loads((log / "0" / "partition.json").read_text())["timings"]
    assert m["samples_cached"] >= 2 and m["samples_cached"] + m["samples_computed"] == N
    assert f"{m['samples_cached']} of {N} samples answered from {cache_file}" in cp.stderr
    assert size > 24 and not cache_file.exists()
    pr = json.loads((log / "0" / "progress.json").read_text())
    assert (pr["cached"], pr["computed"], pr["status"]) == (m["samples_cached"], m["samples_computed"], "complete")
    assert (log / MERGED).read_bytes() == (base / MERGED).read_bytes()


def test_torn_tail_is_cut_to_last_whole_record(tmp_path, capsys):
    c = ResponseCache(tmp_path, "0123456789abcdef", 100, 110)
    c.append([(100, b"abc"), (103, b"")])
    c.append([(105, bytes(range(256)))])
    c.close()
    good = (tmp_path / CACHE_FILE).stat().st_size
    with open(tmp_path / CACHE_FILE, "ab") as f:
        f.write(b"\x07" * 11)
    c = ResponseCache(tmp_path, "0123456789abcdef", 100, 110)
    assert sorted(c.index) == [100, 103, 105] and c.get(105) == bytes(range(256)) and c.get(100) == b"abc"
    assert (tmp_path / CACHE_FILE).stat().st_size == good
    assert "dropped 11 bytes" in capsys.readouterr().err
    # a flipped payload byte in the last record: the crc drops that record only
    c.close()
    data = bytearray((tmp_path / CACHE_FILE).read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / CACHE_FILE).write_bytes(bytes(data))
    c = ResponseCache(tmp_path, "0123456789abcdef", 100, 110)
    assert sorted(c.index) == [100, 103]
    c.close()


def test_other_partition_or_garbage_is_refused(tmp_path):
    from evalkit.errors import KitError

    ResponseCache(tmp_path, "0123456789abcdef", 0, 5).close()
    with pytest.raises(KitError, match=r"samples \[0, 5\), this partition is \[5, 10\)"):
        ResponseCache(tmp_path, "0123456789abcdef", 5, 10)
    with pytest.raises(KitError, match="hash 0123456789abcdef, this run fedcba9876543210"):
        ResponseCache(tmp_path, "fedcba9876543210", 0, 5)
    (tmp_path / CACHE_FILE).write_bytes(b"not a cache at all, longer than a header")
    with pytest.raises(KitError, match="not an evalkit response cache"):
        ResponseCache(tmp_path, "0123456789abcdef", 0, 5)
