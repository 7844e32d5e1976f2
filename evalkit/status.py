"""One progress and ETA for a whole run: `python -m evalkit status RUN_DIR [RUN_DIR ...]`.

Reads what partitions leave in their dirs (partition.json once complete, progress.json
while running or after a failure) on any node, and run.json, where each launch records
the command that resumes its partitions. The local launcher draws its combined line
with the same code (progress_line).
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest as mf
from .errors import KitError
from .partition import partition_range
from .progress import PROGRESS_FILE, fmt_eta, eta_seconds
from .util import atomic_write_json

RUN_INFO = "run.json"
STALL_MINUTES = 10.0
# which copy of a partition counts when several run dirs hold one
_RANK = {"complete": 4, "running": 3, "stalled": 2, "failed": 1, "missing": 0}


@dataclass
class Part:
    p: int
    state: str               # complete, running, stalled, failed, missing
    done: int = 0
    total: int = 0           # 0: unknown (performance run, or never started)
    rate: float = 0.0
    cached: int = 0
    updated: float | None = None
    error: str | None = None
    run_dir: Path | None = None

    @property
    def eta(self) -> float | None:
        return eta_seconds(self.done, self.total, self.rate) if self.state == "running" else None


@dataclass
class RunState:
    parts: dict[int, Part] = field(default_factory=dict)
    n_partitions: int | None = None
    meta: dict = field(default_factory=dict)   # model, scenario, mode from a manifest or progress file
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
    def eta(self) -> float | None:
        """Partitions run side by side: the run ends with its slowest one; unknown while one needs a resume."""
        if any(x.state in ("stalled", "failed", "missing") for x in self.parts.values()):
            return None
        running = [x.eta for x in self.parts.values() if x.state == "running"]
        if not running:
            return 0.0 if self.parts else None
        return None if None in running else max(running)


def _read_json(f: Path) -> dict:
    try:
        return json.loads(f.read_text())
    except ValueError:
        raise KitError(f"{f}: corrupt JSON") from None


def _one(d: Path, p: int, now: float, stall_s: float, meta: dict) -> Part | None:
    m = mf.read_manifest(d)
    if m is not None:
        start, stop = m["range"]
        t = m.get("timings", {})
        meta.setdefault("n_partitions", m["n_partitions"])
        meta.setdefault("n_count", m["n_count"])
        for k in ("model", "scenario", "mode"):
            meta.setdefault(k, m["config"].get(k))
        return Part(p, "complete", stop - start, stop - start, float(t.get("samples_per_s") or 0.0),
                    int(t.get("samples_cached", 0)), t.get("finished"), None, d.parent)
    f = d / PROGRESS_FILE
    if not f.exists():
        conf = d / "user.conf"  # written before the model loads: the partition is starting
        if not conf.exists():
            return None
        t = conf.stat().st_mtime
        return Part(p, "running" if now - t <= stall_s else "stalled", updated=t, run_dir=d.parent)
    pr = _read_json(f)
    for k in ("n_partitions", "n_count", "model", "scenario", "mode"):
        if pr.get(k) is not None:
            meta.setdefault(k, pr[k])
    state = "failed" if pr.get("status") == "failed" else "running"  # "complete" without manifest: finishing
    updated = pr.get("updated")
    if state == "running" and (updated is None or now - float(updated) > stall_s):
        state = "stalled"
    return Part(p, state, int(pr.get("done", 0)), int(pr.get("total", 0)), float(pr.get("rate") or 0.0),
                int(pr.get("cached", 0)), updated, pr.get("error"), d.parent)


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
        for d in rd.iterdir():
            if not (d.is_dir() and d.name.isdigit()) or (only is not None and int(d.name) not in only):
                continue
            part = _one(d, int(d.name), now, stall_minutes * 60, st.meta)
            old = st.parts.get(int(d.name))
            if part is not None and (old is None or _RANK[part.state] > _RANK[old.state]):
                st.parts[part.p] = part
    st.n_partitions = st.meta.get("n_partitions")
    wanted = only if only is not None else range(st.n_partitions or 0)
    n_count = st.meta.get("n_count")
    for p in wanted:
        x = st.parts.setdefault(p, Part(p, "missing"))
        if x.total == 0 and n_count and st.n_partitions and st.meta.get("mode") != "performance":
            start, stop = partition_range(n_count, st.n_partitions, p)
            x.total = stop - start   # failed before its first progress write, or never started
    st.parts = dict(sorted(st.parts.items()))
    return st


def progress_line(st: RunState, label: str) -> str:
    """'label: done/total (pct) rate ETA | p0 ... | p1 ...': the launcher's live line and status's total."""
    if st.total > 0 and st.done >= st.total:  # nothing running: a rate of 0 would read as a stall
        head = f"{label}: {st.done}/{st.total} (100.0%) complete"
    elif st.total > 0:
        head = (f"{label}: {st.done}/{st.total} ({100.0 * st.done / st.total:5.1f}%) {st.rate:.2f} samples/s "
                f"ETA {fmt_eta(st.eta)}")
    else:  # performance runs: LoadGen decides how many samples
        head = f"{label}: {st.done} samples {st.rate:.2f} samples/s"
    tail = []
    for x in st.parts.values():
        n = f"{x.done}/{x.total}" if x.total > 0 else f"{x.done}"
        tail.append(f"p{x.p} {n} " + (f"ETA {fmt_eta(x.eta)}" if x.state == "running" else x.state))
    return head + "".join(f" | {t}" for t in tail)


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "never"
    s = max(0, int(now - float(t)))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def partition_row(x: Part, now: float) -> str:
    n = f"{x.done}/{x.total}" if x.total > 0 else f"{x.done}"
    row = f"  p{x.p:<3} {x.state:<9} {n:>11}"
    if x.cached:
        row += f" ({x.cached} cached)"
    if x.state == "complete":
        return row
    if x.state == "running" and x.done == 0 and x.rate == 0:
        return row + f"  starting (loading the model), updated {_ago(x.updated, now)}"
    if x.state == "running":
        return row + f"  {x.rate:.2f} samples/s  ETA {fmt_eta(x.eta)}  updated {_ago(x.updated, now)}"
    if x.state == "stalled":
        return row + f"  no update since {_ago(x.updated, now)} (worker gone or hung)"
    if x.state == "failed":
        return row + (f"  {x.error}" if x.error else "")
    return row + "  not started in these run dirs"


def resume_lines(st: RunState) -> list[str]:
    todo = st.by_state("failed") + st.by_state("stalled") + st.by_state("missing")
    if not todo:
        return []
    out, left = [], set(todo)
    here = os.getcwd()
    for launch in st.launches:
        ps = sorted(left & set(launch["partitions"]))
        if not ps:
            continue
        left -= set(ps)
        cmd = launch["command"] if launch.get("cwd") in (None, here) else f"cd {launch['cwd']} && {launch['command']}"
        out.append(f"resume partitions {', '.join(map(str, ps))} with: {cmd}")
    if left:
        ps = sorted(left)
        out.append(f"partitions {', '.join(map(str, ps))}: no launch recorded in {RUN_INFO}; run them with the "
                   f"run's options plus --partition_offset {ps[0]} and --log_path of this run dir")
    if st.by_state("stalled"):
        out.append("stalled partitions: make sure their worker is gone before resuming (two writers, one cache)")
    return out


def format_status(st: RunState, run_dirs: list[Path], now: float | None = None) -> str:
    now = time.time() if now is None else now
    m = st.meta
    lines = [f"run {', '.join(map(str, run_dirs))}: {m.get('model', '?')} {m.get('scenario', '?')} "
             f"{m.get('mode', '?')}, {st.n_partitions or '?'} partitions"]
    lines += [partition_row(x, now) for x in st.parts.values()]
    counts = ", ".join(f"{len(st.by_state(s))} {s}" for s in _RANK if st.by_state(s))
    lines.append(progress_line(st, "total").split(" | ")[0] + f"  [{counts}]")
    lines += resume_lines(st)
    return "\n".join(lines)


# ------------------------------------------------------------------ run.json

def read_run_info(run_dir: Path) -> dict:
    f = Path(run_dir) / RUN_INFO
    return _read_json(f) if f.exists() else {}


def record_launch(run_dir: Path, partitions: list[int], n_partitions: int, command: str) -> None:
    """Keep the command that (re)runs these partitions. Keyed by the partitions it covers, so
    nodes that launch different offsets into one shared run dir each keep their own line."""
    info = read_run_info(run_dir)
    key = f"{partitions[0]}-{partitions[-1]}"
    launches = info.get("launches", {})
    launches[key] = {"partitions": partitions, "command": command, "cwd": os.getcwd(),
                     "host": socket.gethostname(), "time": time.time()}
    atomic_write_json(Path(run_dir) / RUN_INFO, {"n_partitions": n_partitions, "launches": launches})
