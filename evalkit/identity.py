"""Checkpoints and datasets identified by content, hashed once per machine.

The config hash must change when the weights or the data change, even when the size
does not (a re-quantised checkpoint, labels inverted, rows reordered). Hashing 140 GB
at every launch is not an option, so each file's sha256 is cached under
EVALKIT_HASH_CACHE (default ~/.cache/evalkit/sha256), keyed by (real path, size,
mtime_ns, inode): any write to the file changes the key, and the next launch hashes it
again. One small file per key, written atomically, so concurrent workers never corrupt
the cache.

The checkpoint's file list is in the run config itself (a few files). A dataset can
hold 50,000 images: the config holds the digest of its file list, and the list itself
travels beside the manifest (identity.json in each partition dir and in the gathered
run dir), so a mismatch is still named file by file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import KitError
from .util import atomic_write_text, sha256_file


def cache_dir() -> Path:
    d = os.environ.get("EVALKIT_HASH_CACHE")
    return Path(d) if d else Path.home() / ".cache" / "evalkit" / "sha256"


def file_sha256(path: Path) -> str:
    """sha256 of a file, from the machine's cache when the file has not changed since."""
    path = Path(path)
    st = path.stat()
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    slot = cache_dir() / hashlib.sha1(key.encode()).hexdigest()
    try:
        got = slot.read_text().strip()
        if len(got) == 64:
            return got
    except OSError:
        pass
    digest = sha256_file(path)
    try:
        slot.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(slot, digest + "\n")
    except OSError:
        pass  # a read-only home only costs a rehash next time
    return digest


IDENTITY = "identity.json"  # {"dataset": [[rel, size, sha256], ...]}: beside manifests and gather.json


def tree_identity(path: Path, what: str) -> list[list]:
    """[relative path, size, sha256] for every file of a dir (or the one file), dot-files aside."""
    mp = Path(path)
    if mp.is_file():
        return [[mp.name, mp.stat().st_size, file_sha256(mp)]]
    if not mp.is_dir():
        raise KitError(f"{what} {mp} does not exist")
    out = []
    for root, dirs, files in os.walk(mp):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .cache, .git: not the model
        for name in sorted(files):
            if name.startswith("."):
                continue
            f = Path(root) / name
            out.append([f.relative_to(mp).as_posix(), f.stat().st_size, file_sha256(f)])
    if not out:
        raise KitError(f"{what} dir {mp} is empty")
    return out


def checkpoint_identity(model_path: Path) -> list[list]:
    return tree_identity(model_path, "model checkpoint (--model_path)")


def dataset_identity(files: list[list]) -> dict:
    """What the run config holds for a dataset's file list: its size and digest."""
    import json

    blob = json.dumps(files, separators=(",", ":")).encode()
    return {"files": len(files), "sha256": hashlib.sha256(blob).hexdigest()}


def read_identity(d: Path) -> dict:
    """identity.json of a partition or run dir ({} when absent or unreadable: names are then unknown)."""
    import json

    try:
        return json.loads((Path(d) / IDENTITY).read_text())
    except (OSError, ValueError):
        return {}


def config_difference(a: dict, b: dict, files_a: list | None = None, files_b: list | None = None) -> str:
    """The keys in which two run configs differ; checkpoint and dataset files named one by one
    (the dataset's from the identity lists files_a/files_b when given)."""
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    out = []
    for k in diff:
        if k == "checkpoint":
            out.append("checkpoint: " + describe_difference(a.get(k), b.get(k)))
        elif k == "dataset_files" and files_a is not None and files_b is not None:
            out.append("dataset file " + describe_difference(files_a, files_b))
        else:
            out.append(k)
    return ", ".join(out)


def describe_difference(a: list, b: list) -> str:
    """'resnet50.pth (sha256 1a2b3c4d.. vs 5e6f7a8b..)': which checkpoint files differ."""
    da, db = {x[0]: x for x in a or []}, {x[0]: x for x in b or []}
    out = []
    for name in sorted(set(da) | set(db)):
        x, y = da.get(name), db.get(name)
        if x is None or y is None:
            out.append(f"{name} (in one checkpoint only)")
        elif x != y:
            out.append(f"{name} (sha256 {str(x[2])[:12]}.. vs {str(y[2])[:12]}..)")
    return ", ".join(out[:3]) + (f" and {len(out) - 3} more" if len(out) > 3 else "")
