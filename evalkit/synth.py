"""Synthetic data: the model's published layouts, ground truth = its own fp32 output.

After the benchmark writes dataset + checkpoint, the core proves the set can
catch index bugs: the true payloads must score the synthetic reference, and
the same payloads shifted by one index must score far below the target.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from . import registry, targets
from .errors import KitError
from .manifest import SYNTHETIC_MARKER, read_synthetic
from .scoring import score
from .util import atomic_write_json

SHIFT_MAX_FRACTION = 0.5  # a shifted run must score below half the synthetic reference
DISTINCT_MAX = 512  # samples a synthetic set computes; a larger --n repeats them (the scale variant)


def distinct(n: int) -> int:
    """How many of n synthetic samples get their own input and model output. Above DISTINCT_MAX
    (models whose sets opt in: the LLMs, ResNet50) the set is a scale variant: sample k is a copy
    of sample k % DISTINCT_MAX under its own id or file name, so a set of the real size, with the
    real log size and payload shapes, is made in minutes; an index shift still pairs every
    output with another sample's truth."""
    return min(n, DISTINCT_MAX)


def tile(items, n: int) -> list:
    """items repeated in order to length n (the scale variant's samples)."""
    return [items[k % len(items)] for k in range(n)]


@contextlib.contextmanager
def one_thread():
    """torch on one thread inside (a synthetic set's batch-1 forwards): on a shared 2-core machine a
    second thread only contends; the caller's thread count is restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def scale_period(payloads) -> int:
    """m where a synthetic set is a scale variant (payload k equal to payload k % m, m = distinct(n) < n),
    else n. An index shift of such a set makes the pairs of the shift of its first m samples, repeated
    (all but the last sample's), so the shift is scored on those m: for SDXL at 5,000 images that is 512
    images through FID and CLIP instead of 5,000 (the truth is still scored at the full size)."""
    n = len(payloads)
    m = distinct(n)
    if m < n and all(np.array_equal(payloads[k], payloads[k % m]) for k in range(m, n)):
        return m
    return n


def link_copy(src: Path, dst: Path) -> None:
    """dst as a copy of src (the scale variant's repeated files): a hard link where the file system
    allows one, else a byte copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def synthesize(model: str, out: Path, n: int, seed: int = 0, options: dict | None = None) -> dict:
    from .plan import declared_options

    bench = registry.get(model)
    out = Path(out)
    if n < 2:
        raise KitError(f"--n {n}: a synthetic set needs at least 2 samples (an index shift must be detectable)")
    chosen = declared_options(bench.synthetic_options, options or {}, "--option", f"synth {bench.name}")
    chosen = {k: v for k, v in chosen.items() if v != bench.synthetic_options[k]}  # recorded when not the default
    marker = out / "dataset" / SYNTHETIC_MARKER
    if marker.exists():
        have = read_synthetic(out / "dataset")
        if have.get("model") == bench.name and have.get("n") == n and have.get("seed") == seed \
                and have.get("options", {}) == chosen and (out / "model").exists():
            print(f"synthetic {bench.name} set in {out} already there (n={n}, seed={seed})", file=sys.stderr)
            return have
        raise KitError(f"{out} already holds another synthetic set ({have.get('model')}, n={have.get('n')}, "
                       f"seed={have.get('seed')}, options {have.get('options', {})}); choose another --out or remove it")
    for sub in ("dataset", "model"):
        if (out / sub).exists() and any((out / sub).iterdir()):
            raise KitError(f"{out / sub} exists and is not a synthetic set; choose another --out")
    try:
        payloads = bench.synthesize(out, n, seed, **chosen)
        ds = out / "dataset"
        exact = bench.synthetic_reference()
        mp = out / "model"
        with contextlib.redirect_stderr(io.StringIO()):  # e.g. the nltk punkt warning: the run's check says it
            truth = score(bench, ((i, p.tobytes()) for i, p in enumerate(payloads)), ds, n, mp)
            # a scale variant's shifted pairs are those of its first m samples, repeated: scored on them
            m = scale_period(payloads)
            shifted = score(bench, ((i, payloads[(i + 1) % m].tobytes()) for i in range(m)), ds, m, mp)
        # The synthetic reference is the metric of the model's own output: exact metrics
        # must come out at their perfect value, the rest (e.g. GEN_LEN) are taken as measured.
        target_metrics = {m for c in bench.checker_names.values() for m in targets.get(c).metrics()}
        reference = {k: float(v) for k, v in truth.items() if k in target_metrics}
        for k, want in exact.items():
            if abs(float(truth[k]) - want) > 1e-6 * max(1.0, abs(want)):
                raise KitError(f"synthetic {bench.name}: ground truth scores {truth[k]} {k}, not {want}")
        primary = next(iter(exact))
        if float(shifted[primary]) >= SHIFT_MAX_FRACTION * exact[primary]:
            raise KitError(f"synthetic {bench.name}: an index shift by one still scores {shifted[primary]:.3f} "
                           f"{primary} (reference {exact[primary]}); labels are not diverse enough, try another --seed")
    except BaseException:
        for sub in ("dataset", "model"):
            shutil.rmtree(out / sub, ignore_errors=True)  # never leave a half-written set behind
        raise
    info = {"model": bench.name, "n": n, "seed": seed, **({"options": chosen} if chosen else {}),
            "reference": reference,
            "index_shift": {k: float(v) for k, v in shifted.items()},
            "checker_targets": {t: targets.get(c).checker_name for t, c in bench.checker_names.items()}}
    atomic_write_json(marker, info)
    return info


def describe(info: dict) -> str:
    return json.dumps(info, indent=2)
