"""Backends on synthetic ResNet50 through the real CLI: pytorch-compile (and its eager fallback),
a plug-in pip-installed from tests/plugin_pkg, unknown and broken backends."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import evalkit, one_line_error

PLUGIN_SRC = Path(__file__).resolve().parent / "plugin_pkg"
N = 8  # one batch of 8: torch.compile compiles one shape


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> str:
    """The plug-in installed by pip into its own --target dir (the shared env stays untouched);
    runs that put it on PYTHONPATH see its entry points, like an env it was installed into."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(PLUGIN_SRC, tmp / "src")  # the build writes build/ and egg-info next to it
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, text=True)
    assert list(target.glob("evalkit_demo_backend-*.dist-info"))
    return str(target)


def run(synth, log, *extra, **env):
    return evalkit("run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--n_count", N, "--batch_size", N, "--threads", 1, *extra, **env)


def manifest(log, p=0) -> dict:
    return json.loads((Path(log) / str(p) / "partition.json").read_text())


def with_plugin(plugin_path) -> str:
    return plugin_path + os.pathsep + os.environ.get("PYTHONPATH", "")


def test_plugin_backend_passes_and_is_recorded(resnet_synth, plugin_path, tmp_path):
    cp = run(resnet_synth, tmp_path / "demo", "--backend", "demo", "--backend_option", "chunk=3",
             PYTHONPATH=with_plugin(plugin_path))
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    m = manifest(tmp_path / "demo")
    assert m["backend"] == {"name": "demo", "plugin": "evalkit-demo-backend", "chunk": 3, "batches": 1,
                            "samples": N}
    assert m["config"]["backend"] == "demo"
    # The backend is in the config hash: a partition made by another backend is not resumed into it.
    err = one_line_error(run(resnet_synth, tmp_path / "demo", "--backend", "pytorch"))
    assert "holds another run" in err and "backend" in err


def test_unknown_backend_lists_installed(resnet_synth, plugin_path, tmp_path):
    err = one_line_error(run(resnet_synth, tmp_path / "x", "--backend", "nope",
                             PYTHONPATH=with_plugin(plugin_path)))
    assert "unknown backend 'nope'" in err
    for name in ("pytorch", "pytorch-compile", "openai", "demo"):
        assert name in err, err
    assert not (tmp_path / "x" / "0").exists()  # refused before any work


@pytest.mark.parametrize("name,why", [("demo-broken", "cannot be loaded: ModuleNotFoundError"),
                                      ("demo-hollow", "lacks load, run, close")])
def test_broken_plugin_is_one_line(resnet_synth, plugin_path, tmp_path, name, why):
    err = one_line_error(run(resnet_synth, tmp_path / "x", "--backend", name,
                             PYTHONPATH=with_plugin(plugin_path)))
    assert f"backend '{name}'" in err and why in err and "installed backends: pytorch" in err, err


def test_pytorch_compile_passes(resnet_synth, tmp_path):
    cp = run(resnet_synth, tmp_path / "c", "--backend", "pytorch-compile")
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    m = manifest(tmp_path / "c")
    assert m["backend"]["name"] == "pytorch-compile" and m["backend"]["compiled"] is True, m["backend"]
    assert "warning: pytorch-compile" not in cp.stderr


def test_pytorch_compile_falls_back_with_a_warning(resnet_synth, tmp_path):
    cp = run(resnet_synth, tmp_path / "f", "--backend", "pytorch-compile",
             "--backend_option", "compile_backend=no-such-compiler")
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stderr
    assert "warning: pytorch-compile: cannot compile resnet" in cp.stderr
    b = manifest(tmp_path / "f")["backend"]
    assert b["compiled"] is False and "no-such-compiler" in b["fallback"], b


def test_text_backend_on_a_vision_model_is_one_line(resnet_synth, tmp_path):
    err = one_line_error(run(resnet_synth, tmp_path / "o", "--backend", "openai",
                             "--server_url", "http://127.0.0.1:9"))
    assert "resnet has no text interface" in err
