"""Shared fixtures: the real CLI in subprocesses, synthetic data made once per session."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def kit_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["HF_HUB_OFFLINE"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def evalkit(*args, check=False, cwd=None, timeout=600, **env) -> subprocess.CompletedProcess:
    """Run `python -m evalkit ARGS` as a user would; returns the completed process."""
    cp = subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], cwd=cwd or ROOT,
                        env=kit_env(**env), capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"evalkit {' '.join(map(str, args))} failed ({cp.returncode}):\n{cp.stdout}\n{cp.stderr}")
    return cp


def one_line_error(cp: subprocess.CompletedProcess) -> str:
    """The CLI's error contract: exit 2 and exactly one 'error:' line, no traceback."""
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert "Traceback" not in cp.stderr, cp.stderr
    errs = [l for l in cp.stderr.splitlines() if l.startswith("error:")]
    assert len(errs) == 1, cp.stderr
    return errs[0]


SYNTH_N = 8  # the synthetic set size the contract test and the per-model tests share


# --- parallel runs (`make test`: pytest-xdist, -n TEST_WORKERS --dist loadgroup) ------------------
# Tests that share an expensive module fixture must run on one worker: by default a test file is one
# group; the contract files are one group per model (their fixtures are per model), so the models
# spread over the workers; the files that build real model envs into the session's ENV_DIR (env_dir)
# are one group (two workers must not build one env at once). Groups are handed out in collection
# order, so the long ones go first (a long group started last would leave the other workers idle).
# The groups are computed from node ids by the scheduler below: xdist 3.8's own xdist_group marker
# does nothing under pytest 9 (it rewrites Item._nodeid, which pytest 9 no longer reads).
PER_MODEL_FILES = ("test_contract", "test_bad_input_contract")  # param id: "<model>" or "<model>:..."
ENV_DIR_FILES = ("test_scripts", "test_dvc", "test_scripts_language")
FIRST = ("env_dir", "test_contract:", "test_bad_input_contract:")


def xdist_group(nodeid: str) -> str:
    mod = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    if mod in ENV_DIR_FILES:
        return "env_dir"
    if mod in PER_MODEL_FILES and nodeid.endswith("]") and "[" in nodeid:
        return f"{mod}:{nodeid[nodeid.index('[') + 1:-1].split(':', 1)[0]}"
    return mod


def pytest_collection_modifyitems(config, items):
    rank = {g: i for i, g in enumerate(FIRST)}
    items.sort(key=lambda it: min((r for g, r in rank.items() if xdist_group(it.nodeid).startswith(g)),
                                  default=len(FIRST)))


if importlib.util.find_spec("xdist"):
    def pytest_xdist_make_scheduler(config, log):
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class ByGroup(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return xdist_group(nodeid)
        return ByGroup(config, log)


def run_root(tmp_path_factory) -> Path:
    """The temp dir every worker of this pytest run shares (the basetemp itself without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def run_lock(tmp_path_factory, name: str):
    """An exclusive lock, across this run's workers, on `name`."""
    import fcntl

    with open(run_root(tmp_path_factory) / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def synth_set(tmp_path_factory, model: str, n: int = SYNTH_N) -> Path:
    """The synthetic set (model, n, seed 0) of this pytest run: written once, shared by every test file
    and every xdist worker that asks for it, also at collection (test_bad_input_contract lists its
    files). A set is used only once its writer finished (the .done mark beside it)."""
    root = run_root(tmp_path_factory)
    out, done = root / f"synth_{model}_{n}", root / f"synth_{model}_{n}.done"
    if not done.exists():
        with run_lock(tmp_path_factory, f"synth_{model}_{n}"):
            if not done.exists():
                shutil.rmtree(out, ignore_errors=True)  # a writer that died half way
                evalkit("synth", model, "--out", out, "--n", n, "--seed", 0, check=True)
                done.touch()
    return out


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """synthetic(model, n=SYNTH_N) -> dir of a synthetic set (seed 0): see synth_set."""
    return lambda model, n=SYNTH_N: synth_set(tmp_path_factory, model, n)


@pytest.fixture(scope="session")
def forked(tmp_path_factory):
    """This worker's fork server (tests/forkserver.py): forked.evalkit(*args) runs `python -m evalkit
    ARGS` as evalkit() does, in a forked child of a process that imported torch & co. once."""
    from forkserver import Server

    s = Server(kit_env(), tmp_path_factory.mktemp("forked_io"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def resnet_synth(synthetic) -> Path:
    """A 24-image synthetic ImageNet set + random ResNet50 checkpoint (published layouts)."""
    return synthetic("resnet", 24)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def env_dir(tmp_path_factory) -> Path:
    """One ENV_DIR for the session: the first build script run builds the model env, later ones reuse it."""
    return tmp_path_factory.mktemp("envs")


def fresh_clone(dst: Path) -> Path:
    """What a user's fresh clone holds: tracked files plus new, not-ignored ones (this work tree)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def sh(cmd, cwd, timeout=1200, **env) -> subprocess.CompletedProcess:
    """A shell command as a user types it (make, scripts), with the test's env additions."""
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    e["HF_HUB_OFFLINE"] = "1"
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout)


def worker_of(log: Path, p: int) -> int | None:
    """PID of the launcher's worker for partition p of log, or None (from the processes' command lines)."""
    import json

    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            args = (d / "cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            continue
        if "_worker" in args:
            spec = json.loads(args[-1])
            if spec["log_path"] == str(log) and spec["partition_offset"] == p:
                return int(d.name)
    return None


def worker_pid(log: Path, p: int, timeout: float = 300) -> int:
    """PID of the launcher's worker running partition p into log, once it has answered a sample."""
    import json
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = worker_of(log, p)
        if pid is not None:
            try:
                prog = json.loads((log / str(p) / "progress.json").read_text())
            except (OSError, ValueError):
                prog = {}
            if prog.get("done", 0) > 0 and prog.get("status") == "running":
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no running worker for partition {p} of {log}")

def rewrite_merged(run_dir: Path, fn) -> None:
    """Rewrite run_dir's merged log with every entry (sorted by qsl_idx) passed through fn, and record the
    new log in gather.json as gather would: how a test makes a run that answered wrong (a FAIL) without a
    model that answers wrong. Without the record, check refuses the edited log (tests/test_proof.py)."""
    import json

    from evalkit.accuracy_log import Writer, iter_entries
    from evalkit.identity import file_sha256
    from evalkit.rundir import GATHER_INFO, MERGED

    es = sorted(iter_entries(run_dir / MERGED), key=lambda e: e["qsl_idx"])
    with open(run_dir / MERGED, "w") as f:
        w = Writer(f)
        for e in es:
            w.write(fn(e))
        w.close()
    info = json.loads((run_dir / GATHER_INFO).read_text())
    info["merged"] = {"sha256": file_sha256(run_dir / MERGED), "size": (run_dir / MERGED).stat().st_size,
                      "entries": len(es)}
    (run_dir / GATHER_INFO).write_text(json.dumps(info))


@contextlib.contextmanager
def modules_installed(mods: dict):
    """sys.modules with `mods` (name -> module) added for the block, as it was afterwards: how a test
    pickles objects under another project's module names (the reference's checkpoints)."""
    saved = {m: sys.modules.get(m) for m in mods}
    sys.modules.update(mods)
    try:
        yield
    finally:
        for m, old in saved.items():
            if old is None:
                del sys.modules[m]
            else:
                sys.modules[m] = old
