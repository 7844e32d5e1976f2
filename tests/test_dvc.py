"""Data, checkpoints and verified logs through real DVC against a real S3 server.

moto_server runs on 127.0.0.1 with auth on (tests/s3server.py); every command
runs as a user runs it (make targets, build script) in a fresh clone of the
repo, with the dev env's dvc on PATH and the server's key in AWS_* env vars.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

import s3server
from conftest import fresh_clone

DEV_BIN = Path(sys.executable).parent  # dvc and moto_server of the dev env
POINTERS = ("data/dataset/resnet.dvc", "data/models/resnet.dvc")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = s3server.start(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def synth8(synthetic) -> Path:
    """The 8-image synthetic ResNet50 set of the contract test and test_make.py (made once per session):
    only read here, as the source of data_add_resnet and the bytes a pull must give back."""
    return synthetic("resnet", 8)


def user(cmd: str, cwd: Path, s3=None, creds: dict | None = None, timeout=900, **env) -> subprocess.CompletedProcess:
    """A user's shell: dev env's dvc on PATH, AWS credentials only as given, never the caller's ~/.aws."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "PYTHONPATH"}
    e.update({"PATH": f"{DEV_BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
              "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
              "AWS_EC2_METADATA_DISABLED": "true"})
    if creds is None and s3 is not None:
        creds = s3.creds
    e.update(creds or {})
    e.update({k: str(v) for k, v in env.items()})
    cp = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)
    if s3 is not None:  # credentials never reach a message
        for secret in (s3.secret, s3.key_id, (creds or {}).get("AWS_SECRET_ACCESS_KEY")):
            if secret:
                assert secret not in cp.stdout + cp.stderr, cmd
    return cp


def one_error(cp) -> str:
    assert cp.returncode != 0, (cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr, cp.stderr
    errs = [ln for ln in cp.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, cp.stderr
    return errs[0]


def tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).rglob("*")) if p.is_file()}


def clone(base: Path, s3, prefix: str, pointers_from: Path | None = None, endpoint: str | None = None) -> Path:
    """A fresh clone (git repo) whose remote is s3://BUCKET/PREFIX; optionally with another clone's pointers,
    as if they were committed there and pulled here."""
    c = fresh_clone(base)
    subprocess.run(["git", "init", "-q"], cwd=c, check=True)
    cp = user(f"{sys.executable} -m evalkit data remote s3://{s3server.BUCKET}/{prefix} "
              f"--endpoint {endpoint or s3.endpoint}", c, s3)
    assert cp.returncode == 0, cp.stderr
    if pointers_from is not None:
        for rel in POINTERS + ("logs/internal/resnet.dvc",):
            if (pointers_from / rel).exists():
                (c / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pointers_from / rel, c / rel)
    return c


