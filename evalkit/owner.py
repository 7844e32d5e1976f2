"""Who runs a partition: <run>/<p>/owner.json, claimed before the partition dir is touched.

The claim is a file created with O_CREAT|O_EXCL: atomic on local filesystems and on NFS v3
and later (the server decides the create), so of two launches at the same instant exactly
one gets it; no lock daemon or flock (unreliable over NFS) is needed. The owner holds host,
pid, the pid's start time (so a reused pid is not taken for the owner) and the launch
time, and touches the file every HEARTBEAT_S seconds. An owner is gone when, on its own
host, its process is gone, or, seen from another host, its heartbeat is older than the
stall limit `evalkit status` uses; such a claim is taken over with a warning.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from .errors import PartitionOwned
from .rundir import STALL_MINUTES

OWNER = "owner.json"
HEARTBEAT_S = 5.0


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); None when
    there is no such process or it is dead (a zombie its parent has not reaped yet)."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # state: exited, only its exit status is left
        return None
    return fields[19]


def read_owner(part_dir: Path) -> dict | None:
    f = Path(part_dir) / OWNER
    try:
        o = json.loads(f.read_text())
        o["heartbeat"] = f.stat().st_mtime
        return o
    except FileNotFoundError:
        return None
    except ValueError:  # torn by a crash mid-write: nobody can be running under it
        return {"host": "?", "pid": -1, "heartbeat": 0.0, "torn": True}


def is_alive(o: dict, stall_s: float = STALL_MINUTES * 60, now: float | None = None) -> bool:
    if o.get("torn"):
        return False
    if o.get("host") == socket.gethostname():
        return gone_here(o) is None
    now = time.time() if now is None else now
    return now - float(o.get("heartbeat", 0)) <= stall_s


def gone_here(o: dict) -> str | None:
    """Why the owner, a process on this host, is known to be gone (None: it runs, or it is on
    another host, where only its heartbeat can tell). Its pid is compared with the start time
    the record keeps, so a pid the kernel has since given to another process is not the owner."""
    if o.get("torn") or o.get("host") != socket.gethostname():
        return None
    pid = int(o.get("pid", -1))
    start = _proc_start(pid)
    if start is None:
        return f"worker pid {pid} on this host is gone"
    if o.get("proc_start") is not None and start != o["proc_start"]:
        return f"worker pid {pid} on this host is gone (the pid now belongs to another process)"
    return None


def describe(o: dict) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(o.get("started", 0)))
    return f"host {o.get('host')} pid {o.get('pid')} since {since}"


class Claim:
    """Owns part_dir while held: acquire() before touching the dir, release() at the end."""

    def __init__(self, part_dir: Path, p: int):
        self.part_dir, self.p = Path(part_dir), p
        self.path = self.part_dir / OWNER
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                   "started": time.time()}

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
        except OSError as e:  # a full disk: leave no empty claim behind, name the file
            self.path.unlink(missing_ok=True)
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        return True

    def acquire(self) -> "Claim":
        self.part_dir.mkdir(parents=True, exist_ok=True)
        if not self._create():
            o = read_owner(self.part_dir)
            if o is not None and is_alive(o):
                raise PartitionOwned(f"partition {self.p} is being run by {describe(o)} ({self.path}); "
                                     f"its files are left alone: wait for it, or stop that process and rerun")
            if o is not None:
                print(f"warning: partition {self.p}: taking over from {describe(o)}, which is gone "
                      f"({'process ended' if o.get('host') == self.me['host'] else 'no heartbeat'})",
                      file=sys.stderr)
            stale = self.path.with_name(f"{OWNER}.stale-{os.getpid()}")
            try:
                os.replace(self.path, stale)  # of two takers only one renames it; the other finds none
                stale.unlink()
            except FileNotFoundError:
                pass
            if not self._create():
                o = read_owner(self.part_dir) or {}
                raise PartitionOwned(f"partition {self.p} was just claimed by {describe(o)} ({self.path})")
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full or flaky disk: the owner check on the same host uses the pid anyway

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        o = read_owner(self.part_dir)
        if o is not None and o.get("pid") == self.me["pid"] and o.get("host") == self.me["host"]:
            self.path.unlink(missing_ok=True)


def check_free(part_dirs: list[Path]) -> None:
    """The launcher's check before it writes anything: PartitionOwned naming every live owner."""
    busy = []
    for d in part_dirs:
        o = read_owner(d)
        if o is not None and is_alive(o):
            busy.append(f"partition {Path(d).name} by {describe(o)}")
    if busy:
        raise PartitionOwned(f"another launch is running in {Path(part_dirs[0]).parent}: {'; '.join(busy)}; "
                             f"nothing was started or changed: wait for it, or use another LOG_PATH")
