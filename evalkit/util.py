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
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the file being written, not a temp name nobody will find
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would: others on a shared filesystem can read it
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename in (None, tmp):  # a failed write names no file (or the temp one): name the real one
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
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


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
RERUN = "rerun the same command: complete partitions and answered samples are kept"


def write_error(e: OSError, where: Path, todo: str | None = None):
    """A one-line KitError for an OSError a user can act on: a full disk or quota, a read-only
    filesystem, no permission. It names the path (the error's own, else `where`) and
    what to do (`todo`, else: make room / use a writable LOG_PATH, then rerun). None for any
    other OSError (a bug or a device error: it keeps its traceback)."""
    from .errors import KitError

    if e.errno not in WRITE_ERRNOS:
        return None
    path = Path(e.filename) if getattr(e, "filename", None) else Path(where)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = shutil.disk_usage(probe).free
        except OSError:
            free = 0
        what = "no space left" if e.errno == errno.ENOSPC else "disk quota exceeded"
        return KitError(f"{what} writing {path} ({free / 2**20:.1f} MiB free on its filesystem); "
                        f"{todo or 'free some space and ' + RERUN}")
    if e.errno == errno.EROFS:
        return KitError(f"{path} is on a read-only filesystem; "
                        f"{todo or 'use a writable LOG_PATH (or remount it read-write) and ' + RERUN}")
    return KitError(f"{path}: permission denied for this user; "
                    f"{todo or 'give this user access (a LOG_PATH must be writable) and ' + RERUN}")


def disk_full(e: OSError, where: Path):
    """A one-line KitError for a full disk or quota, naming the path and the free space; None
    for any other OSError."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return write_error(e, where)


def load_or_explain(what: str, path: Path, load, *args, **kwargs):
    """load(*args, **kwargs) (an HF from_pretrained, a tokenizer) with any failure as one KitError line
    naming `path` and the files in it: the Rust tokenizers raise bare Exception, transformers
    OSError/ValueError/KeyError/JSONDecodeError, depending on which file is bad."""
    from .errors import KitError

    try:
        return load(*args, **kwargs)
    except (KitError, ImportError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - every reader's own type: the file is bad, say which dir
        p = Path(path)
        files = ", ".join(sorted(x.name for x in p.iterdir() if x.is_file())[:8]) if p.is_dir() else ""
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise KitError(f"cannot load the {what} from {p}{f' ({files})' if files else ''}: "
                       f"{type(e).__name__}: {reason}; the files are corrupt or not the published format") from None


def file_ends(path: Path, head: int = 0, tail: int = 0) -> "tuple[int, bytes, bytes] | str":
    """(size, first `head` bytes, last `tail` bytes) of a file, or what is wrong with it: "is missing",
    "is empty", "is unreadable (...)". The cheap first look of every dataset/checkpoint file check."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "is empty"
        with open(path, "rb") as fh:
            first = fh.read(head)
            fh.seek(max(0, size - tail))
            last = fh.read(tail) if tail else b""
    except FileNotFoundError:
        return "is missing"
    except OSError as e:
        return f"is unreadable ({e.strerror})"
    return size, first, last
