"""The make targets and shell scripts, run as a user runs them, in a fresh copy of the repo."""
from __future__ import annotations

import json

import pytest

from conftest import ROOT, fresh_clone, sh as user_sh

MODELS = ["resnet", "retinanet", "3d-unet", "bert", "gpt-j", "llama2", "mixtral", "stablediffusion", "dlrm", "rnnt"]
# The synthetic sets here have SYNTH_N (a kit variable, docs/variables.md) = 24 samples: the session's ResNet50
# set (conftest resnet_synth), not a 64-image one of its own that only this file would use (its calibration
# costs a minute). Writing a set through a build script (SYNTH_N unset: the model's synthetic_n) is what
# test_scripts_language.py shows, for BERT and GPT-J.
SYNTH_N = 24


def sh(cmd, cwd, **env):
    """conftest.sh with SYNTH_N=24 in the environment, as if the user had exported it."""
    return user_sh(cmd, cwd, **{"SYNTH_N": SYNTH_N, **env})


def link_synthetic(clone, model: str, synthetic) -> None:
    """clone/data/synthetic/MODEL -> the session's set (MODEL, SYNTH_N, seed 0): what the build step would write
    there; it finds it "already there"."""
    link = clone / "data" / "synthetic" / model
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(synthetic(model, SYNTH_N))


@pytest.fixture(scope="module")
def clone(tmp_path_factory, env_dir, synthetic):
    """A fresh copy whose build step ran once (venv from envs/resnet.yml + the synthetic set, linked)."""
    c = fresh_clone(tmp_path_factory.mktemp("clone"))
    link_synthetic(c, "resnet", synthetic)
    cp = sh("scripts/build_resnet_env.sh", c, ENV_DIR=env_dir, DATA="synthetic")
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert f"synthetic resnet set in {c / 'data' / 'synthetic' / 'resnet'} already there (n={SYNTH_N}" in cp.stderr
    return c


def test_make_help_and_pending_models(clone):
    cp = sh("make help", clone)
    assert cp.returncode == 0 and "make <model>" in cp.stdout and "resnet" in cp.stdout
    pending = [m for m in MODELS if not (ROOT / "scripts" / f"eval_{m}.sh").exists()]
    if pending:
        cp = sh(f"make {pending[0]}", clone)
        assert cp.returncode != 0 and f"model '{pending[0]}' is not in this kit yet" in cp.stderr


