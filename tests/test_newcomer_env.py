"""Which Python runs the kit (issue 18 items 8, 9): bin/evalkit picks the env of the command's
model from any directory, `python -m evalkit` in a Python without the kit's modules is one line
and exit 2 (1 means a scored FAIL only), and `make targets` needs no developer env.

The envs here are stand-ins: a bin/python that says which env it is, then runs this test's
Python (or that Python without site-packages, an env that lacks numpy).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, fresh_clone, kit_env, sh


def fake_env(d: Path, name: str, *py_args: str) -> Path:
    (d / "bin").mkdir(parents=True)
    py = d / "bin" / "python"
    py.write_text(f"#!/usr/bin/env bash\necho 'env={name}' >&2\nexec {sys.executable} {' '.join(py_args)} \"$@\"\n")
    py.chmod(0o755)
    return d


def evalkit_from(cwd: Path, kit: Path, *args, **env) -> subprocess.CompletedProcess:
    """`<kit>/bin/evalkit ARGS` typed in another directory, by a user with no PYTHONPATH."""
    return sh(" ".join([str(kit / "bin" / "evalkit"), *map(str, args)]), cwd, **env)


def picked(cp) -> list[str]:
    return [ln[4:] for ln in cp.stderr.splitlines() if ln.startswith("env=")]


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """A fresh copy with stand-ins for .envs/resnet and .envs/bert, no .venv."""
    c = fresh_clone(tmp_path_factory.mktemp("kit"))
    fake_env(c / ".envs" / "resnet", "resnet")
    fake_env(c / ".envs" / "bert", "bert")
    return c


@pytest.fixture(scope="module")
def run(kit, resnet_synth, tmp_path_factory) -> Path:
    """A finished 4-sample ResNet50 run, launched through bin/evalkit from outside the kit."""
    out = tmp_path_factory.mktemp("run") / "r"
    cp = evalkit_from(out.parent, kit, "run", "resnet", "--dataset", resnet_synth / "dataset",
                      "--model_path", resnet_synth / "model", "--n_count", 4, "--log_path", out,
                      "--batch_size", 4, "--threads", 1)
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
    assert picked(cp)[0] == "resnet"  # the model named on the command line
    return out


def test_bin_evalkit_check_picks_the_runs_env_from_any_cwd(kit, run, tmp_path):
    cp = evalkit_from(tmp_path, kit, "check", run)
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr[-2000:]
    assert picked(cp) == ["resnet"]  # from the run dir's gather.json
    # a relative run dir, and a run dir whose only record is a partition's manifest
    cp = evalkit_from(run.parent, kit, "status", run.name)
    assert cp.returncode == 0 and picked(cp) == ["resnet"], cp.stderr[-2000:]
    part = tmp_path / "parts"
    (part / "0").mkdir(parents=True)
    (part / "0" / "partition.json").write_text((run / "0" / "partition.json").read_text())
    cp = evalkit_from(tmp_path, kit, "status", part)
    assert picked(cp) == ["resnet"], cp.stderr[-2000:]


def test_bin_evalkit_falls_back_to_venv_then_any_env_then_one_line(kit, tmp_path):
    c = fresh_clone(tmp_path / "k")
    fake_env(c / ".envs" / "bert", "bert")
    fake_env(c / ".venv", "venv")
    cp = evalkit_from(tmp_path, c, "info", "resnet")  # no resnet env: the developer env
    assert cp.returncode == 0 and picked(cp) == ["venv"] and '"name": "resnet"' in cp.stdout, cp.stderr
    cp = evalkit_from(tmp_path, c, "info", "bert")
    assert picked(cp) == ["bert"]
    (c / ".venv" / "bin" / "python").unlink()
    cp = evalkit_from(tmp_path, c, "targets")
    assert cp.returncode == 0 and picked(cp) == ["bert"] and "resnet" in cp.stdout
    # ENV_DIR moves .envs, as for the scripts; with no env at all: one line saying how to build one
    cp = evalkit_from(tmp_path, c, "check", tmp_path, ENV_DIR=tmp_path / "none")
    assert cp.returncode == 2 and cp.stderr.startswith("error: no kit env yet") and "make dev" in cp.stderr
    assert len(cp.stderr.splitlines()) == 1, cp.stderr


def test_a_python_without_the_kits_modules_is_one_line_and_exit_2(tmp_path, kit):
    # -S: no site-packages, so no numpy, as in a bare system Python
    cp = subprocess.run([sys.executable, "-S", "-m", "evalkit", "check", "x"], cwd=tmp_path, env=kit_env(),
                        capture_output=True, text=True)
    assert cp.returncode == 2, (cp.returncode, cp.stderr)
    assert cp.stderr == (f"error: this Python ({sys.executable}) lacks numpy: use {ROOT}/bin/evalkit, "
                         f"which picks the kit's env\n")
    # an env picked by bin/evalkit that lacks a module says how to build the model's env instead
    c = fresh_clone(tmp_path / "k")
    fake_env(c / ".envs" / "resnet", "resnet", "-S")
    cp = evalkit_from(tmp_path, c, "info", "resnet")
    assert cp.returncode == 2 and "Traceback" not in cp.stderr
    err = cp.stderr.splitlines()[-1]
    assert err.startswith(f"error: the env {c}/.envs/resnet (picked by bin/evalkit) lacks numpy: build ")
    assert f"cd {c} && DATA=synthetic scripts/build_resnet_env.sh" in err and "make dev" in err


def test_an_unexpected_exception_is_a_traceback_and_exit_2(tmp_path):
    code = ("import runpy, evalkit.cli\n"
            "def boom(argv=None):\n    raise ZeroDivisionError('a bug')\n"
            "evalkit.cli.main = boom\n"
            "runpy.run_module('evalkit', run_name='__main__')\n")
    cp = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=kit_env(), capture_output=True, text=True)
    assert cp.returncode == 2 and "Traceback" in cp.stderr and "ZeroDivisionError: a bug" in cp.stderr


def test_make_targets_needs_no_developer_env(tmp_path):
    c = fresh_clone(tmp_path / "k")
    envs = tmp_path / "envs"
    fake_env(envs / "resnet", "resnet")
    cp = sh("make targets", c, ENV_DIR=envs)
    assert cp.returncode == 0, cp.stderr
    assert picked(cp) == ["resnet"] and "resnet" in cp.stdout and "gptj-99" in cp.stdout
    assert not (c / ".venv").exists() and not os.path.exists(c / ".envs")
