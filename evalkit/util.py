"""Small shared helpers: atomic writes, hashing, kit version."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

KIT_VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent.parent
KIT_CLI = shlex.quote(str(ROOT / "bin" / "evalkit"))  # the CLI in the right env, from any directory


def atomic_write_text(path: Path, text: str) -> None:
    """Write via temp file + rename so a reader never sees half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would: others on a shared filesystem can read it
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def disk_full(e: OSError, where: Path):
    """A one-line KitError for a full disk or quota, naming the path and the free space; None
    for any other OSError."""
    from .errors import KitError

    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    path = Path(e.filename) if getattr(e, "filename", None) else Path(where)
    probe = path if path.exists() else path.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = 0
    return KitError(f"no space left writing {path} ({free / 2**20:.1f} MiB free on its filesystem); free some "
                    f"space and rerun the same command: complete partitions and answered samples are kept")
