"""Checkpoints identified by content, hashed once per machine.

The config hash must change when the weights change, even when the size does not
(a re-quantised or fine-tuned checkpoint). Hashing 140 GB at every launch is not
an option, so each file's sha256 is cached under EVALKIT_HASH_CACHE (default
~/.cache/evalkit/sha256), keyed by (real path, size, mtime_ns, inode): any write
to the file changes the key, and the next launch hashes it again. One small file
per key, written atomically, so concurrent workers never corrupt the cache.
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


def checkpoint_identity(model_path: Path) -> list[list]:
    """[relative path, size, sha256] for every file of a checkpoint dir (or the one file)."""
    mp = Path(model_path)
    if mp.is_file():
        return [[mp.name, mp.stat().st_size, file_sha256(mp)]]
    if not mp.is_dir():
        raise KitError(f"model checkpoint {mp} does not exist; pass --model_path")
    out = []
    for root, dirs, files in os.walk(mp):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .cache, .git: not the model
        for name in sorted(files):
            if name.startswith("."):
                continue
            f = Path(root) / name
            out.append([f.relative_to(mp).as_posix(), f.stat().st_size, file_sha256(f)])
    if not out:
        raise KitError(f"model checkpoint dir {mp} is empty")
    return out


def config_difference(a: dict, b: dict) -> str:
    """The keys in which two run configs differ; the checkpoint named file by file."""
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if "checkpoint" not in diff:
        return ", ".join(diff)
    return ("checkpoint: " + describe_difference(a.get("checkpoint"), b.get("checkpoint"))
            + "".join(f", {k}" for k in diff if k != "checkpoint"))


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
