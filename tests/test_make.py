"""Issue 29, the make side: what a user meets through `make` (exit codes, misspelled variables and
targets, a quiet demo, DVC without the developer env, `make test`'s system-wide installs).

Most tests run make in a fresh copy of the kit against stand-in envs under ENV_DIR: a bin/python
whose `run` exits with the code a test asks for (FAKE_RUN_CODE), so each exit code is shown through
make in milliseconds; the kit's own propagation of those codes is tested in its own files. The data
test runs the real kit and the real dvc (the developer env's) through make.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, fresh_clone, sh

FAKE_PY = """#!/usr/bin/env bash
# stand-in for a model env's python: `-m evalkit run ...` exits FAKE_RUN_CODE, synth sleeps FAKE_SYNTH_S
case " $* " in
  *" run "*) echo "fake run: exit ${FAKE_RUN_CODE:-0}"; exit "${FAKE_RUN_CODE:-0}" ;;
  *" synth "*) sleep "${FAKE_SYNTH_S:-0}"; exit 0 ;;
esac
exit 0
"""


def fake_env(env_dir: Path, model: str, kit: Path, python: str | None = None) -> Path:
    """ENV_DIR/<model> that make_env takes as up to date (its stamp is the spec's hash)."""
    d = env_dir / model
    (d / "bin").mkdir(parents=True, exist_ok=True)
    py = d / "bin" / "python"
    py.write_text(FAKE_PY if python is None else f"#!/usr/bin/env bash\nexec {python} \"$@\"\n")
    py.chmod(0o755)
    spec = kit / "envs" / f"{model}.yml"
    (d / ".evalkit-env").write_text(hashlib.sha256(spec.read_bytes()).hexdigest() + "\n")
    return d


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    return fresh_clone(tmp_path_factory.mktemp("kit"))


@pytest.fixture(scope="module")
def envs(kit, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("envs")
    for m in ("resnet", "bert", "gpt-j"):
        fake_env(d, m, kit)
    return d


def make(cmd: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    return sh(f"make --no-print-directory {cmd}", cwd, timeout=300, **env)


def errors(cp) -> list[str]:
    return [ln for ln in cp.stderr.splitlines() if ln.startswith("error:")]


# --- item 2: `make <model>` exits with the kit's code --------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 2, 3, 75])
def test_make_model_exits_with_the_kits_code(kit, envs, code):
    cp = make("resnet DATA=synthetic SYNTH_N=8", kit, ENV_DIR=envs, FAKE_RUN_CODE=code)
    assert f"fake run: exit {code}" in cp.stdout, cp.stderr
    assert cp.returncode == code, (cp.returncode, cp.stderr)


def test_a_refused_build_step_and_a_nested_make_keep_the_code(kit, envs):
    cp = make("resnet DATA=fake", kit, ENV_DIR=envs)  # the build script's one-line refusal
    assert cp.returncode == 2 and "error: DATA=fake is not one of real, synthetic" in cp.stderr
    # make demo runs make resnet ... in a sub-make: its FAIL is demo's exit code, and demo stops there
    cp = make("demo", kit, ENV_DIR=envs, FAKE_RUN_CODE=1)
    assert cp.returncode == 1, cp.stderr
    assert "[demo] 1/4" in cp.stderr and "[demo] 2/4" not in cp.stderr


def test_without_a_c_compiler_make_still_fails_with_2(tmp_path, envs):
    k = fresh_clone(tmp_path / "k")
    cp = make("resnet DATA=synthetic SYNTH_N=8", k, ENV_DIR=envs, FAKE_RUN_CODE=3, CC="false")
    assert cp.returncode == 2 and "Error 3" in cp.stderr  # make's own line names the kit's code
    assert not (k / ".make" / "make_exit.so").exists()


# --- item 1: misspelled command-line variables ---------------------------------------------------

@pytest.mark.parametrize("var, near", [("NCOUNT=8", "N_COUNT"), ("N_DEVICE=2", "N_DEVICES"),
                                       ("data_type=fp16", "DATA_TYPE"), ("BATCHSIZE=4", "BATCH_SIZE")])
def test_a_misspelled_variable_is_refused_before_anything_runs(kit, tmp_path, var, near):
    envs = tmp_path / "envs"
    cp = make(f"resnet DATA=synthetic {var}", kit, ENV_DIR=envs)
    name = var.split("=")[0]
    assert cp.returncode == 2, cp.stderr
    assert cp.stderr == f"error: unknown variable {name} (did you mean {near}?); nothing was run\n"
    assert not envs.exists() and cp.stdout == ""


def test_an_unknown_variable_says_where_an_environment_variable_goes(kit, envs):
    cp = make("resnet CUDA_VISIBLE_DEVICES=0,1 DATA=synthetic", kit, ENV_DIR=envs)
    assert cp.returncode == 2 and len(cp.stderr.splitlines()) == 1, cp.stderr
    hint = re.search(r"`(CUDA_VISIBLE_DEVICES=0,1 make resnet DATA=synthetic)`", cp.stderr)
    assert hint, cp.stderr
    # that command, pasted, is not refused: environment variables are not the command line
    cp = sh(hint.group(1).replace("make resnet", "make --no-print-directory resnet SYNTH_N=8"), kit,
            ENV_DIR=envs, NCOUNT="8")
    assert cp.returncode == 0, cp.stderr


def test_every_kit_variable_is_accepted(kit):
    text = (kit / "Makefile").read_text()
    names = re.findall(r"^(?:RUN|MAKE)_VARS := (.*?)(?<!\\)$", text, re.S | re.M)
    known = " ".join(names).replace("\\", " ").split()
    for later in ("QUANTIZER", "CALIBRATE", "N_CALIB", "QUANTIZER_OPTION", "BATCH_SIZES", "DATA_TYPES",
                  "BACKENDS", "QUANTIZERS", "PROBE", "SERVER_URLS"):
        assert later in known
    cp = make("help " + " ".join(f"{v}=1" for v in known), kit)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr


# --- item 11: unknown targets, help, the demo says what it does ----------------------------------

def test_a_misspelled_target_names_the_model(kit):
    cp = make("resnt", kit)
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr.startswith("error: no model or target 'resnt' (did you mean resnet? models: resnet retinanet ")
    assert len(cp.stderr.splitlines()) == 1, cp.stderr
    cp = make("data_add_resnt SRC=/tmp", kit, ENV_DIR=kit / "no-envs")
    assert cp.returncode == 2 and "error: no model 'resnt' (did you mean resnet? models: " in cp.stderr
    assert not (kit / "no-envs").exists()


def test_help_lists_no_empty_pending_list(kit, tmp_path):
    cp = make("help", kit)
    assert cp.returncode == 0 and "(not in the kit yet: )" not in cp.stdout
    k = fresh_clone(tmp_path / "k")  # every model ready: no pending line at all
    text = (k / "Makefile").read_text()
    (k / "Makefile").write_text(re.sub(r"^MODELS := .*$", "MODELS := resnet bert", text, count=1, flags=re.M))
    cp = make("help", k)
    assert cp.returncode == 0 and "not in the kit yet" not in cp.stdout and "models: bert resnet" in cp.stdout
    (k / "Makefile").write_text(re.sub(r"^MODELS := .*$", "MODELS := resnet bert nosuch", text, count=1, flags=re.M))
    assert "(not in the kit yet: nosuch)" in make("help", k).stdout


def test_demo_says_what_it_is_doing_while_it_waits(kit, envs):
    """A synthetic set that takes 2.5 s, a heartbeat every second: lines with the time so far."""
    cp = make("demo", kit, ENV_DIR=envs, FAKE_SYNTH_S="2.5", EVALKIT_HEARTBEAT_S="1",
              SYNTH_N="4", LOG_DIR=kit / "no-logs")
    assert cp.returncode == 0, cp.stderr
    for step in ("[demo] 1/4 resnet", "[demo] 2/4 bert", "[demo] 3/4 gpt-j", "[demo] 4/4 the report"):
        assert step in cp.stderr
    beats = [ln for ln in cp.stderr.splitlines() if "still making the synthetic resnet set" in ln]
    assert len(beats) >= 2 and beats[0].endswith("(0m01s)"), cp.stderr


def test_env_builds_beat_too(tmp_path):
    """make_env's pip steps run under the heartbeat (a pip that takes 2.5 s, beats every second)."""
    py = tmp_path / "python3.11"
    py.write_text("#!/usr/bin/env bash\n"
                  "if [ \"$1 $2\" = '-m venv' ]; then shift 2; d=\"${@: -1}\"; mkdir -p \"$d/bin\"; "
                  "cp \"$0\" \"$d/bin/python\"; exit 0; fi\n"
                  "[ \"$1 $2 $3\" = '-m pip install' ] && sleep 2.5\nexit 0\n")
    py.chmod(0o755)
    spec = tmp_path / "x.yml"
    spec.write_text("name: x\ndependencies:\n  - python=3.11\n  - pip:\n      - numpy==2.4.6\n")
    cp = sh(f"source scripts/lib/common.sh && make_env {spec} {tmp_path / 'env'}", ROOT,
            ENV_MANAGER="venv", PYTHON=py, EVALKIT_HEARTBEAT_S="1")
    assert cp.returncode == 0, cp.stderr
    assert "pip install, step 1/1 of x.yml: 1 packages" in cp.stderr
    assert re.search(r"still installing step 1/1 of x.yml into \S+ \(0m0[12]s\)", cp.stderr), cp.stderr


# --- item 6: DVC without the developer env -------------------------------------------------------

def dvc_config(cwd: Path) -> dict:
    """The project config as the real dvc reads it."""
    cp = subprocess.run([str(ROOT / ".venv" / "bin" / "dvc"), "config", "--list", "--project"], cwd=cwd,
                        capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert cp.returncode == 0, cp.stderr
    return dict(ln.split("=", 1) for ln in cp.stdout.splitlines() if "=" in ln)


@pytest.fixture
def bare(tmp_path) -> Path:
    """A fresh clone (a git repo, as a user's) with no env at all and no dvc on PATH."""
    k = fresh_clone(tmp_path / "bare")
    subprocess.run(["git", "init", "-q"], cwd=k, check=True)
    return k


def no_dvc_path() -> str:
    return ":".join(p for p in os.environ["PATH"].split(":") if not (Path(p) / "dvc").exists())


def test_make_remote_builds_nothing_and_dvc_reads_what_it_wrote(bare, tmp_path):
    store = tmp_path / "store"
    cp = make(f"remote URL={store}", bare, ENV_DIR=tmp_path / "envs", PATH=no_dvc_path())
    assert cp.returncode == 0, cp.stderr
    assert not (tmp_path / "envs").exists() and not (bare / ".venv").exists()
    assert "git add .dvc/config" in cp.stderr
    assert dvc_config(bare) == {"core.analytics": "false", "core.remote": "mlperf-data",
                                "remote.mlperf-data.url": str(store)}  # no S3 options for a dir
    cp = make("remote URL=s3://my-team-bucket/mlperf ENDPOINT=http://10.0.0.5:9000", bare, PATH=no_dvc_path())
    assert cp.returncode == 0, cp.stderr
    assert dvc_config(bare) == {"core.analytics": "false", "core.remote": "mlperf-data",
                                "remote.mlperf-data.url": "s3://my-team-bucket/mlperf",
                                "remote.mlperf-data.connect_timeout": "3", "remote.mlperf-data.read_timeout": "60",
                                "remote.mlperf-data.endpointurl": "http://10.0.0.5:9000"}
    assert (bare / ".dvc" / "config").read_text().startswith("# DVC remote for datasets")  # comments kept


@pytest.mark.parametrize("args", ["URL=s3://bucket/prefix", "URL=s3://YOUR-BUCKET/PREFIX", "URL=",
                                  "URL=s3://my-team-bucket/x ENDPOINT=http://HOST:PORT",
                                  "URL=/shared/dvc ENDPOINT=http://10.0.0.5:9000"])
def test_a_placeholder_remote_is_refused_and_changes_nothing(bare, args):
    before = (bare / ".dvc" / "config").read_bytes()
    cp = make(f"remote {args}", bare)
    assert cp.returncode == 2 and len(errors(cp)) == 1, cp.stderr
    assert (bare / ".dvc" / "config").read_bytes() == before


def test_data_add_checks_source_and_remote_before_building_the_env(bare, tmp_path, synthetic):
    synth = synthetic("resnet", 8)
    envs = tmp_path / "envs"
    ckpt = synth / "model" / "resnet50.pth"
    for args, want in ((f"SRC={synth / 'dataset'} MODEL_SRC={ckpt}", "points at no bucket yet"),
                       (f"SRC={tmp_path / 'nope'}", "is not a directory"),
                       (f"SRC={synth / 'dataset'} MODEL_SRC={tmp_path / 'nope.pth'}", "does not exist")):
        cp = make(f"data_add_resnet {args}", bare, ENV_DIR=envs)
        assert cp.returncode == 2 and len(errors(cp)) == 1 and want in errors(cp)[0], cp.stderr
        assert not envs.exists() and "building" not in cp.stderr
    # the hint's command, pasted as printed, is refused as a placeholder
    hint = re.search(r"`(cd \S+ && make remote URL=\S+)`", errors(make(f"data_add_resnet SRC={synth / 'dataset'}",
                                                                        bare, ENV_DIR=envs))[0]).group(1)
    cp = sh(hint, tmp_path)
    assert cp.returncode == 2 and "'YOUR-BUCKET' is not an S3 bucket name" in cp.stderr, cp.stderr


def test_a_teammates_pull_needs_the_remote_before_the_env_is_built(bare, tmp_path):
    """Pointers committed, data not here, the remote still the shipped one: said before any env."""
    for d in ("dataset", "models"):
        (bare / "data" / d).mkdir(parents=True, exist_ok=True)
        (bare / "data" / d / "resnet.dvc").write_text("outs:\n- md5: 0.dir\n  path: resnet\n")
    envs = tmp_path / "envs"
    cp = make("resnet", bare, ENV_DIR=envs)
    assert cp.returncode == 2 and len(errors(cp)) == 1 and "points at no bucket yet" in errors(cp)[0], cp.stderr
    assert not envs.exists()


def test_the_tools_env_is_never_taken_for_a_kit_env(tmp_path):
    """.envs/tools holds dvc, not numpy: bin/evalkit and make's report/targets look past it."""
    k = fresh_clone(tmp_path / "k")
    (k / ".envs" / "tools" / "bin").mkdir(parents=True)
    (k / ".envs" / "tools" / "bin" / "python").symlink_to("/bin/false")
    cp = sh(f"{k}/bin/evalkit targets", tmp_path)
    assert cp.returncode == 2 and cp.stderr.startswith("error: no kit env yet"), cp.stderr
    assert "/tools/" not in make("-n targets", k).stdout


# --- item 7: MODEL_SRC may be the checkpoint file, as --model_path may ---------------------------

def test_data_add_takes_the_checkpoint_file(bare, tmp_path, synthetic):
    """Real kit, real dvc (the developer env's, found as the tools env's), a local remote."""
    synth = synthetic("resnet", 8)
    envs = tmp_path / "envs"
    fake_env(envs, "resnet", bare, python=str(ROOT / ".venv" / "bin" / "python"))
    (envs / "tools" / "bin").mkdir(parents=True)
    (envs / "tools" / "bin" / "dvc").symlink_to(ROOT / ".venv" / "bin" / "dvc")
    assert make(f"remote URL={tmp_path / 'store'}", bare).returncode == 0
    src = tmp_path / "downloads" / "resnet50-0676ba61.pth"  # the published name, not the kit's
    src.parent.mkdir()
    src.write_bytes((synth / "model" / "resnet50.pth").read_bytes())
    cp = make(f"data_add_resnet SRC={synth / 'dataset'} MODEL_SRC={src}", bare, ENV_DIR=envs, PATH=no_dvc_path())
    assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
    assert "Traceback" not in cp.stderr
    laid = bare / "data" / "models" / "resnet"
    assert sorted(p.name for p in laid.iterdir()) == ["resnet50.pth"]  # where a run's model_path dir reads it
    assert (laid / "resnet50.pth").read_bytes() == src.read_bytes()
    assert (bare / "data" / "models" / "resnet.dvc").is_file() and any((tmp_path / "store").rglob("*"))


def test_a_checkpoint_file_for_a_directory_checkpoint_is_one_line(tmp_path):
    from evalkit import data, registry
    from evalkit.errors import KitError

    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(KitError, match=r"MODEL_SRC .* is a file, but the bert checkpoint is a directory"):
        data.check_model_src("bert", f, registry.get("bert"))
    assert data.checkpoint_name(registry.get("resnet")) == "resnet50.pth"


# --- item 9: make test says what it installs system-wide; NO_BROWSER=1 is said loudly -------------

def test_system_tools_are_named_before_apt_runs(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text("#!/usr/bin/env bash\necho \"apt-get $*\" >&2\n")
    (fake / "apt-get").chmod(0o755)
    cp = sh("source scripts/lib/common.sh && system_tools 'the tests' bash:bash no-such-cmd:some-pkg", ROOT,
            PATH=f"{fake}:{os.environ['PATH']}")
    lines = cp.stderr.splitlines()
    if os.geteuid() == 0:
        assert cp.returncode == 0, cp.stderr
        said = lines.index("[evalkit] the tests need some-pkg: installing system-wide with apt-get install -y some-pkg")
        assert said < lines.index("apt-get install -y -qq some-pkg")  # said before, and only the missing one
    else:
        assert cp.returncode == 2 and "sudo apt-get install -y some-pkg" in cp.stderr and "apt-get " not in lines


def test_no_browser_deselects_the_browser_tests_and_says_so(kit):
    cp = make("-n test NO_BROWSER=1", kit)
    assert cp.returncode == 0, cp.stderr
    ids = re.findall(r"--deselect (\S+)", cp.stdout)
    assert len(ids) == 3 and all(i.startswith("tests/test_report.py::") for i in ids)
    tests = (ROOT / "tests" / "test_report.py").read_text()
    for i in ids:  # the ids are real tests (a renamed one would run, and fail without chromium: never silent)
        assert f"def {i.split('::')[1]}(" in tests
    assert cp.stdout.count("NO_BROWSER=1: 3 browser tests NOT run") == 3  # before, after, and on failure
    assert "chromium:chromium-browser:chromium" not in cp.stdout
    cp = make("-n test", kit)
    assert "--deselect" not in cp.stdout and "NOT run" not in cp.stdout
    assert "chromium:chromium-browser:chromium" in cp.stdout


# --- item 11: the nltk hint works pasted --------------------------------------------------------

def test_the_nltk_hint_names_a_python_that_has_nltk():
    from language.rouge import nltk_data_command

    cmd = nltk_data_command()
    assert cmd.startswith(sys.executable) and cmd.endswith("-m nltk.downloader punkt punkt_tab")
    assert importlib.util.find_spec("nltk") is not None  # the module the command runs is in that Python
