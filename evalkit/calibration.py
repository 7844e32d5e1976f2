"""MLPerf calibration sets: the published lists (facts shipped in each model folder), the calibration
split a run reads, the leak check, and the calibration batches a quantizer sees.

Facts: `<model folder>/calibration/calibration.json` names the MLPerf list file(s) beside it, copied
verbatim from mlcommons/inference `calibration/` (or, where MLCommons publishes a pickle or a row
range instead of a list, those facts). A model without that file has no published calibration set.

The calibration split is a dataset directory in the model's own published layout (what
`Benchmark.open_dataset` opens), holding the listed samples: `data/calibration/<model>` for real
data (laid out by `evalkit data calibration`, pulled through DVC like the validation sets), or,
for a synthetic set, `data/synthetic/<model>/calibration`: a synthetic set of the same model kind
written with another seed (`synth`'s generator), so none of its samples is an evaluated one.
A run calibrates on the first N_CALIB samples of the split, in its order.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import KitError
from .util import ROOT

FACTS = "calibration.json"
SYNTHETIC_N_CALIB = 8     # default N_CALIB on a synthetic set (its split is written at that size)


def model_folder(bench) -> Path:
    from . import registry

    spec = importlib.util.find_spec(registry.MODELS[bench.name])
    return Path(spec.origin).parent


def facts(bench) -> dict | None:
    """The model's calibration.json, or None when MLCommons publishes no calibration set for it."""
    f = model_folder(bench) / "calibration" / FACTS
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise KitError(f"{f}: not JSON ({e}); restore it from git") from None


def list_files(bench) -> list[Path]:
    """The shipped MLPerf list files of a model (verbatim upstream copies)."""
    d = facts(bench) or {}
    return [model_folder(bench) / "calibration" / x["file"] for x in d.get("lists", [])]


def read_list(bench, name: str | None = None) -> list[str]:
    """Entries of one shipped list (the first when `name` is None): first column, in file order."""
    d = facts(bench)
    if d is None or not d.get("lists"):
        raise KitError(no_list(bench))
    lists = {x["name"]: x for x in d["lists"]}
    x = d["lists"][0] if name is None else lists.get(name)
    if x is None:
        raise KitError(f"{bench.name} has no calibration list {name!r} (its lists: {', '.join(lists)})")
    f = model_folder(bench) / "calibration" / x["file"]
    rows = [ln.split()[0] for ln in f.read_text().splitlines() if ln.strip()]
    if len(rows) != x["count"]:
        raise KitError(f"{f} has {len(rows)} entries, {FACTS} says {x['count']}; restore it from git")
    return rows


def no_list(bench) -> str:
    d = facts(bench)
    if d is None:
        return f"{bench.name}: MLCommons publishes no calibration set for this model"
    what = d.get("pickle") or d.get("rows")
    return (f"{bench.name}: MLCommons publishes no calibration list for this model (its calibration set is "
            f"{json.dumps(what)}; see {model_folder(bench) / 'calibration' / FACTS})")


def max_n(bench) -> int:
    """Largest N_CALIB: the size of the model's (first) published list."""
    d = facts(bench)
    if d is None or not d.get("lists"):
        raise KitError(no_list(bench))
    return int(d["lists"][0]["count"])


def default_split(bench, dataset: Path, synthetic: bool) -> Path:
    if synthetic:
        return Path(dataset).parent / "calibration"
    return ROOT / "data" / "calibration" / bench.name


def split_size(path: Path) -> int | None:
    """Samples of a synthetic split (its marker), None when it is not a synthetic one or absent."""
    from .manifest import read_synthetic

    if not Path(path).is_dir():
        return None
    info = read_synthetic(Path(path))
    return None if info is None else int(info.get("n", 0))