@pytest.fixture(scope="module")
def imported(s3, synth8, env_dir, tmp_path_factory) -> Path:
    """Clone A: `make data_add_resnet` validated, laid out, dvc-added and pushed the synthetic set."""
    a = clone(tmp_path_factory.mktemp("a"), s3, "store")
    cp = user(f"make data_add_resnet SRC={synth8 / 'dataset'} MODEL_SRC={synth8 / 'model'}", a, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    assert "git add data/dataset/resnet.dvc data/models/resnet.dvc" in cp.stdout
    return a


def test_import_push_wipe_pull_is_byte_identical(imported, s3, synth8, env_dir):
    a = imported
    # pointers are for git, the data they point to is not
    for p in POINTERS:
        assert subprocess.run(["git", "check-ignore", "-q", p], cwd=a).returncode == 1, f"{p} is git-ignored"
    assert subprocess.run(["git", "check-ignore", "-q", "data/dataset/resnet/val_map.txt"], cwd=a).returncode == 0
    for d in (".dvc/cache", "data/dataset/resnet", "data/models/resnet"):
        shutil.rmtree(a / d)
    cp = user("scripts/build_resnet_env.sh", a, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert tree(a / "data/dataset/resnet") == tree(synth8 / "dataset")
    assert tree(a / "data/models/resnet") == tree(synth8 / "model")
    # present -> a no-op that does not even contact the remote
    cp = user("scripts/build_resnet_env.sh", a, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0 and "already present" in cp.stderr, cp.stderr


def test_pull_needs_no_remote_when_present(imported, s3, env_dir):
    a = imported
    cp = user(f"dvc remote modify --local mlperf-data endpointurl http://127.0.0.1:{s3server.free_port()}", a, s3)
    assert cp.returncode == 0, cp.stderr
    try:
        cp = user("scripts/build_resnet_env.sh", a, s3, ENV_DIR=env_dir)
        assert cp.returncode == 0 and "already present" in cp.stderr, cp.stderr
    finally:
        (a / ".dvc" / "config.local").unlink()


def test_second_clone_pulls_the_same_bytes(imported, s3, env_dir, tmp_path, synth8):
    b = clone(tmp_path / "b", s3, "store", pointers_from=imported)
    cp = user("scripts/build_resnet_env.sh", b, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert tree(b / "data/models/resnet") == tree(synth8 / "model")


@pytest.fixture(scope="module")
def good_run(imported, s3, env_dir, tmp_path_factory) -> Path:
    """A PASSing `make resnet` run of the imported set in clone A, made once: published by one test, copied
    and shifted into a FAIL by another."""
    run = tmp_path_factory.mktemp("good_run") / "run"
    cp = user(f"make resnet N_DEVICES=2 BATCH_SIZE=4 LOG_PATH={run}", imported, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr[-3000:]
    return run


def test_publish_log_then_log_in_a_second_clone(imported, good_run, s3, env_dir, tmp_path):
    a, run = imported, good_run
    # synthetic runs are not verified logs unless asked for
    err = one_error(user(f"make publish_log_resnet RUN={run}", a, s3, ENV_DIR=env_dir))
    assert "synthetic" in err and "ALLOW_SYNTHETIC=1" in err
    assert not (a / "logs/internal/resnet.dvc").exists()
    cp = user(f"make publish_log_resnet RUN={run} ALLOW_SYNTHETIC=1", a, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert "git add logs/internal/resnet.dvc" in cp.stdout
    assert subprocess.run(["git", "check-ignore", "-q", "logs/internal/resnet.dvc"], cwd=a).returncode == 1
    assert subprocess.run(["git", "check-ignore", "-q", "logs/internal/resnet/accuracy.json"], cwd=a).returncode == 0
    published = tree(a / "logs/internal/resnet")
    for f in ("accuracy.json", "accuracy.txt", "gather.json", "merged_mlperf_log_accuracy.json",
              "0/partition.json", "0/user.conf", "0/mlperf_log_accuracy.json", "1/mlperf_log_detail.txt"):
        assert f in published, f
    assert published["accuracy.json"] == tree(run)["accuracy.json"]

    c = clone(tmp_path / "c", s3, "store", pointers_from=a)
    cp = user("make log_resnet", c, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert tree(c / "logs/internal/resnet") == published

    cp = user(f"make compare_resnet RUN={run}", c, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr
    row = next(ln.split() for ln in cp.stdout.splitlines() if ln.startswith("acc "))
    assert row[1:4] == ["100", "100", "+0"]


def _failing_copy(run: Path, dst: Path) -> Path:
    """The same run with every qsl_idx shifted by one: check scores it FAIL."""
    from evalkit.accuracy_log import iter_entries

    from conftest import rewrite_merged

    shutil.copytree(run, dst)
    n = len(list(iter_entries(dst / "merged_mlperf_log_accuracy.json")))
    rewrite_merged(dst, lambda e: {"seq_id": e["seq_id"], "qsl_idx": (e["qsl_idx"] + 1) % n, "data": e["data"]})
    return dst


def test_publish_refuses_failing_and_partial_runs(imported, good_run, s3, env_dir, tmp_path):
    a = imported
    bad = _failing_copy(good_run, tmp_path / "bad")
    cp = user(f"{sys.executable} -m evalkit check {bad}", a, s3)
    assert cp.returncode == 1 and "RESULT: FAIL" in cp.stdout
    before = (a / "logs/internal/resnet.dvc").read_text() if (a / "logs/internal/resnet.dvc").exists() else None
    err = one_error(user(f"make publish_log_resnet RUN={bad} ALLOW_SYNTHETIC=1", a, s3, ENV_DIR=env_dir))
    assert "did not PASS" in err
    partial = tmp_path / "partial"
    cp = user(f"make resnet N_COUNT=4 LOG_PATH={partial}", a, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-2000:]
    err = one_error(user(f"make publish_log_resnet RUN={partial} ALLOW_SYNTHETIC=1", a, s3, ENV_DIR=env_dir))
    assert "4 of 8" in err and "ALLOW_PARTIAL=1" in err
    after = (a / "logs/internal/resnet.dvc").read_text() if (a / "logs/internal/resnet.dvc").exists() else None
    assert before == after, "a refused publish must not touch the pointer"


# --------------------------------------------------------------------------------- failures

def _pull_clone(imported, s3, tmp_path, **kw) -> Path:
    return clone(tmp_path / "x", s3, "store", pointers_from=imported, **kw)


def _no_data(c: Path) -> None:
    for d in ("data/dataset/resnet", "data/models/resnet"):
        assert not (c / d).exists(), f"{d} left behind by a failed pull"


def test_server_down_fails_in_one_line_without_hanging(imported, s3, env_dir, tmp_path):
    """A dead endpoint is one line naming the remote and ENDPOINT. What keeps it short is the remote's
    connect_timeout and botocore's 2 attempts (about 6 s of dvc alone, measured); the 300 s guard only
    catches a pull that retries without end, it is not a speed goal."""
    c = _pull_clone(imported, s3, tmp_path, endpoint=f"http://127.0.0.1:{s3server.free_port()}")
    assert "connect_timeout = 3" in (c / ".dvc" / "config").read_text()
    err = one_error(user("scripts/build_resnet_env.sh", c, s3, ENV_DIR=env_dir, timeout=300))
    assert "cannot reach remote 'mlperf-data'" in err and "ENDPOINT" in err
    _no_data(c)


def test_no_credentials(imported, s3, env_dir, tmp_path):
    c = _pull_clone(imported, s3, tmp_path)
    err = one_error(user("scripts/build_resnet_env.sh", c, s3, creds={}, ENV_DIR=env_dir))
    assert "no AWS credentials" in err and "AWS_ACCESS_KEY_ID" in err
    _no_data(c)


def test_wrong_credentials(imported, s3, env_dir, tmp_path):
    c = _pull_clone(imported, s3, tmp_path)
    wrong = {"AWS_ACCESS_KEY_ID": s3.key_id, "AWS_SECRET_ACCESS_KEY": "not-the-secret-0123456789",
             "AWS_DEFAULT_REGION": "us-east-1"}
    err = one_error(user("scripts/build_resnet_env.sh", c, s3, creds=wrong, ENV_DIR=env_dir))
    assert "rejected the AWS credentials" in err
    log = (c / ".dvc/tmp/evalkit-dvc.log").read_text()
    assert "403" in log or "Forbidden" in log or "Signature" in log
    assert "not-the-secret" not in log and s3.key_id not in log
    _no_data(c)


def test_missing_object_in_remote(imported, s3, env_dir, tmp_path):
    """A push that never finished (the biggest object and the dir manifests, which DVC uploads
    last, are not in the bucket): the pull names the command that pushes them again, which works."""
    c = _pull_clone(imported, s3, tmp_path)
    cl = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                      aws_access_key_id=s3.key_id, aws_secret_access_key=s3.secret)
    objs = cl.list_objects_v2(Bucket=s3server.BUCKET, Prefix="store/")["Contents"]
    gone = [max(objs, key=lambda o: o["Size"])["Key"]] + [o["Key"] for o in objs if o["Key"].endswith(".dir")]
    for k in gone:
        cl.copy_object(Bucket=s3server.BUCKET, Key=k + ".saved", CopySource={"Bucket": s3server.BUCKET, "Key": k})
        cl.delete_object(Bucket=s3server.BUCKET, Key=k)
    try:
        err = one_error(user("scripts/build_resnet_env.sh", c, s3, ENV_DIR=env_dir))
        assert "missing from remote 'mlperf-data'" in err
        _no_data(c)
        # the fix it names, pasted at the root of the clone that added the data, pushes them again
        fix = re.search(r"where they were added: `([^`]+)`", err).group(1)
        assert fix == "make data_add_resnet SRC=data/dataset/resnet MODEL_SRC=data/models/resnet"
        cp = user(fix, imported, s3, ENV_DIR=env_dir)
        assert cp.returncode == 0, cp.stderr[-2000:]
        cp = user("scripts/build_resnet_env.sh", c, s3, ENV_DIR=env_dir)
        assert cp.returncode == 0, cp.stderr[-2000:]
    finally:
        for k in gone:
            cl.copy_object(Bucket=s3server.BUCKET, Key=k, CopySource={"Bucket": s3server.BUCKET, "Key": k + ".saved"})
            cl.delete_object(Bucket=s3server.BUCKET, Key=k + ".saved")


def test_interrupted_pull_completes_on_rerun(imported, s3, env_dir, tmp_path, synth8):
    c = _pull_clone(imported, s3, tmp_path)
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    e.update(s3.creds, PATH=f"{DEV_BIN}{os.pathsep}{os.environ['PATH']}", ENV_DIR=str(env_dir),
             AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent")
    proc = subprocess.Popen(["scripts/build_resnet_env.sh"], cwd=c, env=e, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = c / ".dvc" / "cache"
    deadline = time.monotonic() + 120
    while not cache.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group, as a lost terminal would: script, python, dvc
    proc.wait()
    ckpt = c / "data/models/resnet/resnet50.pth"
    if ckpt.exists():  # an interrupted pull may leave nothing, never a short checkpoint
        assert ckpt.read_bytes() == (synth8 / "model/resnet50.pth").read_bytes()
    cp = user("scripts/build_resnet_env.sh", c, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert tree(c / "data/dataset/resnet") == tree(synth8 / "dataset")
    assert tree(c / "data/models/resnet") == tree(synth8 / "model")


def test_model_without_pointer_says_which_command_creates_it(s3, env_dir, tmp_path):
    c = clone(tmp_path / "np", s3, "store")
    err = one_error(user("scripts/build_resnet_env.sh", c, s3, ENV_DIR=env_dir))
    assert "data/dataset/resnet.dvc" in err and "make data_add_resnet SRC=" in err
    err = one_error(user("make log_resnet", c, s3, ENV_DIR=env_dir))
    assert "make publish_log_resnet RUN=" in err


def test_remote_not_set_and_bad_source_are_refused_before_anything_is_written(s3, synth8, env_dir, tmp_path):
    c = fresh_clone(tmp_path / "u")
    subprocess.run(["git", "init", "-q"], cwd=c, check=True)
    add = f"make data_add_resnet SRC={synth8 / 'dataset'} MODEL_SRC={synth8 / 'model'}"
    err = one_error(user(add, c, s3, ENV_DIR=env_dir))
    # the command it suggests works pasted from anywhere, also for a non-S3 URL (the shipped
    # S3-only options go), and then the import goes through
    fix = re.search(r"`(cd \S+ && make remote URL=\S+)`", err).group(1)
    store = tmp_path / "local-remote"
    cp = user(fix.replace("s3://YOUR-BUCKET/PREFIX", str(store)), tmp_path, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = user(add, c, s3, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert any(store.rglob("*")), "nothing pushed to the local remote"
    broken = tmp_path / "broken"
    shutil.copytree(synth8 / "dataset", broken)
    victim = (broken / "val_map.txt").read_text().split()[10]  # the 6th image
    (broken / victim).unlink()
    c = clone(tmp_path / "v", s3, "store")
    err = one_error(user(f"make data_add_resnet SRC={broken} MODEL_SRC={synth8 / 'model'}", c, s3, ENV_DIR=env_dir))
    assert victim in err
    assert not (c / "data/dataset/resnet").exists() and not (c / "data/dataset/resnet.dvc").exists()


def test_dev_spec_installs_in_two_steps():
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(root / "scripts/lib/envspec.py"), "pip", str(root / "envs/dev.yml")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == 2 and "dvc[s3]==" in out[0] and "moto" not in out[0]
    assert out[1].startswith("moto[server]==") and "boto3==" in out[1]
