"""The merged log, iterated once for every model: what a model's score() may assume.

Range check, payload length, first-occurrence dedup (as the MLCommons accuracy
scripts keep the first of LoadGen's repeated MultiStream samples) and the empty-log
error live here, so no model repeats them. Every entry is checked, repeats included:
a wrong payload dtype shows on any of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .accuracy_log import decode_payloads
from .errors import KitError


def clean_pairs(bench, entries: Iterable[tuple[int, bytes]], n_count: int, label: str = "the accuracy log"
                ) -> Iterator[tuple[int, np.ndarray]]:
    dtype = np.dtype(bench.payload_dtype)
    seen = np.zeros(n_count, dtype=bool)
    kept = 0
    for qsl_idx, raw in entries:
        q = int(qsl_idx)
        if not 0 <= q < n_count:
            raise KitError(f"{label}: qsl_idx {q} is outside the evaluated range 0..{n_count - 1}; "
                           f"the log does not belong to this run")
        if len(raw) % dtype.itemsize:
            raise KitError(f"{label}: the response for qsl_idx {q} has {len(raw)} bytes, not a whole number of "
                           f"{dtype} ({bench.name}'s payload dtype); check the payload dtype")
        arr = np.frombuffer(raw, dtype=dtype)
        if bench.payload_size is not None and arr.size != bench.payload_size:
            raise KitError(f"{label}: the response for qsl_idx {q} holds {arr.size} {dtype} values, a {bench.name} "
                           f"payload holds {bench.payload_size}; check the payload dtype")
        if seen[q]:
            continue
        seen[q] = True
        kept += 1
        yield q, arr
    if not kept:
        raise KitError(f"{label} has no entries; the run produced no responses")


def score(bench, entries: Iterable[tuple[int, bytes]], dataset: Path, n_count: int,
          model_path: Path | None = None, label: str = "the accuracy log") -> dict:
    return bench.score(clean_pairs(bench, entries, n_count, label), Path(dataset), n_count, model_path)


def score_log(bench, log: Path, dataset: Path, n_count: int, model_path: Path | None = None) -> dict:
    return score(bench, decode_payloads(log), dataset, n_count, model_path, label=str(log))
