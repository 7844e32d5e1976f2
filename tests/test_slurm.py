"""scripts/slurm/eval.sbatch under a real two-node Slurm cluster on this machine (tests/slurm_cluster.py),
and the bounded rendezvous of the scripts and the kit (evalkit/rendezvous.py)."""
from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

import slurm_cluster
from conftest import ROOT, evalkit, kit_env, one_line_error

MERGED = "merged_mlperf_log_accuracy.json"
SBATCH = "scripts/slurm/eval.sbatch"
UNREACHABLE = "100::1"   # RFC 6666 discard-only prefix: routed nowhere, answered by nobody


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        reason = slurm_cluster.install()
    except RuntimeError as e:
        pytest.fail(str(e))
    if reason:
        pytest.skip(reason)
    cluster = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as e:
        pytest.fail(str(e))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def kit_envs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("envs")
    (d / "resnet").symlink_to(ROOT / ".venv")   # the model env the scripts look for
    return d


def data_args(synth: Path, n: int = 8) -> list[str]:
    return ["--dataset", str(synth / "dataset"), "--model_path", str(synth / "model"), "--batch_size", "4",
            "--n_count", str(n)]


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def readme_lines() -> list[str]:
    """The Slurm section of the docs (it was the README's)."""
    return (ROOT / "docs" / "multinode.md").read_text().splitlines()


# ----------------------------------------------------------------------- under Slurm


def test_dry_run_is_the_readme_output(slurm, kit_envs):
    """The README's command with DRY_RUN=1 under sbatch: the srun line and node 0's torchrun line,
    MASTER_ADDR the first node's NodeAddr (the node names n1/n2 resolve nowhere)."""
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("n1", 1)
    rc, out, _ = slurm.sbatch(["--nodes", "2", SBATCH], ROOT, slurm.env(
        DRY_RUN=1, MODEL="resnet", N_DEVICES=4, DATA="synthetic", LOG_PATH="/shared/runs/resnet-1", ENV_DIR=kit_envs))
    assert rc == 0, out
    srun, trun = out.strip().splitlines()
    assert srun == ("srun --nodes=2 --ntasks-per-node=1 --kill-on-bad-exit=0 bash -c "
                    "NODE_RANK=\\\"\\$SLURM_NODEID\\\"\\ exec\\ \\\"\\$0\\\"\\ \\\"\\$@\\\" "
                    f"{ROOT}/scripts/eval_resnet.sh")
    m = re.search(r"--master-addr (\S+) --master-port (\d+)", trun)
    assert m and m.group(1) == "127.0.0.1", trun
    # The README's example: job 4242 (port 24242), first node's NodeAddr 10.1.0.11, kit in /opt/evalkit.
    shown = trun.replace(str(kit_envs), ".envs").replace(m.group(0), "--master-addr 10.1.0.11 --master-port 24242")
    assert shown in readme_lines(), shown
    assert srun.replace(str(ROOT), "/opt/evalkit") in readme_lines(), srun


def test_dry_run_one_node_is_standalone(slurm, kit_envs):
    rc, out, _ = slurm.sbatch(["--nodes", "1", SBATCH], ROOT, slurm.env(
        DRY_RUN=1, MODEL="resnet", N_DEVICES=2, DATA="synthetic", ENV_DIR=kit_envs))
    assert rc == 0, out
    trun = out.strip().splitlines()[1]
    assert " --nnodes 1 --nproc-per-node 2 --max-restarts 0 --standalone -m evalkit run resnet" in trun, trun


def test_two_nodes_pass_with_the_merged_log_of_one_process(slurm, kit_envs, resnet_synth, tmp_path):
    """sbatch --nodes 2 of the README's command: PASS, merged log byte-identical to one process.
    The node names do not resolve, so this also runs the NodeAddr fix."""
    single = tmp_path / "single"
    evalkit("run", "resnet", *data_args(resnet_synth), "--log_path", single, check=True)
    log = tmp_path / "run"
    rc, out, took = slurm.sbatch(["--nodes", "2", SBATCH, "--", *data_args(resnet_synth)[:-2]], ROOT, slurm.env(
        MODEL="resnet", N_DEVICES=1, N_COUNT=8, DATA="synthetic", LOG_PATH=log, ENV_DIR=kit_envs,
        HF_HUB_OFFLINE=1, INIT_TIMEOUT=60), timeout=240)   # a rendezvous that hangs fails in minutes
    assert rc == 0, out + slurm.logs()
    assert "RESULT: PASS" in out
    assert "rank 0: partition 0 done" in out and "rank 1: partition 1 done" in out, out
    assert (log / MERGED).read_bytes() == (single / MERGED).read_bytes()
    print(f"two-node Slurm job: {took:.1f} s")


