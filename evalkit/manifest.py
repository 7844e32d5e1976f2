"""Partition manifests (<run>/<p>/partition.json) and the run config they carry.

A partition exists only once its manifest is there: it is written atomically
after LoadGen finished, with the accuracy log's size and sha256 so gather can
tell a complete log from a truncated or replaced one.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from .errors import KitError
from .rundir import MANIFEST
from .util import KIT_VERSION, atomic_write_json, config_hash, git_commit, sha256_file

SYNTHETIC_MARKER = "SYNTHETIC.json"


def read_synthetic(dataset: Path) -> dict | None:
    f = Path(dataset) / SYNTHETIC_MARKER
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except ValueError:
        raise KitError(f"{f}: corrupt synthetic-data marker; write the set again with "
                       f"`{Path(__file__).resolve().parent.parent}/bin/evalkit synth MODEL --out DIR --n N`") from None


def run_config(bench, spec) -> dict:
    """What must be identical across partitions for their logs to merge (hashed).

    Device, offsets and paths are left out on purpose: nodes differ in those, the
    results must not. Batch size too, unless the model declares that its bytes depend
    on it (Benchmark.batch_invariant = False; the contract test holds the others to
    batch invariance). The checkpoint and every dataset file are identified by content
    (evalkit/identity.py): another file of the same size is another run.
    """
    from .identity import checkpoint_identity, dataset_identity

    synth = read_synthetic(spec.dataset)
    config = {
        "model": bench.name,
        "mlperf_name": bench.mlperf_name,
        "n_count": spec.n_count,
        "n_partitions": spec.n_partitions,
        "scenario": spec.scenario,
        "mode": spec.mode,
        "data_type": spec.data_type,
        "backend": spec.backend,     # how it ran changes the outputs; the backend's own options
        "options": spec.options,     # (server URL, timeouts) are where, like device, and are left out;
                                     # only the model's own declared options, defaults filled
        "payload_dtype": bench.payload_dtype,
        "synthetic": synth is not None,
        "synthetic_seed": synth.get("seed") if synth else None,
        "fingerprint": bench.fingerprint(Path(spec.dataset), Path(spec.model_path)),
        "checkpoint": checkpoint_identity(Path(spec.model_path)),
        "dataset_files": dataset_identity(dataset_files(spec.dataset)),
    }
    if not bench.batch_invariant:
        config["batch_size"] = spec.batch_size
    return config


def dataset_files(dataset: Path) -> list[list]:
    """[relative path, size, sha256] of every file of the dataset dir (sha256 cached per machine)."""
    from .identity import tree_identity

    return tree_identity(Path(dataset), "dataset (--dataset)")


def write_manifest(part_dir: Path, bench, spec, p: int, rng: tuple[int, int], config: dict,
                   chash: str, timings: dict, backend_info: dict | None = None, extra: dict | None = None) -> dict:
    logs = {}
    for name in sorted(os.listdir(part_dir)):
        if name.startswith("mlperf_log_"):
            f = part_dir / name
            logs[name] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
    m = {
        "status": "complete",
        "model": bench.name,
        "partition": p,
        "n_partitions": spec.n_partitions,
        "n_count": spec.n_count,
        "range": list(rng),
        "payload_dtype": bench.payload_dtype,
        "config": config,
        "config_hash": chash,
        "dataset": str(Path(spec.dataset).resolve()),
        "model_path": str(Path(spec.model_path).resolve()),
        "device": spec.device,
        "backend": {"name": spec.backend, **(backend_info or {})},
        "batch_size": spec.batch_size,
        "host": socket.gethostname(),
        "timings": timings,
        "logs": logs,
        "kit_version": KIT_VERSION,
        "kit_commit": git_commit(),
    }
    m.update(extra or {})
    # the dataset's file list, named file by file when gather finds another config; hashed again
    # now, so data that changed while the partition ran cannot pass for what it started with
    from .identity import IDENTITY, dataset_identity

    files = dataset_files(Path(spec.dataset))
    if dataset_identity(files) != config["dataset_files"]:
        raise KitError(f"dataset {spec.dataset} changed while partition {p} ran (its files' sha256 differ from "
                       f"those at the start); rerun the partition on data that stays put")
    atomic_write_json(part_dir / IDENTITY, {"dataset": files})
    atomic_write_json(part_dir / MANIFEST, m)
    return m


__all__ = ["write_manifest", "run_config", "config_hash", "read_synthetic"]
