"""`make bert` / `make gpt-j` with DATA=synthetic, run as a user runs them in a fresh copy of the repo:
the real build scripts (env from envs/<model>.yml, synthetic data), the real eval scripts, 3 partitions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import fresh_clone, sh


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return fresh_clone(tmp_path_factory.mktemp("clone_language"))


def _build(clone: Path, env_dir: Path, model: str) -> Path:
    """scripts/build_<model>_env.sh DATA=synthetic once: the env (a few minutes the first time) + data."""
    cp = sh(f"scripts/build_{model}_env.sh", clone, ENV_DIR=env_dir, DATA="synthetic")
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert (env_dir / model / "bin" / "python").exists()
    assert (clone / "data" / "synthetic" / model / "dataset").is_dir()
    return clone


@pytest.fixture(scope="module")
def bert_built(clone, env_dir) -> Path:
    return _build(clone, env_dir, "bert")


@pytest.fixture(scope="module")
def gptj_built(clone, env_dir) -> Path:
    return _build(clone, env_dir, "gpt-j")


def _check_run(cp, log: Path, model: str, checker: str, n_count: int, parts: int) -> dict:
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    assert "RESULT: PASS" in cp.stdout and "RESULT: FAIL" not in cp.stdout
    assert sorted(p.name for p in log.iterdir() if p.name.isdigit()) == [str(p) for p in range(parts)]
    ranges = []
    for p in range(parts):
        part = json.loads((log / str(p) / "partition.json").read_text())
        assert part["status"] == "complete" and part["partition"] == p and part["model"] == model
        ranges.append(tuple(part["range"]))
    # the partitions tile [0, n_count) in order, no gap and no overlap
    assert ranges[0][0] == 0 and ranges[-1][1] == n_count
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), ranges
    acc = json.loads((log / "accuracy.json").read_text())
    assert acc["verdict"] == "PASS" and acc["synthetic"] and acc["n_count"] == n_count
    assert acc["checker_name"] == checker and acc["config"]["n_partitions"] == parts
    return acc


def test_make_bert_synthetic_three_devices(bert_built, env_dir, tmp_path):
    log = tmp_path / "bert"
    cp = sh(f"make bert DATA=synthetic N_DEVICES=3 LOG_PATH={log}", bert_built, ENV_DIR=env_dir)
    acc = _check_run(cp, log, "bert", "bert-99", 24, 3)  # 24 = the bert synthetic_n
    assert acc["metrics"]["F1"] == 100.0 and acc["metrics"]["exact_match"] == 100.0
    # the build step is idempotent: env and synthetic data are reused
    cp = sh("scripts/build_bert_env.sh", bert_built, ENV_DIR=env_dir, DATA="synthetic")
    assert cp.returncode == 0 and "up to date" in cp.stderr


def test_make_gptj_synthetic_three_devices(gptj_built, env_dir, tmp_path):
    log = tmp_path / "gptj"
    cp = sh(f"make gpt-j DATA=synthetic N_COUNT=6 N_DEVICES=3 LOG_PATH={log}", gptj_built, ENV_DIR=env_dir)
    acc = _check_run(cp, log, "gpt-j", "gptj-99", 6, 3)
    for k in ("ROUGE1", "ROUGE2", "ROUGEL"):
        assert acc["metrics"][k] == 100.0, acc["metrics"]
    assert acc["metrics"]["GEN_NUM"] == 6


def test_gptj_eval_script_bad_count_fails(gptj_built, env_dir, tmp_path):
    cp = sh(f"DATA=synthetic LOG_PATH={tmp_path / 'r'} scripts/eval_gpt-j.sh --n_count 100000", gptj_built,
            ENV_DIR=env_dir)
    assert cp.returncode == 2 and "error: --n_count 100000 is outside" in cp.stderr
