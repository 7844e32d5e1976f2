"""The bad-input contract over the registry: every kind of file of every model's layout,
corrupted, must be refused in one line that names it (DESIGN.md, "Adversarial contract tests").

For each model of evalkit/registry.py, its synthetic set in the published layout is copied once;
its files are grouped into KINDS (relative path with digit runs replaced by '#': the eight
`ILSVRC2012_val_0000000k.JPEG` are one kind, `val_map.txt` another), one representative per kind
(the middle one in sorted order). Each case corrupts that one file in the copy:

  truncate   cut to half its size            garbage   random bytes of the same size
  empty      0 bytes                         delete    removed
  dtype      .npy/.npz/.pt arrays: another item size, same values (as far as they go)
  shape      .npy/.npz/.pt arrays: the same bytes under another shape

and runs the CLI as a user does (`evalkit run MODEL --dataset --model_path --log_path --n_count n`,
a fresh LOG_PATH). Asserted: exit 2, exactly one `error:` line, no traceback; the line names the
file (its name or path), and `qsl_idx k` where the kind is per-sample (as many files as samples;
synthetic sets number them in qsl_idx order, so the representative is sample k = its rank); nothing
of a pre-existing run dir (a clean run of the same copy) nor of the set changed; and, for every file
of the dataset dir, the refusal came before the model loaded: the core writes the partition's
progress.json (with its "started" time) right after the model loaded, so a run refused before that
has none. Checkpoint files may be found when the model loads, in one line all the same.

A change that cannot be detected is allowed only through ALLOWED below (one place, each with why);
an allowed case must then run through without a traceback (exit 0/1) - when it starts being refused
properly, its allowance is stale and the test says so. Cases still open are in XFAIL (strict), each
with its reason and owner.

No per-model code: the kinds come from the set itself, so a model added to the registry gets all
of it. The kinds must be known when pytest collects (one test id per model, kind and corruption):
they are listed from a synthetic set made at collection, cached in pytest's cache keyed by the
model's source files (a cold cache costs one `synth` per model at collection, about a minute; a
warm one nothing). The runs themselves use the session's `synthetic` sets, shared with
tests/test_contract.py.

Speed (measured on the 2-core dev machine, quiet: 3.5 min for the 368 cases of the ten models, the
ten synthetic sets included; with tests/test_contract.py in the same session the sets are shared):
most cases fail in plan resolution, but a fresh `python -m evalkit` pays 3-5 s of imports (torch,
transformers, diffusers and each model's modules inside them) wherever a tokenizer or a model
loads. So every run is a child forked from one server process that imported the heavy libraries
once and never ran a torch op (fork-safe); after each model's clean run the server also imports the
third-party modules that run imported. The kit's own modules it never keeps: each child imports them
afresh and runs evalkit/__main__.py as `python -m evalkit` does, with its own stdout/stderr files,
environment, and an alarm as timeout.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SYNTH_N, kit_env, synth_set
from forkserver import Result, Server

CORRUPTIONS = ("truncate", "garbage", "empty", "delete")
ARRAY_CORRUPTIONS = ("dtype", "shape")
ARRAY_SUFFIXES = (".npy", ".npz", ".pt")
CASE_TIMEOUT = 240

# One place for the changes that cannot be refused, each with why: reason -> the cases it covers,
# "model:kind:corruption" globs (kind = relative path with digit runs as '#'), space separated.
# An allowed case must run through without a traceback (exit 0 or 1; run with --no_check).
ALLOWED: dict[str, str] = {
    "SYNTHETIC.json is the kit's marker, not part of the published layout: without it the set is a real one, "
    "run and scored against the real targets and reported as real (the identity contract tells it from the "
    "synthetic set by content)":
        "*:dataset/SYNTHETIC.json:delete",
    "a checkpoint's tensors in another dtype: load_state_dict casts them to the model's, as the reference's "
    "loader does; that is another checkpoint, named by the identity contract (content hash), judged by the score":
        "*:model/*.pt:dtype",
    "the manifest's one utterance over 15 s: the reference's duration filter drops it unread, and so does the kit":
        "rnnt:dataset/dev-clean-wav/#/#/#-#-long.wav:*",
    "the raw CT volume is the reference preprocessing's input: the accuracy run reads the preprocessed "
    "case_#.pkl (and the ground truth), never this file":
        "3d-unet:dataset/nifti/case_#/imaging.nii.gz:*",
    "outside the kit's data dir a pickle is never read (unpickling runs code): its parquet copy is "
    "(language/frames.py)":
        "llama2:dataset/*.pkl:* mixtral:dataset/*.pkl:* deepseek-r1:dataset/*.pkl:*",
    "0/1 labels in another dtype, or as (rows,) instead of (rows, 1): both forms are published, the labels "
    "are the same":
        "dlrm:dataset/day_#_labels.npy:dtype dlrm:dataset/day_#_labels.npy:shape",
    "the synthetic quantile line repeats one value: its first half is the same distribution, the same samples":
        "dlrm:dataset/dist_quantile.txt:truncate",
    "special_tokens_map.json repeats tokenizer_config.json's special tokens (newer transformers do not write "
    "it): without it the tokenizer is the same":
        "stablediffusion:*/special_tokens_map.json:delete",
    "generation_config.json holds generation defaults only: the kit passes the reference's generation "
    "settings explicitly (the MLPerf GPT-J checkpoint ships none); a corrupt one is refused":
        "gpt-j:model/generation_config.json:delete llama2:model/generation_config.json:delete "
        "mixtral:model/generation_config.json:delete deepseek-r1:model/generation_config.json:delete",
    "the chat template is applied when the set is made (the published tok_input holds the templated "
    "prompt, as the reference sends it); a run never renders it (an empty or non-UTF-8 one is refused)":
        "deepseek-r1:model/chat_template.jinja:truncate deepseek-r1:model/chat_template.jinja:delete",
    "generation_config.json's stop ids (eos_token_id) are config.json's too, and transformers derives the "
    "generation config from config.json when the file is absent (Llama-3.1-8B-Instruct and whisper-large-v3 "
    "publish the same list in both); every other generation setting the kit passes explicitly":
        "llama3.1-8b:model/generation_config.json:delete whisper:model/generation_config.json:delete",
}

# Cases still open: reason and owner -> cases (same globs); xfail(strict=True) each.
XFAIL: dict[str, str] = {}


# --- the layout, known at collection ----------------------------------------------------------
def _kind(rel: str) -> str:
    return re.sub(r"\d+", "#", rel)


def _set_n(model: str) -> int:
    from evalkit import registry
    return min(registry.get(model).synthetic_n, SYNTH_N)  # the size test_contract.py uses


def _source_key(model: str, n: int) -> str:
    from evalkit import registry
    top = ROOT / registry.MODELS[model].split(".")[0]
    h = hashlib.sha256(f"{model}|{n}".encode())
    for f in sorted([*top.rglob("*.py"), ROOT / "evalkit" / "synth.py"]):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _synth_listings(config, models: list[str]) -> dict[str, list[str]]:
    """Each model's synthetic set, as the contract uses it (written once per run: conftest.synth_set,
    so the contract fixtures find it made), and its files."""
    # xdist workers all collect at once: each starts at its own place in the list, so the sets are
    # written side by side (a set another worker is writing is waited for, then reused)
    k, n = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    start = k * len(models) // max(n, 1)
    order = models[start:] + models[:start]
    return {m: _files(synth_set(config._tmp_path_factory, m, _set_n(m))) for m in order}


_LAYOUTS: dict[str, list[str]] = {}


def layouts(config) -> dict[str, list[str]]:
    """model -> the files of its synthetic set (relative paths), once per session."""
    if not _LAYOUTS:
        _LAYOUTS.update(_layouts(config))
    return _LAYOUTS


def _layouts(config) -> dict[str, list[str]]:
    from evalkit import registry

    cache = getattr(config, "cache", None)
    out, stale = {}, []
    for m in registry.names():
        key = _source_key(m, _set_n(m))
        got = cache.get(f"bad_input/layout/{m}", None) if cache is not None else None
        if got and got.get("key") == key:
            out[m] = got["files"]
        else:
            stale.append((m, key))
    if stale:
        listed = _synth_listings(config, [m for m, _ in stale])
        for m, key in stale:
            out[m] = listed[m]
            if cache is not None:
                cache.set(f"bad_input/layout/{m}", {"key": key, "files": listed[m]})
    return out


def kinds_of(files: list[str]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for f in files:
        kinds.setdefault(_kind(f), []).append(f)
    return kinds


def cases_of(model: str, files: list[str]) -> list[tuple[str, str, str]]:
    """(model, representative file, corruption) for every kind of the layout."""
    out = []
    for members in kinds_of(files).values():
        rep = members[len(members) // 2]
        for c in CORRUPTIONS + (ARRAY_CORRUPTIONS if rep.endswith(ARRAY_SUFFIXES) else ()):
            out.append((model, rep, c))
    return out


def _match(table: dict[str, str], model: str, rel: str, corruption: str) -> str | None:
    """The reason whose globs cover (model, kind of rel, corruption), or None."""
    case = f"{model}:{_kind(rel)}:{corruption}"
    for why, globs in table.items():
        if any(fnmatch.fnmatchcase(case, g) for g in globs.split()):
            return why
    return None


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    params = []
    for model, files in layouts(metafunc.config).items():
        for m, rel, c in cases_of(model, files):
            marks = []
            why = _match(XFAIL, m, rel, c)
            if why:
                marks.append(pytest.mark.xfail(reason=why, strict=True))
            params.append(pytest.param((m, rel, c), id=f"{m}:{rel}:{c}", marks=marks))
    metafunc.parametrize("case", params)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    hashes = tmp_path_factory.mktemp("bad_input_hashes")
    s = Server(kit_env(EVALKIT_HASH_CACHE=hashes), tmp_path_factory.mktemp("bad_input_io"), CASE_TIMEOUT)
    yield s
    s.close()


# --- one model's working copy and its clean run -------------------------------------------------
def snapshot(root: Path, skip: str | None = None) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != skip:
            st = p.stat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


class ModelSet:
    def __init__(self, model: str, n: int, pristine: Path, work: Path, server: Server):
        self.model, self.n, self.pristine, self.work, self.server = model, n, pristine, work, server
        self.runs = 0

    def run(self, log: Path, *extra, warm: bool = False) -> Result:
        return self.server.evalkit("run", self.model, "--dataset", self.work / "dataset",
                                   "--model_path", self.work / "model", "--log_path", log,
                                   "--n_count", self.n, "--threads", 1, *extra, warm=warm)

    def fresh_log(self) -> Path:
        self.runs += 1
        return self.work.parent / f"log{self.runs}"

    def restore(self, rel: str) -> None:
        dst = self.work / rel
        dst.unlink(missing_ok=True)
        shutil.copy2(self.pristine / rel, dst)


_SETS: dict[str, ModelSet | str] = {}  # model -> its working copy, or why it could not be made


@pytest.fixture
def model_set(case, synthetic, server, tmp_path_factory, request) -> ModelSet:
    model = case[0]
    if isinstance(_SETS.get(model), str):
        pytest.fail(_SETS[model])  # its other cases fail at once, not after another clean run each
    if model not in _SETS:
        _SETS[model] = f"{model}: the working copy or its clean run failed in an earlier case"
        n = _set_n(model)
        pristine = synthetic(model, n)
        base = tmp_path_factory.mktemp(f"bad_input_{model}")
        work = base / "set"
        shutil.copytree(pristine, work)
        got, want = _files(work), layouts(request.config)[model]
        if got != want:
            request.config.cache.set(f"bad_input/layout/{model}", None)
            _SETS[model] = (f"{model}: the synthetic set's files changed since collection; rerun (the layout "
                            f"cache is cleared): {sorted(set(got) ^ set(want))[:5]}")
            pytest.fail(_SETS[model])
        ms = ModelSet(model, n, pristine, work, server)
        ms.clean_log = base / "clean"
        # test_contract.py proves the set PASSes; this run makes the pre-existing run dir, and the server
        # then imports what it imported (the model's libraries) for the cases that follow
        cp = ms.run(ms.clean_log, "--no_check", warm=True)
        assert cp.returncode == 0 and list(ms.clean_log.rglob("partition.json")), (cp.returncode, cp.stderr)
        _SETS[model] = ms
    return _SETS[model]


# --- corruptions ----------------------------------------------------------------------------------
WRONG_DTYPE = {1: np.float32, 2: np.float32, 4: np.float16, 8: np.int32}


def _other_dtype(a: np.ndarray) -> np.ndarray:
    return a.astype(WRONG_DTYPE[a.dtype.itemsize])


def _other_shape(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1) if a.ndim > 1 else a.reshape(1, -1)


def _torch_map(obj, fn):
    import torch

    if isinstance(obj, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(fn(obj.numpy())))
    if isinstance(obj, dict):
        return {k: _torch_map(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_torch_map(v, fn) for v in obj)
    return obj


def corrupt(path: Path, how: str, seed: int) -> None:
    data = path.read_bytes()
    tmp = path.with_name(path.name + ".corrupt")
    if how == "delete":
        path.unlink()
        return
    if how == "truncate":
        new = data[:len(data) // 2]
    elif how == "garbage":
        new = np.random.default_rng(seed).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    elif how == "empty":
        new = b""
    else:
        fn = _other_dtype if how == "dtype" else _other_shape
        if path.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, fn(np.load(path, allow_pickle=False)))
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: fn(z[k]) for k in z.files}
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        else:
            import torch
            torch.save(_torch_map(torch.load(path, map_location="cpu", weights_only=True), fn), tmp)
        os.replace(tmp, path)
        return
    tmp.write_bytes(new)
    os.replace(tmp, path)


# --- the contract -------------------------------------------------------------------------------
def test_corrupted_file_is_refused_in_one_line(case, model_set):
    model, rel, how = case
    ms = model_set
    kind = _kind(rel)
    members = kinds_of(_files(ms.pristine))[kind]
    per_sample = len(members) == ms.n
    qsl_idx = members.index(rel) if per_sample else None
    before_run, before_set = snapshot(ms.clean_log), snapshot(ms.work, skip=rel)
    corrupt(ms.work / rel, how, seed=zlib_seed(case))
    log = ms.fresh_log()
    allowed = _match(ALLOWED, model, rel, how)
    try:
        cp = ms.run(log, *(("--no_check",) if allowed else ()))
    finally:
        ms.restore(rel)
    tail = " | ".join([(cp.stderr.strip().splitlines() or [""])[-1]]
                      + [line for line in cp.stdout.splitlines() if line.startswith("RESULT")])
    assert "Traceback" not in cp.stderr, f"a traceback ({how} {rel}): {tail}"
    errs = [line for line in cp.stderr.splitlines() if line.startswith("error:")]
    if allowed:
        assert cp.returncode in (0, 1), f"stale allowance ({allowed}): now refused, remove it from ALLOWED: {tail}"
    else:
        assert cp.returncode == 2, f"exit {cp.returncode}, not 2 ({how} {rel} accepted): {tail}"
        assert len(errs) == 1, f"{len(errs)} error lines: {cp.stderr[-2000:]}"
        err = errs[0]
        assert Path(rel).name in err or rel in err, f"the error does not name {rel}: {err}"
        if per_sample:
            assert re.search(rf"\bqsl_idx {qsl_idx}\b", err), f"the error does not name qsl_idx {qsl_idx}: {err}"
        if rel.startswith("dataset/"):
            started = [p for p in log.glob("*/progress.json") if "started" in json.loads(p.read_text())]
            assert not started, f"{rel} was found only after the model loaded: {err}"
        for done in ("mlperf_log_accuracy.json", "accuracy.json", "accuracy.txt"):
            assert not list(log.rglob(done)), f"a refused run left {done} in {log}"
    assert snapshot(ms.clean_log) == before_run, "a refused run changed another run dir"
    assert snapshot(ms.work, skip=rel) == before_set, "the run changed files of the dataset or checkpoint"


def zlib_seed(case) -> int:
    return zlib.crc32("|".join(case).encode())