def write_synthetic_split(bench, path: Path, n: int, seed: int) -> None:
    """A synthetic calibration split of n samples: `synth`'s set of the same model with another seed
    (its dataset dir only; its own random checkpoint is dropped). Written beside, then renamed."""
    from .synth import synthesize

    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".calibration-") as tmp:
        synthesize(bench.name, Path(tmp), max(n, 2), seed)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        (Path(tmp) / "dataset").rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def add_split(model: str, src: Path) -> None:
    """`evalkit data calibration MODEL --src DIR`: SRC must open as the model's dataset layout (the listed
    calibration samples, e.g. the 1000 CNN/DM train articles as cnn_eval.json, the 20 KiTS19 training
    cases as the preprocessed case layout); laid out in data/calibration/<model>, dvc add + push, like
    the validation sets (evalkit/data.py)."""
    from . import data, registry

    bench = registry.get(model)
    src = Path(src).resolve()
    if not src.is_dir():
        raise KitError(f"--src {src} is not a directory")
    top = max_n(bench)
    ds = bench.open_dataset(src, data.model_dir(model), dict(bench.options))  # its own one-line errors
    if not 1 <= ds.size:
        raise KitError(f"calibration split {src} holds no sample")
    ds.check_available(0, ds.size)
    if ds.size > top:
        raise KitError(f"calibration split {src} holds {ds.size} samples; the MLPerf list of {model} has {top} "
                       f"({list_files(bench)[0]}): lay out only the listed samples")
    data._require_remote()
    dst = ROOT / "data" / "calibration" / model
    data._copy_in(src, dst)
    data.say(f"{model}: {ds.size} calibration samples laid out in {data._rel(dst)}")
    data._add_and_push([dst], f"{model} calibration split")


def sample_key(bench, dataset, i: int) -> str:
    """What identifies a sample across splits: Benchmark.sample_key when the model has one (e.g. an
    image file's sha256), else the sha256 of the sample as its dataset loads it."""
    own = getattr(bench, "sample_key", None)
    if own is not None:
        k = own(dataset, i)
        if k is not None:
            return k
    return content_key(dataset.load(i))


def content_key(sample: Any) -> str:
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, (str, bytes)):
            b = x.encode() if isinstance(x, str) else x
            h.update(b"s%d:" % len(b) + b)
        elif isinstance(x, dict):
            h.update(b"d%d" % len(x))
            for k in sorted(x, key=str):
                feed(str(k))
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"l%d" % len(x))
            for y in x:
                feed(y)
        else:
            a = np.ascontiguousarray(np.asarray(x))
            h.update(f"a{a.dtype.str}{a.shape}".encode() + a.tobytes())

    feed(sample)
    return h.hexdigest()


def check_leak(bench, calib, n_calib: int, dataset, n_count: int, calib_path: Path, dataset_path: Path) -> None:
    """KitError naming the first calibration sample that is also an evaluated sample (qsl_idx < n_count)."""
    evaluated: dict[str, int] = {}
    for i in range(n_count):
        evaluated.setdefault(sample_key(bench, dataset, i), i)
    for j in range(n_calib):
        hit = evaluated.get(sample_key(bench, calib, j))
        if hit is not None:
            raise KitError(f"calibration sample {j} of {calib_path} is evaluated sample qsl_idx {hit} of {dataset_path} "
                           f"(calibrating on it would leak its answer); take it out of the calibration split, "
                           f"evaluate fewer samples (--n_count), or, where the MLPerf list is itself drawn from the "
                           f"validation set (ImageNet, SQuAD), accept it with --allow_calibration_overlap")


def batches(bench, calib, n_calib: int, batch_size: int, device: str, data_type: str, options: dict) -> Iterator[Any]:
    """The model's input form for the first n_calib samples of the split: make_batch, batch by batch."""
    for s in range(0, n_calib, batch_size):
        yield bench.make_batch([calib.load(j) for j in range(s, min(n_calib, s + batch_size))],
                               device.split(",")[0], data_type, options)


__all__ = ["batches", "check_leak", "default_split", "facts", "max_n", "no_list", "read_list", "sample_key"]