def test_unreachable_head_fails_within_init_timeout(slurm, kit_envs, tmp_path):
    """MASTER_ADDR that nothing answers: both nodes give up within INIT_TIMEOUT, one error line each,
    node 1's naming the address (torchrun's store client alone retried to over twice the timeout)."""
    timeout = 10
    rc, out, took = slurm.sbatch(["--nodes", "2", SBATCH], ROOT, slurm.env(
        MODEL="resnet", N_DEVICES=1, DATA="synthetic", LOG_PATH=tmp_path / "r", ENV_DIR=kit_envs,
        MASTER_ADDR=UNREACHABLE, MASTER_PORT=slurm_cluster.free_port(), INIT_TIMEOUT=timeout))
    assert rc != 0, out
    assert "Traceback" not in out, out
    errs = sorted(errors(out))
    assert len(errs) == 2, out
    assert errs[0].startswith(f"error: node 0: 1 of 2 nodes reached the rendezvous at [{UNREACHABLE}]:"), errs
    assert errs[1].startswith(f"error: node 1: cannot reach the rendezvous at [{UNREACHABLE}]:"), errs
    assert all(f"within INIT_TIMEOUT {timeout} s" in e for e in errs), errs
    assert took < timeout + 10, f"{took:.1f} s"   # sbatch's scheduling and the job's start included
    assert not (tmp_path / "r").exists()
    print(f"unreachable head: job ended after {took:.1f} s (INIT_TIMEOUT {timeout})")


def test_model_unset_fails_at_once(slurm, kit_envs):
    env = slurm.env(ENV_DIR=kit_envs)
    env.pop("MODEL", None)
    rc, out, took = slurm.sbatch(["--nodes", "2", SBATCH], ROOT, env)
    assert rc == 2
    assert out.strip() == "error: MODEL is not set (e.g. MODEL=resnet sbatch scripts/slurm/eval.sbatch)"
    assert took < 15


# ----------------------------------------------------------------------- without Slurm


def test_unreachable_head_via_script_is_one_line_within_init_timeout(kit_envs, tmp_path):
    """Node 1 of 2 through scripts/eval_resnet.sh, node 0 never started."""
    port = slurm_cluster.free_port()
    t0 = time.monotonic()
    cp = subprocess.run(["scripts/eval_resnet.sh", "--launcher", "torchrun"], cwd=ROOT, capture_output=True,
                        text=True, timeout=120,
                        env=kit_env(ENV_DIR=kit_envs, NNODES=2, NODE_RANK=1, MASTER_ADDR="127.0.0.1",
                                    MASTER_PORT=port, INIT_TIMEOUT=3, LOG_PATH=tmp_path / "r"))
    took = time.monotonic() - t0
    assert one_line_error(cp) == (f"error: node 1: cannot reach the rendezvous at 127.0.0.1:{port} within "
                                  f"INIT_TIMEOUT 3 s (connection refused); check MASTER_ADDR/MASTER_PORT and "
                                  f"that node 0 started")
    assert took < 3 + 5, took


def test_node_rendezvous_names_missing_and_conflicting_nodes(tmp_path):
    """evalkit.rendezvous on its own: node 0 alone names the missing nodes; a node with another
    NNODES gets node 0's reason."""
    port = slurm_cluster.free_port()

    def node(rank, nnodes, timeout=3):
        return subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "evalkit.rendezvous", "--addr",
                                 "localhost", "--port", str(port), "--nnodes", str(nnodes), "--node_rank",
                                 str(rank), "--timeout", str(timeout)], cwd=ROOT, env=kit_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    head = node(0, 3)
    _, err = head.communicate(timeout=30)
    assert head.returncode == 2 and err.strip() == (
        f"error: node 0: 1 of 3 nodes reached the rendezvous at localhost:{port} within INIT_TIMEOUT 3 s "
        f"(missing node 1, 2); check that every node started and reaches localhost:{port}")
    assert time.monotonic() - t0 < 3 + 3
    head, other = node(0, 2, 20), node(1, 3, 20)
    (_, err0), (_, err1) = head.communicate(timeout=30), other.communicate(timeout=30)
    assert (head.returncode, other.returncode) == (2, 2)
    assert err0.strip() == "error: node 0: node 1 has NNODES=3, node 0 has 2: set the same NNODES on every node"
    assert err1.strip() == (f"error: node 1: node 0 at localhost:{port} ended the rendezvous: node 1 has NNODES=3, "
                            f"node 0 has 2: set the same NNODES on every node")
    head, one = node(0, 2, 20), node(1, 2, 20)
    assert (head.wait(30), one.wait(30)) == (0, 0)


def test_rank_missing_at_the_kit_rendezvous_is_named(resnet_synth, tmp_path):
    """Rank 0 hosting the store (no torchrun agent), rank 1 never comes: one line within --init_timeout."""
    port = slurm_cluster.free_port()
    t0 = time.monotonic()
    cp = evalkit("run", "resnet", *data_args(resnet_synth), "--log_path", tmp_path / "r", "--init_timeout", 3,
                 timeout=120, RANK=0, WORLD_SIZE=2, LOCAL_RANK=0, LOCAL_WORLD_SIZE=1, MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=port, TORCHELASTIC_USE_AGENT_STORE="False")
    assert one_line_error(cp).startswith(f"error: rank 0: 1 of 2 ranks joined the rendezvous at 127.0.0.1:{port} "
                                         f"within --init_timeout 3 s (missing rank 1)")
    assert time.monotonic() - t0 < 60
