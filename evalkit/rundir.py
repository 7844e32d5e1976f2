"""The run directory: its layout, and the state of every partition in it.

    <run>/run.json                      launches: the command that (re)runs each node's partitions
    <run>/<p>/user.conf                 written before the model loads (partition starting)
    <run>/<p>/progress.json             while running, and after a failure
    <run>/<p>/partition.json            the manifest: written atomically once LoadGen finished
    <run>/<p>/mlperf_log_*              LoadGen's own files
    <run>/merged_mlperf_log_accuracy.json, gather.json, accuracy.{txt,json}, performance.json

This is the one module that lists partition dirs and decides a partition's state
(complete, running, stalled, preempted, failed, missing). gather, perf, status, report and
the launcher all ask it, so they cannot disagree. A preempted partition (SIGTERM, Ctrl-C) kept
its answered samples and waits for a resume; a failed one stopped on an error.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KitError
from .partition import partition_range
from .util import atomic_write_json

MANIFEST = "partition.json"
PROGRESS_FILE = "progress.json"
RUN_INFO = "run.json"
USER_CONF = "user.conf"
WORKER_LOG = "worker.log"
ACCURACY_LOG = "mlperf_log_accuracy.json"
SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
LOADGEN_FILES = (ACCURACY_LOG, SUMMARY, DETAIL, "mlperf_log_trace.json")
MERGED = "merged_mlperf_log_accuracy.json"
GATHER_INFO = "gather.json"
STALL_MINUTES = 10.0
STATES = ("complete", "running", "stalled", "preempted", "failed", "missing")
NEEDS_RESUME = ("stalled", "preempted", "failed", "missing")  # states a resume picks up
# which copy of a partition counts when several run dirs hold one
_RANK = {"complete": 5, "running": 4, "stalled": 3, "preempted": 2, "failed": 1, "missing": 0}


def read_json(f: Path) -> dict:
    try:
        return json.loads(Path(f).read_text())
    except ValueError:
        raise KitError(f"{f}: corrupt JSON; rerun the command that writes it") from None


def partition_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """(p, dir) of every partition dir, numeric order (never lexicographic: "10" after "9")."""
    rd = Path(run_dir)
    if not rd.is_dir():
        return []
    return sorted(((int(x.name), x) for x in rd.iterdir() if x.is_dir() and x.name.isdigit()), key=lambda t: t[0])


def read_manifest(part_dir: Path) -> dict | None:
    """The manifest, or None when the partition is not complete."""
    f = Path(part_dir) / MANIFEST
    if not f.exists():
        return None
    try:
        m = json.loads(f.read_text())
    except ValueError:
        raise KitError(f"{f}: corrupt partition manifest; delete the partition dir to rerun it") from None
    if m.get("status") != "complete" or "config_hash" not in m:
        return None
    return m


def read_progress(part_dir: Path) -> dict | None:
    f = Path(part_dir) / PROGRESS_FILE
    return read_json(f) if f.exists() else None


def complete_partitions(run_dirs: list[Path]) -> dict[int, tuple[Path, dict]]:
    """p -> (dir, manifest) of every complete partition over run_dirs; KitError for a partition
    found complete twice or a manifest in the wrong dir."""
    found: dict[int, tuple[Path, dict]] = {}
    for rd in map(Path, run_dirs):
        for p, d in partition_dirs(rd):
            m = read_manifest(d)
            if m is None:
                continue
            if int(m["partition"]) != p:
                raise KitError(f"{d / MANIFEST}: manifest says partition {m['partition']} but the dir is {d.name}")
            if p in found:
                raise KitError(f"partition {p} appears twice: {found[p][0]} and {d}; keep one copy")
            found[p] = (d, m)
    return found


def is_run_dir(d: Path) -> bool:
    d = Path(d)
    return any((d / n).exists() for n in ("accuracy.json", "performance.json", GATHER_INFO)) or any(
        (x / MANIFEST).exists() or (x / PROGRESS_FILE).exists() or (x / USER_CONF).exists()
        for _, x in partition_dirs(d))


# ------------------------------------------------------------------ partition state

@dataclass
class Part:
    p: int
    state: str               # one of STATES
    done: int = 0
    total: int = 0           # 0: unknown (never started, or a performance run before LoadGen said)
    rate: float = 0.0
    cached: int = 0
    updated: float | None = None
    started: float | None = None
    error: str | None = None
    run_dir: Path | None = None
    device: str | None = None
    host: str | None = None
    owner: str | None = None
    manifest: dict | None = None
    phase: str | None = None  # running: "loading" until the first answer, then None

    @property
    def eta(self) -> float | None:
        from .progress import eta_seconds
        return eta_seconds(self.done, self.total, self.rate) if self.state == "running" else None

    @property
    def wall_s(self) -> float | None:
        if self.manifest is not None:
            t = self.manifest.get("timings", {})
            return t["finished"] - t["started"] if "finished" in t else t.get("loadgen_s")
        if self.started is not None and self.updated is not None:
            return self.updated - self.started
        return None


@dataclass
class RunState:
    parts: dict[int, Part] = field(default_factory=dict)
    n_partitions: int | None = None
    meta: dict = field(default_factory=dict)   # model, scenario, mode, ... from a manifest or progress file
    launches: list[dict] = field(default_factory=list)

    def by_state(self, state: str) -> list[int]:
        return sorted(p for p, x in self.parts.items() if x.state == state)

    @property
    def done(self) -> int:
        return sum(x.done for x in self.parts.values())

    @property
    def total(self) -> int:
        return sum(x.total for x in self.parts.values())

    @property
    def rate(self) -> float:
        return sum(x.rate for x in self.parts.values() if x.state == "running")

    @property
    def complete(self) -> bool:
        return bool(self.parts) and all(x.state == "complete" for x in self.parts.values())

    @property
    def eta(self) -> float | None:
        """Partitions run side by side: the run ends with its slowest one; unknown while one needs a resume."""
        if any(x.state in NEEDS_RESUME for x in self.parts.values()):
            return None
        running = [x.eta for x in self.parts.values() if x.state == "running"]
        if not running:
            return 0.0 if self.parts else None
        return None if None in running else max(running)


_META = ("model", "scenario", "mode", "data_type", "synthetic", "n_count", "n_partitions")


def partition_state(d: Path, p: int, now: float, stall_s: float, meta: dict) -> Part | None:
    """The state of one partition dir (None: the dir holds nothing of a partition yet)."""
    m = read_manifest(d)
    if m is not None:
        start, stop = m["range"]
        t = m.get("timings", {})
        meta.setdefault("n_partitions", m["n_partitions"])
        meta.setdefault("n_count", m["n_count"])
        for k in ("model", "scenario", "mode", "data_type", "synthetic"):
            meta.setdefault(k, m["config"].get(k))
        return Part(p, "complete", stop - start, stop - start, float(t.get("samples_per_s") or 0.0),
                    int(t.get("samples_cached", 0)), t.get("finished"), t.get("started"), None, d.parent,
                    m.get("device"), m.get("host"), manifest=m)
    pr = read_progress(d)
    if pr is None:
        # owner.json (the claim), then user.conf: written before the model loads, the partition is starting
        marks = [f for f in (d / "owner.json", d / USER_CONF) if f.exists()]
        if not marks:
            return None
        t = max(f.stat().st_mtime for f in marks)
        gone = _gone(d, None)
        if gone:
            return Part(p, "failed", updated=t, started=t, error=gone, run_dir=d.parent)
        return Part(p, "running" if now - t <= stall_s else "stalled", updated=t, started=t, run_dir=d.parent,
                    phase="loading")
    for k in _META:
        if pr.get(k) is not None:
            meta.setdefault(k, pr[k])
    # "complete" without a manifest: finishing
    state = {"failed": "failed", "preempted": "preempted"}.get(pr.get("status"), "running")
    updated = pr.get("updated")
    if state == "running" and (updated is None or now - float(updated) > stall_s):
        state = "stalled"
    done = int(pr.get("done", 0))
    owner, error = None, pr.get("error")
    gone = _gone(d, pr) if state == "running" else None
    if gone:  # its worker died on this host (SIGKILL, OOM) without a word: no need to wait for the stall limit
        state, error = "failed", gone
    if state == "running":
        from .owner import describe, read_owner
        o = read_owner(d)
        owner = describe(o) if o is not None and not o.get("torn") else None
    return Part(p, state, done, int(pr.get("total", 0)), float(pr.get("rate") or 0.0),
                int(pr.get("cached", 0)), updated, pr.get("started"), error, d.parent,
                pr.get("device"), pr.get("host"), owner,
                phase=(pr["phase"] if "phase" in pr else "loading" if done == 0 and not pr.get("rate") else None)
                if state == "running" else None)


def _gone(d: Path, pr: dict | None) -> str | None:
    """Why an unfinished partition's worker is known dead, seen from this host (None: it runs, or
    only its heartbeat could tell, which the stall limit covers): its owner record names this host
    and a pid that is gone or now another process; or there is no owner record left although
    progress.json, written on this host, still says running (the worker exited without a word)."""
    from .owner import gone_here, read_owner
    o = read_owner(d)
    if o is not None:
        return gone_here(o)
    if pr is not None and pr.get("status") == "running" and pr.get("host") == socket.gethostname():
        return "the worker on this host exited without finishing (no owner.json left)"
    return None


def collect(run_dirs: list[Path], stall_minutes: float = STALL_MINUTES, only: list[int] | None = None,
            now: float | None = None) -> RunState:
    """The state of every partition 0..P-1 over run_dirs (only: just these partitions)."""
    now = time.time() if now is None else now
    st = RunState()
    for rd in map(Path, run_dirs):
        if not rd.is_dir():
            raise KitError(f"run dir {rd} does not exist")
        info = read_run_info(rd)
        st.launches += [dict(x, run_dir=str(rd)) for x in info.get("launches", {}).values()]
        if info.get("n_partitions"):
            st.meta.setdefault("n_partitions", info["n_partitions"])
        if info.get("bounds"):
            st.meta.setdefault("bounds", info["bounds"])
        for p, d in partition_dirs(rd):
            if only is not None and p not in only:
                continue
            part = partition_state(d, p, now, stall_minutes * 60, st.meta)
            old = st.parts.get(p)
            if part is not None and (old is None or _RANK[part.state] > _RANK[old.state]):
                st.parts[p] = part
    st.n_partitions = st.meta.get("n_partitions")
    wanted = only if only is not None else range(st.n_partitions or 0)
    n_count = st.meta.get("n_count")
    for p in wanted:
        x = st.parts.setdefault(p, Part(p, "missing"))
        if x.total == 0 and n_count and st.n_partitions and st.meta.get("mode") != "performance" \
                and p < st.n_partitions:
            b = st.meta.get("bounds")
            start, stop = (b[p], b[p + 1]) if b and len(b) == st.n_partitions + 1 else \
                partition_range(n_count, st.n_partitions, p)
            x.total = stop - start   # failed before its first progress write, or never started
    st.parts = dict(sorted(st.parts.items()))
    return st


# ------------------------------------------------------------------ run.json

def read_run_info(run_dir: Path) -> dict:
    f = Path(run_dir) / RUN_INFO
    return read_json(f) if f.exists() else {}


def record_launch(run_dir: Path, partitions: list[int], n_partitions: int, command: str,
                  config_hash: str | None = None, bounds: list[int] | None = None) -> None:
    """Keep the command that (re)runs these partitions. Keyed by the partitions it covers, so
    nodes that launch different offsets into one shared run dir each keep their own line."""
    info = read_run_info(run_dir)
    key = f"{partitions[0]}-{partitions[-1]}"
    launches = info.get("launches", {})
    launches[key] = {"partitions": partitions, "command": command, "cwd": os.getcwd(),
                     "host": socket.gethostname(), "time": time.time()}
    out = {"n_partitions": n_partitions, "launches": launches}
    if bounds or info.get("bounds"):
        out["bounds"] = list(bounds or info["bounds"])  # partition ranges, for partitions not started yet
    if config_hash or info.get("config_hash"):
        out["config_hash"] = config_hash or info["config_hash"]
    atomic_write_json(Path(run_dir) / RUN_INFO, out)


def check_same_run(run_dir: Path, config: dict, chash: str) -> None:
    """KitError when run_dir already holds a run of another config (before anything is written)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    info = read_run_info(run_dir)
    for p, (d, m) in sorted(complete_partitions([run_dir]).items()):
        if m["config_hash"] != chash:
            from .identity import config_difference
            raise KitError(f"LOG_PATH {run_dir} holds another run (partition {p}: config hash {m['config_hash']}, "
                           f"this one {chash}; differs in {config_difference(m['config'], config)}); nothing was "
                           f"changed: use a new LOG_PATH")
    if info.get("config_hash") not in (None, chash):
        raise KitError(f"LOG_PATH {run_dir} holds another run (run.json: config hash {info['config_hash']}, this one "
                       f"{chash}); nothing was changed: use a new LOG_PATH")
