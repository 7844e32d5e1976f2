"""One progress and ETA for a whole run: `python -m evalkit status RUN_DIR [RUN_DIR ...]`.

Reads what partitions leave in their dirs (partition.json once complete, progress.json
while running or after a failure) on any node, and run.json, where each launch records
the command that resumes its partitions. The local launcher draws its combined line
with the same code (progress_line).
"""
from __future__ import annotations

import time
from pathlib import Path

from .progress import fmt_eta
from .rundir import NEEDS_RESUME, RUN_INFO, _RANK, Part, RunState, collect  # noqa: F401 (collect: status's API)


def progress_line(st: RunState, label: str) -> str:
    """'label: done/total (pct) rate ETA | p0 ... | p1 ...': the launcher's live line and status's total."""
    if st.total > 0 and st.done >= st.total:  # nothing running: a rate of 0 would read as a stall
        head = f"{label}: {st.done}/{st.total} (100.0%) complete"
    elif st.total > 0:
        loading = [f"p{x.p}" for x in st.parts.values() if x.state == "running" and x.phase == "loading"]
        # no running partition has answered yet: say what it waits for, not a rate of "--"
        speed = (f"{st.rate:.2f} samples/s" if st.rate > 0 else
                 f"no rate yet ({', '.join(loading)} loading the model or its first batch)" if loading else
                 "no rate yet")
        head = f"{label}: {st.done}/{st.total} ({100.0 * st.done / st.total:5.1f}%) {speed} ETA {fmt_eta(st.eta)}"
    else:
        head = f"{label}: {st.done} samples"
    tail = []
    for x in st.parts.values():
        n = f"{x.done}/{x.total}" if x.total > 0 else f"{x.done}"
        tail.append(f"p{x.p} {n} " + ("loading" if x.state == "running" and x.phase == "loading" else
                                      f"ETA {fmt_eta(x.eta)}" if x.state == "running" else x.state))
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
    who = f"  [{x.owner}]" if x.owner else ""
    if x.state == "running" and x.phase == "loading":
        return row + f"  starting (loading the model or computing its first batch), updated {_ago(x.updated, now)}{who}"
    if x.state == "running":
        return row + f"  {x.rate:.2f} samples/s  ETA {fmt_eta(x.eta)}  updated {_ago(x.updated, now)}{who}"
    if x.state == "stalled":
        return row + f"  no update since {_ago(x.updated, now)} (worker gone or hung)"
    if x.state in ("failed", "preempted"):
        return row + (f"  {x.error}" if x.error else "")
    return row + "  not started in these run dirs"


def resume_lines(st: RunState) -> list[str]:
    todo = [p for s in NEEDS_RESUME for p in st.by_state(s)]
    if not todo:
        return []
    out, left = [], set(todo)
    for launch in st.launches:
        ps = sorted(left & set(launch["partitions"]))
        if not ps:
            continue
        left -= set(ps)
        # the recorded command starts with `cd <launch dir> &&` (launcher.resume_command): paste it anywhere
        out.append(f"resume partitions {', '.join(map(str, ps))} with: {launch['command']}")
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


def latest_run(log_dir: Path) -> Path:
    """The run dir under log_dir (logs/internal's verified logs aside) whose run.json, or partition
    files, changed last: what `evalkit status` with no argument shows."""
    from .rundir import is_run_dir, partition_dirs

    log_dir = Path(log_dir)
    found, stack = [], [log_dir] if log_dir.is_dir() else []
    while stack:
        d = stack.pop()
        if is_run_dir(d):
            marks = [d / RUN_INFO] + [f for _, x in partition_dirs(d) for f in x.iterdir() if f.is_file()]
            found.append((max((f.stat().st_mtime for f in marks if f.exists()), default=d.stat().st_mtime), d))
            continue
        stack.extend(x for x in d.iterdir() if x.is_dir() and not (d == log_dir and x.name == "internal"))
    if not found:
        from .errors import KitError
        from .util import ROOT
        raise KitError(f"no run under {log_dir} yet; name the run dir: {ROOT / 'bin' / 'evalkit'} status RUN_DIR")
    return max(found)[1]


def vouched(run_dirs: list[Path]) -> str | None:
    """Why the run's partitions or merged log cannot be trusted as they stand, in one line (None: they
    can): complete partitions of different configs, or a merged log gather no longer vouches for."""
    from .errors import KitError
    from .gather import verify
    from .identity import config_difference, read_identity
    from .rundir import GATHER_INFO, complete_partitions

    try:
        found = complete_partitions(run_dirs)
        if found:
            ref_p = min(found)
            ref_d, ref = found[ref_p]
            for p, (d, m) in sorted(found.items()):
                if m["config_hash"] != ref["config_hash"]:
                    what = config_difference(m["config"], ref["config"], read_identity(d).get("dataset"),
                                             read_identity(ref_d).get("dataset"))
                    return (f"partition {p} ({d}) is from another config than partition {ref_p} (differs in {what}); "
                            f"its log cannot merge with the others: rerun it in this run's config")
        for rd in map(Path, run_dirs):
            if (rd / GATHER_INFO).exists():
                verify(rd)
    except KitError as e:
        return str(e)
    return None
