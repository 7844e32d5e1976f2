"""Multi-node runs with real torchrun processes on 127.0.0.1, worker deaths, resume,
the Slurm script's command line, and rendezvous failures."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from s3server import free_port
from conftest import ROOT, evalkit, kit_env, one_line_error, worker_pid

MERGED = "merged_mlperf_log_accuracy.json"
TORCHRUN = ROOT / ".venv" / "bin" / "torchrun"


def data_args(synth: Path, n: int) -> list[str]:
    return ["--dataset", str(synth / "dataset"), "--model_path", str(synth / "model"),
            "--batch_size", "4", "--n_count", str(n)]


def torchrun(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([str(TORCHRUN), "--max-restarts", "0", *map(str, args)], cwd=ROOT, env=kit_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout=300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def errors(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if l.startswith("error:")]


@pytest.fixture(scope="module")
def baseline(resnet_synth, tmp_path_factory):
    """Merged logs of uninterrupted single-process runs, n=8 and n=24."""
    out = {}
    for n in (8, 24):
        log = tmp_path_factory.mktemp("baseline") / f"n{n}"
        evalkit("run", "resnet", *data_args(resnet_synth, n), "--log_path", log, check=True)
        out[n] = (log / MERGED).read_bytes()
    return out


def resume_cmd(err_line: str) -> str:
    m = re.search(r"resume the failed ones with: (.*?)(   \(on every node.*)?$", err_line)
    assert m, err_line
    return m.group(1)


# ----------------------------------------------------------------------- torchrun


def test_torchrun_one_node_two_processes(resnet_synth, baseline, tmp_path):
    log = tmp_path / "run"
    rc, out, err = finish(torchrun("--nnodes", 1, "--nproc-per-node", 2, "--rdzv-backend", "c10d",
                                   "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "evalkit", "run", "resnet",
                                   *data_args(resnet_synth, 8), "--log_path", log))
    assert rc == 0, err
    assert "RESULT: PASS" in out
    assert "rank 0: partition 0 done" in err and "rank 1: partition 1 done" in err
    assert (log / MERGED).read_bytes() == baseline[8]
    assert not list(log.glob(".*incoming*")), "shared filesystem: nothing was transferred"


def test_torchrun_two_nodes_without_shared_filesystem(resnet_synth, baseline, tmp_path):
    port = free_port()
    node = [tmp_path / "node0", tmp_path / "node1"]
    procs = [torchrun("--nnodes", 2, "--node_rank", r, "--nproc-per-node", 1, "--master_addr", "127.0.0.1",
                      "--master_port", port, "-m", "evalkit", "run", "resnet", *data_args(resnet_synth, 8),
                      "--log_path", node[r]) for r in (1, 0)]
    (rc1, _, err1), (rc0, out0, err0) = [finish(p) for p in procs]
    assert (rc0, rc1) == (0, 0), err0 + err1
    assert "RESULT: PASS" in out0
    # node 1's partition was sent to node 0 complete, with its manifest
    assert json.loads((node[0] / "1" / "partition.json").read_text())["partition"] == 1
    assert (node[0] / "1" / "mlperf_log_accuracy.json").read_bytes() == \
        (node[1] / "1" / "mlperf_log_accuracy.json").read_bytes()
    assert not (node[1] / "0").exists()
    assert (node[0] / MERGED).read_bytes() == baseline[8]


def test_torchrun_worker_killed_then_script_resume(resnet_synth, baseline, tmp_path):
    """scripts/eval_resnet.sh --launcher torchrun: rank 1's worker is SIGKILLed, rank 0 finishes,
    the command fails naming partition 1 and the command that resumes it; that command reruns
    only partition 1 and the merged log equals the uninterrupted run's."""
    env_dir = tmp_path / "envs"
    env_dir.mkdir()
    (env_dir / "resnet").symlink_to(ROOT / ".venv")  # the model env the script looks for
    log = tmp_path / "run"
    env = kit_env(ENV_DIR=env_dir, LOG_PATH=log, N_DEVICES=2, N_COUNT=24)
    cmd = ["scripts/eval_resnet.sh", "--launcher", "torchrun", "--",
           "--dataset", str(resnet_synth / "dataset"), "--model_path", str(resnet_synth / "model"),
           "--batch_size", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(worker_pid(log, 1), signal.SIGKILL)
    rc, _, err = finish(proc)
    assert rc != 0
    errs = errors(err)
    assert len(errs) == 1, err
    assert "partition 1 (rank 1)" in errs[0] and "killed by SIGKILL" in errs[0]
    assert (log / "0" / "partition.json").exists() and not (log / "1" / "partition.json").exists()
    again = resume_cmd(errs[0])
    assert "scripts/eval_resnet.sh --launcher torchrun" in again and f"LOG_PATH={log}" in again
    mtime0 = (log / "0" / "mlperf_log_accuracy.json").stat().st_mtime_ns
    cp = subprocess.run(["bash", "-c", again], cwd=ROOT, env=kit_env(), capture_output=True, text=True,
                        timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert "rank 0: partition 0 skipped" in cp.stderr and "rank 1: partition 1 done" in cp.stderr
    assert (log / "0" / "mlperf_log_accuracy.json").stat().st_mtime_ns == mtime0
    assert (log / MERGED).read_bytes() == baseline[24]


def test_dead_rank_on_another_node_does_not_hang_rank_0(resnet_synth, tmp_path):
    """Node 1's rank process is SIGKILLed mid-run: node 0 finishes its partition, declares rank 1
    dead after --dist_timeout and exits non-zero naming partition 1 and the resume command."""
    port = free_port()
    node = [tmp_path / "node0", tmp_path / "node1"]
    procs = [torchrun("--nnodes", 2, "--node_rank", r, "--nproc-per-node", 1, "--master_addr", "127.0.0.1",
                      "--master_port", port, "-m", "evalkit", "run", "resnet", *data_args(resnet_synth, 24),
                      "--batch_size", 2, "--dist_timeout", 5, "--log_path", node[r]) for r in (1, 0)]
    rank1 = int(Path(f"/proc/{worker_pid(node[1], 1)}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(rank1, signal.SIGKILL)  # the rank process itself, the worker's parent
    t0 = time.time()
    (rc1, _, _), (rc0, _, err0) = [finish(p) for p in procs]
    assert rc1 != 0 and rc0 != 0, err0  # torchrun exits 1 when a rank exits non-zero
    assert time.time() - t0 < 120
    (line,) = errors(err0)
    assert "partition 1 (rank 1): rank 1 stopped responding" in line and "--dist_timeout 5" in line
    assert (node[0] / "0" / "partition.json").exists()
    assert "--log_path" in resume_cmd(line) and "--node_rank 0" in resume_cmd(line)


def test_unreachable_rendezvous_fails_in_bounded_time(resnet_synth, tmp_path):
    """A rank whose rendezvous store never answers: one error line within the init timeout."""
    t0 = time.time()
    cp = evalkit("run", "resnet", *data_args(resnet_synth, 8), "--log_path", tmp_path / "r",
                 "--init_timeout", 3, timeout=120, RANK=1, WORLD_SIZE=2, LOCAL_RANK=0, LOCAL_WORLD_SIZE=1,
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port(), TORCHELASTIC_USE_AGENT_STORE="True")
    err = one_line_error(cp)
    assert "rank 1: cannot reach the rendezvous at 127.0.0.1" in err and "--init_timeout 3" in err
    assert time.time() - t0 < 90
    assert not (tmp_path / "r").exists()


def test_torchrun_rejects_n_devices(resnet_synth, tmp_path):
    cp = finish(torchrun("--standalone", "--nproc-per-node", 1, "-m", "evalkit", "run", "resnet",
                         *data_args(resnet_synth, 8), "--n_devices", 2, "--log_path", tmp_path / "r"))
    rc, _, err = cp
    assert rc != 0
    assert any("--n_devices 2 does not apply under torchrun" in e for e in errors(err)), err


# ----------------------------------------------------------------------- local launcher


def test_sigkill_of_one_worker_then_resume_is_byte_identical(resnet_synth, baseline, tmp_path):
    log = tmp_path / "run"
    args = ["run", "resnet", "--dataset", str(resnet_synth / "dataset"), "--model_path",
            str(resnet_synth / "model"), "--batch_size", "2", "--n_count", "24", "--n_devices", "2",
            "--log_path", str(log)]
    proc = subprocess.Popen([os.sys.executable, "-m", "evalkit", *args], cwd=ROOT, env=kit_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.kill(worker_pid(log, 1), signal.SIGKILL)
    rc, _, err = finish(proc)
    assert rc == 2, err
    (line,) = errors(err)
    assert "1 of 2 partitions failed: partition 1 (killed by SIGKILL)" in line
    assert (log / "0" / "partition.json").exists(), "the other worker finished its partition"
    assert not (log / "1" / "partition.json").exists()
    again = resume_cmd(line)
    cd, _, rest = again.partition(" && ")  # pasted from anywhere it goes to the launch dir first
    assert cd == f"cd {shlex.quote(str(ROOT))}" and shlex.split(rest)[2:] == ["-m", "evalkit", *args]
    mtime0 = (log / "0" / "mlperf_log_accuracy.json").stat().st_mtime_ns
    cp = subprocess.run(["bash", "-c", again], cwd="/", env=kit_env(), capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert "skipped" in (log / "0" / "worker.log").read_text().splitlines()[-1]
    assert (log / "0" / "mlperf_log_accuracy.json").stat().st_mtime_ns == mtime0
    assert (log / MERGED).read_bytes() == baseline[24]


# ----------------------------------------------------------------------- Slurm (more: test_slurm.py)


def test_slurm_script_outside_slurm_is_one_error(tmp_path):
    cp = subprocess.run(["bash", str(ROOT / "scripts" / "slurm" / "eval.sbatch")], cwd=ROOT, capture_output=True,
                        text=True, env=kit_env(MODEL="resnet"))
    assert cp.returncode == 2 and cp.stderr.strip() == \
        "error: SLURM_NNODES is not set: submit this file with sbatch"