def test_make_resnet_synthetic_three_devices(clone, env_dir, tmp_path):
    log = tmp_path / "x"
    cp = sh(f"make resnet DATA=synthetic N_COUNT=24 N_DEVICES=3 LOG_PATH={log}", clone, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    assert "RESULT: PASS" in cp.stdout
    for p in range(3):
        assert (log / str(p) / "partition.json").exists()
    acc = json.loads((log / "accuracy.json").read_text())
    assert acc["n_count"] == 24 and acc["synthetic"] and acc["verdict"] == "PASS"
    # the build step is idempotent: env and synthetic data are reused
    cp = sh("scripts/build_resnet_env.sh", clone, ENV_DIR=env_dir, DATA="synthetic")
    assert cp.returncode == 0 and "up to date" in cp.stderr and "already there" in cp.stderr


def test_make_demo(clone, env_dir, synthetic):
    # BERT's and GPT-J's sets are the session's too (test_status.py runs on the GPT-J one): the demo's build
    # steps find them "already there"; what this test shows is the demo's chain of targets
    for model in ("bert", "gpt-j"):
        link_synthetic(clone, model, synthetic)
    cp = sh("make demo", clone, ENV_DIR=env_dir, timeout=2400)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    for model in ("resnet", "bert", "gpt-j"):
        assert f"synthetic {model} set in {clone / 'data' / 'synthetic' / model} already there" in cp.stderr
    assert cp.stdout.count("RESULT: PASS") == 3  # resnet, bert, gpt-j
    demo = clone / cp.stdout.split("demo run dirs: ")[1].split("/{")[0]
    assert sorted(p.name for p in (demo / "resnet").iterdir() if p.name.isdigit()) == ["0", "1"]
    for model in ("bert", "gpt-j"):
        assert json.loads((demo / model / "accuracy.json").read_text())["verdict"] == "PASS"
    assert "report: logs/report.html" in cp.stdout + cp.stderr


def test_a_failing_eval_fails_make(clone, env_dir, tmp_path):
    cp = sh(f"make resnet DATA=synthetic N_COUNT=100000 LOG_PATH={tmp_path / 'r'}", clone, ENV_DIR=env_dir)
    assert cp.returncode == 2  # the kit's error code through make (test_make.py: every code)
    assert "error: --n_count 100000 is outside" in cp.stderr


def test_script_flags_and_bad_options(clone, env_dir, tmp_path):
    cp = sh(f"DATA=synthetic LOG_PATH={tmp_path / 'r'} scripts/eval_resnet.sh --n_count 6 --n_devices 2 "
            f"--n_partitions 3 --partition_offset 1", clone, ENV_DIR=env_dir)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.name.isdigit()) == ["1", "2"]
    assert "missing [0]" in cp.stderr
    cp = sh("scripts/eval_resnet.sh --n_cout 6", clone, ENV_DIR=env_dir)
    assert cp.returncode == 2 and "unknown option '--n_cout'" in cp.stderr
    cp = sh("scripts/build_resnet_env.sh", clone, ENV_DIR=env_dir, ENV_MANAGER="pip")
    assert cp.returncode == 2 and "ENV_MANAGER=pip" in cp.stderr
    cp = sh("scripts/build_resnet_env.sh", clone, ENV_DIR=env_dir, DATA="fake")
    assert cp.returncode == 2 and "DATA=fake" in cp.stderr


def test_real_data_without_pointer_says_how_to_import(clone, env_dir):
    cp = sh("scripts/build_resnet_env.sh", clone, ENV_DIR=env_dir, DATA="real")
    assert cp.returncode == 2
    assert "make data_add_resnet" in cp.stderr


def test_real_data_is_checked_before_any_env_is_built(tmp_path):
    """A fresh clone ships no DVC pointer: `make resnet` says how to import the data in one line,
    before building a ~1 GB env for nothing (and a bad DATA is refused as early)."""
    c = fresh_clone(tmp_path / "fresh")
    cp = sh("make resnet", c, ENV_DIR="", timeout=60)
    assert cp.returncode == 2
    errs = [ln for ln in cp.stderr.splitlines() if not ln.startswith(("make: ***", "make[1]: ***"))]
    assert len(errs) == 1 and errs[0].startswith("error: DATA=real but resnet has no data/dataset/resnet/ and no "
                                                 "DVC pointer data/dataset/resnet.dvc"), cp.stderr
    assert f"`cd {c} && make data_add_resnet SRC=" in errs[0] and "DATA=synthetic" in errs[0]
    (c / "data" / "dataset" / "resnet").mkdir(parents=True)  # a dataset but no checkpoint, nor its pointer
    cp = sh("scripts/build_resnet_env.sh", c, ENV_DIR="", timeout=60)
    assert cp.returncode == 2 and "no data/models/resnet/ and no DVC pointer data/models/resnet.dvc" in cp.stderr
    cp = sh("make resnet DATA=fake", c, ENV_DIR="", timeout=60)
    assert cp.returncode == 2 and "error: DATA=fake is not one of real, synthetic" in cp.stderr
    assert not (c / ".envs").exists() and "building" not in cp.stderr


def test_shell_scripts_parse():
    for f in list((ROOT / "scripts").glob("*.sh")) + list((ROOT / "scripts" / "lib").glob("*.sh")):
        cp = sh(f"bash -n {f}", ROOT)
        assert cp.returncode == 0, (f, cp.stderr)
        if f.parent.name == "scripts":
            assert "set -euo pipefail" in f.read_text(), f
