"""Runs under a logs dir -> one self-contained HTML page (inline CSS + SVG, no JS)
and its Markdown twin, like the MLPerf results page: model, accuracy target,
accuracy, % of reference, PASS/FAIL, performance VALID/INVALID.

Reads only what runs leave behind (partition.json, progress.json, run.json,
gather.json, accuracy.json, performance.json, check_error.json); collect_runs()
is shared with metrics.py. A run is identified by its config hash, not by its
dir: one run split over node dirs (manual --partition_offset on two nodes) is
shown once, with every dir it spans.
"""
from __future__ import annotations

import html
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import rundir
from .errors import KitError
from .perf import PERFORMANCE, SUMMARY, combine, fmt_value, parse_summary, run_performance
from .progress import fmt_eta
from .targets import label
from .util import atomic_write_text

EXPLORE_JSON = "explore.json"  # evalkit/explore.py's sweep result

VERIFIED_DIR = "internal"  # logs/internal/<model>/accuracy.json: verified reference logs
STRAGGLER = 1.25           # a partition this many times the median wall time is flagged
CHECK_ERROR = "check_error.json"  # written by `evalkit check` when scoring raised; removed by a later success


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise KitError(f"{path}: corrupt JSON; rerun the command that writes it") from None


def find_runs(log_dir: Path) -> list[Path]:
    """Every run dir under log_dir (one run may span several: see group_runs)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise KitError(f"log dir {log_dir} does not exist")
    found, stack = [], [log_dir]
    while stack:
        d = stack.pop()
        if rundir.is_run_dir(d):
            found.append(d)
            continue  # a run's partition dirs are not runs
        if d != log_dir and (d / EXPLORE_JSON).is_file():
            continue  # a sweep's point runs are shown in its own section (explore_section)
        stack.extend(x for x in d.iterdir() if x.is_dir() and not (d == log_dir and x.name == VERIFIED_DIR))
    return sorted(found)


@dataclass
class _DirInfo:
    config_hash: str | None
    present: set[int]           # partitions this dir holds in any state but missing
    whole: bool                 # a run on its own: scored/gathered here, or holds every partition
    sources: set[Path] = field(default_factory=set)  # dirs gather.json merged from


def _dir_info(d: Path, now: float | None) -> _DirInfo:
    st = rundir.collect([d], now=now)
    present = {p for p, x in st.parts.items() if x.state != "missing"}
    gathered = _read_json(d / rundir.GATHER_INFO) or {}
    outputs = [_read_json(d / n) or {} for n in ("accuracy.json", PERFORMANCE)]
    chash = next((x.manifest["config_hash"] for x in st.parts.values() if x.manifest is not None), None)
    for src in (gathered, *outputs, rundir.read_run_info(d)):  # run.json: a dir whose partitions are all unfinished
        chash = chash or src.get("config_hash")
    n = st.n_partitions or gathered.get("n_partitions")
    whole = bool(gathered or any(outputs)) or bool(n and all(p in present for p in range(int(n))))
    return _DirInfo(chash, present, whole, {Path(s) for s in gathered.get("run_dirs", [])})


def group_runs(dirs: list[Path], now: float | None = None) -> list[list[Path]]:
    """Run dirs -> runs, each a list of dirs (the one with the run's outputs first).

    A dir that is whole on its own (scored, gathered, or holding every partition) is one run,
    joined by the partial dirs its gather.json merged from. The remaining partial dirs of one
    config hash whose partitions do not overlap are one run split over node dirs; two partial
    dirs holding the same partition are two attempts, shown apart."""
    info = {d: _dir_info(d, now) for d in dirs}
    by_path = {d.resolve(): d for d in dirs}
    groups: list[list[Path]] = [[d] for d in dirs if info[d].whole]
    placed = {g[0] for g in groups}
    for g in groups:
        head = info[g[0]]
        for src in sorted(head.sources):
            d = by_path.get(src)
            if d is not None and d not in placed and info[d].config_hash == head.config_hash:
                g.append(d)
                placed.add(d)
    split: list[tuple[list[Path], set[int]]] = []
    for d in dirs:
        if d in placed:
            continue
        i = info[d]
        for g, parts in split:
            if i.config_hash is not None and info[g[0]].config_hash == i.config_hash and not parts & i.present:
                g.append(d)
                parts |= i.present
                break
        else:
            split.append(([d], set(i.present)))
            groups.append(split[-1][0])
    return groups


def verified_logs(log_dir: Path) -> dict[str, dict]:
    """model -> the verified accuracy.json in LOG_DIR/internal/<model>/."""
    out = {}
    base = Path(log_dir) / VERIFIED_DIR
    if base.is_dir():
        for d in sorted(base.iterdir()):
            acc = _read_json(d / "accuracy.json") if d.is_dir() else None
            if acc:
                out[acc.get("model", d.name)] = acc
    return out


def _wall(timings: dict) -> float | None:
    return timings["finished"] - timings["started"] if "finished" in timings else timings.get("loadgen_s")


def _rel(d: Path, log_dir: Path) -> str:
    d, log_dir = Path(d), Path(log_dir)
    try:
        return str(d.relative_to(log_dir)) if d != log_dir else d.name
    except ValueError:
        return str(d)


def load_run(run_dirs: Path | list[Path], log_dir: Path, verified: dict[str, dict], now: float | None = None) -> dict:
    """One run over one or more run dirs (the first holds its outputs: gather.json, accuracy.json, ...)."""
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    run_dir = dirs[0]
    acc = _read_json(run_dir / "accuracy.json")
    perf = _read_json(run_dir / PERFORMANCE)
    check_error = _read_json(run_dir / CHECK_ERROR)
    parts, meta = [], {}
    gathered = _read_json(run_dir / rundir.GATHER_INFO)
    if gathered and not any(rundir.partition_dirs(d) for d in dirs):
        # `gather --out DIR` over other nodes' dirs: the partitions are known from gather.json
        meta = dict(gathered["config"], n_partitions=gathered["n_partitions"])
        parts = [{"partition": p["partition"], "state": "complete", "device": p.get("device"), "host": p.get("host"),
                  "wall_s": _wall(p.get("timings", {})), "done": p.get("entries"), "total": p.get("entries"),
                  "rate": None, "eta_s": None, "dir": None} for p in gathered.get("partitions", [])]
    else:
        # the same states as `evalkit status`: one reader of the run dirs (evalkit/rundir.py)
        st = rundir.collect(dirs, now=now)
        meta = dict(st.meta)
        for x in st.parts.values():
            if x.manifest is not None:
                meta = {**x.manifest["config"], "n_partitions": x.manifest["n_partitions"], **meta}
            parts.append({"partition": x.p, "state": x.state, "done": x.done if x.state != "missing" else None,
                          "total": x.total or None, "rate": x.rate, "eta_s": x.eta, "device": x.device,
                          "host": x.host, "wall_s": x.wall_s,
                          "path": str(x.run_dir / str(x.p)) if x.run_dir is not None else None,
                          "dir": _rel(x.run_dir, log_dir) if x.run_dir is not None and len(dirs) > 1 else None})
    if acc and not meta:
        meta = dict(acc.get("config", {}))
    if perf and not meta:
        meta = {k: perf.get(k) for k in ("model", "scenario", "data_type", "synthetic", "n_count", "n_partitions")}
        meta["mode"] = "performance"
    n_parts = int(meta.get("n_partitions") or len(parts) or 1)
    have = {r["partition"] for r in parts}
    parts += [{"partition": p, "state": "missing", "wall_s": None, "done": None, "total": None, "rate": None,
               "eta_s": None, "device": None, "host": None, "dir": None} for p in range(n_parts) if p not in have]
    parts.sort(key=lambda r: r["partition"])
    states = {r["state"] for r in parts}
    state = ("complete" if states == {"complete"} else "failed" if "failed" in states
             else "in progress" if "running" in states else "interrupted" if "preempted" in states
             else "incomplete")
    if perf is None and meta.get("mode") == "performance" and state == "complete":
        if len(dirs) == 1:
            perf = run_performance(run_dir)  # e.g. partitions copied in from other nodes
        else:  # partitions over node dirs: each partition's summary where it lies
            perf = combine({r["partition"]: parse_summary(Path(r["path"]) / SUMMARY) for r in parts})
    stale_acc = None
    if acc is not None and check_error is None and (run_dir / rundir.MERGED).exists():
        # a PASS shown is a PASS that still holds: the merged log and partitions gather vouched for,
        # and the merged log the check scored (the same verification as check and status); a dashboard
        # copy of accuracy.json + gather.json alone shows what its check recorded
        from .status import vouched

        problem = vouched(dirs)
        if problem is None and gathered and acc.get("merged_sha256") not in (None, (gathered.get("merged") or {}).get("sha256")):
            problem = f"{run_dir / rundir.MERGED} was gathered again after the check; check it again"
        if problem:
            check_error = {"error": problem, "time": None}
    if check_error is not None:
        # a check that succeeds removes check_error.json: any accuracy.json here is an older check's
        stale_acc, acc = acc, None
    model = meta.get("model") or run_dir.parent.parent.name
    n_count = meta.get("n_count") or (acc or stale_acc or {}).get("n_count")
    dataset_size = (acc or {}).get("dataset_size")
    return {
        "id": " + ".join(_rel(d, log_dir) for d in dirs), "dir": str(run_dir), "dirs": [str(d) for d in dirs],
        "model": model, "scenario": meta.get("scenario", "?"),
        "mode": meta.get("mode", "accuracy" if acc or check_error else "?"), "data_type": meta.get("data_type", "?"),
        "synthetic": bool(meta.get("synthetic") or (acc or stale_acc or {}).get("synthetic")),
        "partial": bool((acc or {}).get("partial")), "n_count": n_count, "dataset_size": dataset_size,
        "n_partitions": n_parts, "state": state, "partitions": parts,
        # quantized runs (evalkit/quantize.py) and what pairs a run with its unquantized twin
        "quant": meta.get("quantization"),
        "twin_key": json.dumps([meta.get(k) for k in ("model", "scenario", "mode", "n_count", "options", "checkpoint",
                                                      "dataset_files", "fingerprint")], sort_keys=True, default=str),
        "devices": sorted({r["device"] for r in parts if r.get("device")}),
        "hosts": sorted({r["host"] for r in parts if r.get("host")}),
        "accuracy": acc, "performance": perf, "verified": verified.get(model),
        "check_error": check_error, "stale_accuracy": stale_acc,
    }


def collect_runs(log_dir: Path, now: float | None = None) -> list[dict]:
    verified = verified_logs(log_dir)
    runs = [load_run(g, Path(log_dir), verified, now) for g in group_runs(find_runs(log_dir), now)]
    return sorted(runs, key=lambda r: (r["model"], r["scenario"], r["data_type"], r["mode"], r["id"]))


# ------------------------------------------------------------------ table rows

def flags(run: dict) -> list[str]:
    out = []
    if run["check_error"] is not None:
        out.append("ERROR")
    if run["synthetic"]:
        out.append("SYNTHETIC")
    if run["partial"]:
        out.append("PARTIAL")
    if run["state"] != "complete":
        out.append(run["state"].upper())
    return out


def _acc_rows(acc: dict | None) -> list[dict]:
    return list(acc["rows"]) if acc and acc.get("rows") else []


def _num(x: float) -> str:
    return f"{x:.6g}" if abs(x) >= 1e5 else f"{x:.4f}"  # GEN_LEN is millions of characters


def _target(r: dict, acc: dict) -> str:
    ratio = r.get("ratio")
    if ratio is None:  # accuracy.json of an older kit: only the model-wide target
        return f"{acc['accuracy_target']}% of {r['reference']:.4g}"
    low = (acc.get("synthetic_low_precision") or {}).get("metrics", {}).get(r["metric"])
    floor = f" (synthetic {acc['synthetic_low_precision']['data_type']} floor)" if low and r.get("kind") == "min" else ""
    return f"{'>=' if r.get('kind', 'min') == 'min' else '<='} {100 * ratio:.4g}% of {r['reference']:.4g}{floor}"


def summary_row(run: dict) -> dict:
    """The results-page line of one run; HTML and Markdown both render these strings.
    A model with several target metrics (GPT-J: ROUGE1, ROUGE2, ROUGEL, GEN_LEN) has one
    line per metric in the PER_METRIC cells ("\\n"-separated; the HTML gives each its own
    table row). Result and flags come early: they are what a reader looks for."""
    acc, perf, rows = run["accuracy"], run["performance"], _acc_rows(run["accuracy"])
    done = sum(p["state"] == "complete" for p in run["partitions"])
    walls = [p["wall_s"] for p in run["partitions"] if p.get("wall_s") is not None]
    ver = {v["metric"]: v for v in _acc_rows(run["verified"])}
    verified = [f"{ver[r['metric']]['value']:.4f} ({r['value'] - ver[r['metric']]['value']:+.4f})"
                if r["metric"] in ver else "-" for r in rows]
    # with several target metrics, say which one failed
    pct = [(f"{r['pct_of_reference']:.2f}%" if r.get("pct_of_reference") is not None else "-")
           + (" FAIL" if len(rows) > 1 and r.get("pass") is False else "") for r in rows]
    result = ("ERROR" if run["check_error"] is not None else acc["verdict"] if acc
              else perf["result"] if perf else "-")
    return {
        # model, scenario, mode and dtype share a cell: the table must fit 1280 px with any number of runs
        "run": run["id"], "config": f"{run['model']} {run['scenario']} {run['mode']} {run['data_type']}",
        # a run is one mode: PASS/FAIL for accuracy, VALID/INVALID for performance; ERROR: its check raised
        "result": result, "flags": " ".join(flags(run)) or "-",
        "accuracy": "\n".join(f"{label(r['metric'])} = {_num(r['value'])}" for r in rows) or "-",
        "% of ref": "\n".join(pct) or "-",
        "accuracy target": "\n".join(_target(r, acc) for r in rows) or "-",
        "verified (delta)": "\n".join(verified) if set(verified) - {"-"} else "-",
        "performance": fmt_value(perf.get("headline")) if perf else "-",
        "partitions": f"{done}/{run['n_partitions']}", "samples": str(run["n_count"] or "-"),
        "devices": ", ".join(run["devices"]) or "-",
        "slowest partition": f"{max(walls):.1f} s" if walls else "-",
    }


def quant_rows(runs: list[dict]) -> list[dict]:
    """Reference vs optimized: each quantized run next to the latest unquantized run of the same model,
    checkpoint, data, n_count and scenario (accuracy: each metric, % of the unquantized value, delta;
    performance: the throughput ratio)."""
    out = []
    for q in runs:
        if not q.get("quant"):
            continue
        twins = [r for r in runs if not r.get("quant") and r.get("twin_key") == q.get("twin_key")]
        if not twins:
            continue
        ref = twins[-1]
        what = (f"{q['quant'].get('quantizer')} N_CALIB={q['quant'].get('n_calib')} {q['data_type']}"
                f" vs {ref['data_type']}")
        if q["mode"] == "performance" and q["performance"] and ref["performance"]:
            a, b = (q["performance"].get("headline") or {}), (ref["performance"].get("headline") or {})
            ratio = None
            if a.get("value") and b.get("value"):  # a latency headline (ns): the ratio of rates is b/a
                ratio = b["value"] / a["value"] if a.get("unit") == "ns" else a["value"] / b["value"]
            out.append({"quantized run": q["id"], "reference run": ref["id"], "what": what,
                        "metric": f"throughput ({a.get('unit', '')})", "reference": _num(b["value"]) if b.get("value") else "-",
                        "quantized": _num(a["value"]) if a.get("value") else "-",
                        "% of reference": f"{100 * ratio:.2f}%" if ratio else "-", "delta": "-",
                        "throughput ratio": f"{ratio:.3f}x" if ratio else "-"})
            continue
        ref_rows = {r["metric"]: r for r in _acc_rows(ref["accuracy"])}
        for r in _acc_rows(q["accuracy"]):
            b = ref_rows.get(r["metric"])
            if b is None:
                continue
            pct = 100.0 * r["value"] / b["value"] if b["value"] else None
            out.append({"quantized run": q["id"], "reference run": ref["id"], "what": what, "metric": label(r["metric"]),
                        "reference": _num(b["value"]), "quantized": _num(r["value"]),
                        "% of reference": f"{pct:.2f}%" if pct is not None else "-",
                        "delta": f"{r['value'] - b['value']:+.4f}", "throughput ratio": "-"})
    return out


def partition_rows(run: dict) -> list[dict]:
    out = []
    for p in run["partitions"]:
        total = p.get("total") or 0
        row = {"partition": str(p["partition"]), "state": p["state"]}
        if len(run["dirs"]) > 1:
            row["dir"] = p.get("dir") or "-"
        row.update({"device": p.get("device") or "-", "host": p.get("host") or "-",
                    "wall": f"{p['wall_s']:.1f} s" if p.get("wall_s") is not None else "-",
                    "done": f"{p.get('done')}/{total}" if total > 0 else str(p.get("done") if p.get("done") is not None else "-"),
                    "rate": f"{p['rate']:.2f}/s" if p.get("rate") is not None else "-",
                    "ETA": fmt_eta(p.get("eta_s")) if p["state"] == "running" else "-"})
        out.append(row)
    return out


def perf_failures(run: dict) -> list[str]:
    return list(run["performance"].get("failed_constraints", [])) if run["performance"] else []


def error_line(run: dict) -> str | None:
    """Why a run's result is ERROR, in one line."""
    ce = run["check_error"]
    if ce is None:
        return None
    old = run["stale_accuracy"]
    if not ce.get("time"):  # found by the report itself: what the check scored no longer holds
        head = "the checked result no longer holds"
    else:
        head = f"check failed ({time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ce['time']))})"
    return (f"{head}: {ce.get('error', '?')}"
            + (f" (the {old['verdict']} in accuracy.json is from an earlier check)" if old else ""))


# ------------------------------------------------------------------ plots

CHAR_W = 7.0  # px per character of 12px sans text: enough room, measured in Chromium


def nice_axis(lo: float, hi: float, max_intervals: int = 10) -> tuple[float, float, float]:
    """(lo', hi', step): the axis ends rounded out to multiples of step, the finest step of
    1, 2 or 5 x 10^k that needs at most max_intervals intervals: 0..16 or 7..15, not 7.54..14.6."""
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    k = 10.0 ** math.floor(math.log10((hi - lo) / max_intervals))
    for step in (m * k for m in (1, 2, 5, 10, 20, 50)):
        a, b = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if b - a <= max_intervals:
            return a * step, b * step, step
    raise AssertionError("unreachable: 10 x the raw step always fits")


def fmt_tick(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{decimals}f}"


def _short(label: str, n: int = 36) -> str:
    """A run id cut in its middle: the model at the start and the run's own name at the end stay."""
    return label if len(label) <= n else label[:n // 3] + "…" + label[-(n - n // 3 - 1):]


def svg_bars(bars: list[dict], lo: float, hi: float, marks: list[tuple[float, str]] = (),
             title: str = "") -> str:
    """Horizontal bar chart as inline SVG. A bar: label, value, colour, note (text after the bar),
    optional target (a dashed tick across that bar) and group (a wider gap when it changes).
    marks: dashed lines across all bars, their labels in a row of their own above the bars.
    The axis is rounded out by nice_axis(). Nothing overlaps by construction: labels left of
    the plot, notes right of both the bar's end and its target, mark labels in their own rows
    (a second row when two would touch), tick labels below; notes and mark labels are drawn
    on white over the dashed lines."""
    lo, hi, step = nice_axis(lo, hi)
    labels = [b.get("short", b["label"]) for b in bars]
    lw, pw, bh, gap = 12 + CHAR_W * max(len(x) for x in labels), 420, 18, 6
    x = lambda v: lw + pw * (min(max(v, lo), hi) - lo) / (hi - lo)  # noqa: E731
    # mark labels: centred on their line, kept inside the plot, stacked when they would touch
    rows: list[list[tuple[float, float]]] = []
    placed = []
    for v, text in sorted(marks):
        w = CHAR_W * len(text)
        cx = min(max(x(v), lw + w / 2), lw + pw - w / 2)
        row = next((i for i, r in enumerate(rows) if all(cx - w / 2 > b + 6 or cx + w / 2 < a - 6 for a, b in r)), None)
        if row is None:
            rows.append([])
            row = len(rows) - 1
        rows[row].append((cx - w / 2, cx + w / 2))
        placed.append((v, text, cx, row))
    mark_y = lambda row: 36 + 16 * row  # noqa: E731  (baselines; the title's is 16)
    top = mark_y(len(rows) - 1) + 10 if rows else 28
    ys, y = [], top
    for i, b in enumerate(bars):
        if i and b.get("group") != bars[i - 1].get("group"):
            y += 10
        ys.append(y)
        y += bh + gap
    h = y + 24
    note_x = [max(x(b["value"]), x(b["target"]) if b.get("target") is not None else 0) + 5 for b in bars]
    width = max(lw + pw + 10, max(nx + CHAR_W * len(b["note"]) for nx, b in zip(note_x, bars)) + 8)
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{h}" viewBox="0 0 {width:.0f} {h}" '
           f'role="img" aria-label="{e(title)}"><text x="4" y="16" class="t">{e(title)}</text>']
    n_ticks = round((hi - lo) / step)
    for i in range(n_ticks + 1):  # grid and tick labels first: everything else is drawn over them
        v = lo + i * step
        cls = "axis" if i in (0, n_ticks) else "tick"
        anchor = "start" if i == 0 else "end" if i == n_ticks else "middle"
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 4}" y2="{h - 18}" stroke="#eee"/>'
                   f'<text x="{x(v):.1f}" y="{h - 5}" text-anchor="{anchor}" class="{cls}">{fmt_tick(v, step)}</text>')
    for v, text, cx, row in placed:
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{mark_y(row) + 4}" y2="{h - 18}" stroke="#333" '
                   f'stroke-dasharray="4 3"/><text x="{cx:.1f}" y="{mark_y(row)}" text-anchor="middle" '
                   f'class="mark">{e(text)}</text>')
    for b, label, y, nx in zip(bars, labels, ys, note_x):
        out.append(f'<text x="{lw - 6}" y="{y + 13}" text-anchor="end" class="label"><title>{e(b["label"])}</title>'
                   f'{e(label)}</text><rect x="{lw}" y="{y}" width="{max(x(b["value"]) - lw, 1):.1f}" height="{bh}" '
                   f'fill="{b["colour"]}"/>')
        if b.get("target") is not None:
            out.append(f'<line x1="{x(b["target"]):.1f}" x2="{x(b["target"]):.1f}" y1="{y - 3}" y2="{y + bh + 3}" '
                       f'stroke="#000" stroke-width="1.5" stroke-dasharray="3 2"/>')
        # a white ground under the note: a dashed line (the median) never runs through its text
        out.append(f'<rect x="{nx - 2:.1f}" y="{y + 1}" width="{CHAR_W * len(b["note"]) + 4:.1f}" height="{bh - 2}" '
                   f'fill="#fff"/><text x="{nx:.1f}" y="{y + 13}" class="note">{e(b["note"])}</text>')
    return "".join(out) + "</svg>"


def accuracy_plot(runs: list[dict]) -> str:
    """Every target metric of every scored run as % of its reference (GPT-J: ROUGE1, ROUGE2, ROUGEL
    and GEN_LEN), one bar per metric grouped by run, a dashed tick at that metric's target."""
    bars = []
    for run in runs:
        acc = run["accuracy"]
        for r in _acc_rows(acc):
            if r.get("pct_of_reference") is None:
                continue
            ok = r["pass"] if "pass" in r else acc["verdict"] == "PASS"
            ratio = r.get("ratio", float(acc["accuracy_target"]) / 100)
            bars.append({"label": f"{run['id']} {run['data_type']} {label(r['metric'])}", "value": r["pct_of_reference"],
                         "short": f"{_short(run['id'])} {run['data_type']} {label(r['metric'])}",
                         "colour": "#2e7d32" if ok else "#c62828", "target": 100 * ratio, "group": run["id"],
                         "note": f"{r['pct_of_reference']:.2f}% {'PASS' if ok else 'FAIL'} "
                                 f"({'>=' if r.get('kind', 'min') == 'min' else '<='} {100 * ratio:.4g}%)"})
    if not bars:
        return "<p>No scored accuracy runs.</p>"
    vals = [b["value"] for b in bars] + [b["target"] for b in bars]
    return svg_bars(bars, max(0.0, min(vals) - 1), max(vals), (),
                    "accuracy as % of reference per target metric (dashed tick: the target)")


def wall_plot(run: dict) -> str:
    walls = [p["wall_s"] for p in run["partitions"] if p.get("wall_s") is not None]
    if not walls:
        return ""
    med = statistics.median(walls)
    bars = []
    for p in run["partitions"]:
        w = p.get("wall_s") or 0.0
        slow = len(walls) > 1 and w > STRAGGLER * med
        colour = "#9e9e9e" if p["state"] != "complete" else "#ef6c00" if slow else "#1565c0"
        bars.append({"label": f"partition {p['partition']} ({p.get('device') or '-'})", "value": w, "colour": colour,
                     "note": f"{w:.1f} s" + (" straggler" if slow else "")
                             + ("" if p["state"] == "complete" else f" {p['state']}")})
    marks = [(med, f"median {med:.1f} s")] if len(walls) > 1 else []
    return svg_bars(bars, 0, max(walls), marks, "wall time per partition (s)")


# ------------------------------------------------------------------ sweeps (evalkit explore)

def find_sweeps(log_dir: Path) -> list[dict]:
    """Every explore.json under log_dir (evalkit/explore.py), oldest first."""
    found = []
    for f in sorted(Path(log_dir).rglob(EXPLORE_JSON)):
        sw = _read_json(f)
        if sw and sw.get("kind") == "evalkit explore":
            found.append(dict(sw, file=str(f)))
    return sorted(found, key=lambda sw: sw.get("started", 0))


SERIES_COLOURS = ("#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457", "#5d4037", "#455a64")


def _probe_size(sw: dict) -> str:
    """'8 samples', or '1 scoring unit (4 samples)' where the probe takes whole questions (BERT)."""
    k = sw["settings"]["probe"]
    samples = {(r.get("probe") or {}).get("samples") for r in sw["points"]} - {None}
    return f"{k} scoring units ({samples.pop()} samples)" if len(samples) == 1 and samples != {k} else f"{k} samples"


def _sweep_title(sw: dict) -> str:
    return (f"Sweep: {sw['model']} ({len(sw['points'])} points, probe of {_probe_size(sw)})"
            + (" SYNTHETIC" if sw.get("synthetic") else ""))


def _mib(mem: dict, key: str) -> str:
    return f"{mem[key] / 2 ** 20:.0f}" if mem and key in mem else "-"


def explore_rows(sw: dict) -> list[dict]:
    """One row per point: throughput per scenario, the probe (never PASS), peak memory, the reason a point failed."""
    scen = sw["settings"]["scenarios"]
    rows = []
    for r in sw["points"]:
        row = {"point": r["id"], "backend": r["backend"], "data type": r["data_type"], "batch": str(r["batch_size"])}
        for x in scen:
            t = (r.get("throughput") or {}).get(x) or {}
            row[x] = fmt_value(t) if t.get("value") is not None else "-"
        pr = r.get("probe") or {}
        ms = pr.get("metrics") or {}
        row["probe accuracy"] = "\n".join(f"{m} {v['value']:.4g} ({'>=' if v['kind'] == 'min' else '<='} {v['target']:.4g})"
                                          for m, v in ms.items()) or "-"
        row["probe"] = pr.get("label", "-")
        mem = r.get("peak_memory") or {}
        row["peak host RSS MiB"] = _mib(mem, "host_rss_bytes")
        row["peak CUDA MiB"] = _mib(mem, "cuda_max_allocated_bytes")
        status = r["status"] + (f" ({r['kind']})" if r["status"] == "failed" else "")
        row["status"] = status + (": " + r["reason"] if r.get("reason") else "") + (" (best)" if r["id"] == sw.get("best") else "")
        rows.append(row)
    return rows


def _best_text(sw: dict) -> str:
    if not sw.get("best"):
        return "No point has its probe within the target: no full-set command to suggest."
    c = sw["command"]
    return (f"Best by Offline throughput among points whose probe is within the target: {sw['best']} "
            f"(a probe is never a PASS: only the full-set check is). Full set: "
            + " or ".join(f"`{x}`" for x in (c.get("make"), c.get("cli")) if x))


def svg_lines(series: list[dict], xs: list, title: str, ylabel: str) -> str:
    """A line chart as inline SVG: xs are categories (batch sizes) evenly spaced, each series
    {label, colour, points: {x: y}} a polyline with dots; a missing y (a failed point) breaks
    the line and is marked with an x on the axis. Legend in its own rows below the plot."""
    e = html.escape
    ys = [y for s in series for y in s["points"].values() if y is not None]
    lo, hi, step = nice_axis(0.0, max(ys) if ys else 1.0, 6)
    lw, pw, ph, top = 64, 420, 220, 30
    xpos = lambda i: lw + 20 + (pw - 40) * (i / max(1, len(xs) - 1) if len(xs) > 1 else 0.5)  # noqa: E731
    ypos = lambda v: top + ph - ph * (v - lo) / (hi - lo)  # noqa: E731
    legend_y = top + ph + 44
    width = max(lw + pw + 10, 30 + max((CHAR_W * len(s["label"]) + 30 for s in series), default=0))
    h = legend_y + 18 * len(series) + 6
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{h}" viewBox="0 0 {width:.0f} {h}" '
           f'role="img" aria-label="{e(title)}"><text x="4" y="16" class="t">{e(title)}</text>']
    n_ticks = round((hi - lo) / step)
    for i in range(n_ticks + 1):
        v = lo + i * step
        out.append(f'<line x1="{lw}" x2="{lw + pw}" y1="{ypos(v):.1f}" y2="{ypos(v):.1f}" stroke="#eee"/>'
                   f'<text x="{lw - 4}" y="{ypos(v) + 4:.1f}" text-anchor="end" class="tick">{fmt_tick(v, step)}</text>')
    for i, x in enumerate(xs):
        out.append(f'<text x="{xpos(i):.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">{e(str(x))}</text>')
    out.append(f'<text x="{lw + pw / 2:.0f}" y="{top + ph + 32}" text-anchor="middle">batch size</text>'
               f'<text x="12" y="{top + ph / 2:.0f}" text-anchor="middle" transform="rotate(-90 12 {top + ph / 2:.0f})">'
               f'{e(ylabel)}</text><line x1="{lw}" x2="{lw}" y1="{top}" y2="{top + ph}" stroke="#999"/>'
               f'<line x1="{lw}" x2="{lw + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>')
    for k, s in enumerate(series):
        c = s["colour"]
        run: list[str] = []
        segs = []
        for i, x in enumerate(xs):
            y = s["points"].get(x)
            if y is None:
                if x in s["points"]:  # a failed point of this series: an x on the axis
                    out.append(f'<text x="{xpos(i):.1f}" y="{top + ph - 2}" text-anchor="middle" fill="{c}">'
                               f'<title>{e(s["label"])} batch {x}: failed</title>x</text>')
                if run:
                    segs.append(run)
                run = []
                continue
            run.append(f"{xpos(i):.1f},{ypos(y):.1f}")
            out.append(f'<circle cx="{xpos(i):.1f}" cy="{ypos(y):.1f}" r="3.5" fill="{c}"><title>{e(s["label"])} '
                       f'batch {x}: {y:.4g}</title></circle>')
        segs.append(run)
        for seg in segs:
            if len(seg) > 1:
                out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{c}" stroke-width="2"/>')
        ly = legend_y + 18 * k
        out.append(f'<line x1="30" x2="52" y1="{ly - 4}" y2="{ly - 4}" stroke="{c}" stroke-width="3"/>'
                   f'<text x="58" y="{ly}">{e(s["label"])}</text>')
    return "".join(out) + "</svg>"


def explore_plots(sw: dict) -> str:
    """Throughput against batch size, one line per data type/backend; probe accuracy per point
    against its target (% of reference, dashed tick: the target; grey: the point failed)."""
    pts = sw["points"]
    xs = sorted({r["batch_size"] for r in pts})
    keys = []
    for r in pts:
        k = (r["data_type"], r["backend"], r.get("quantizer"))
        if k not in keys:
            keys.append(k)
    series = []
    for i, k in enumerate(keys):
        mine = [r for r in pts if (r["data_type"], r["backend"], r.get("quantizer")) == k]
        series.append({"label": " ".join(x for x in k if x), "colour": SERIES_COLOURS[i % len(SERIES_COLOURS)],
                       "points": {r["batch_size"]: ((r.get("throughput") or {}).get("Offline") or {}).get("value")
                                  for r in mine}})
    out = ["<div>" + svg_lines(series, xs, f"{sw['model']}: Offline throughput against batch size (x: the point failed)",
                               "samples/s") + "</div>"]
    bars = []
    for r in pts:
        ms = (r.get("probe") or {}).get("metrics") or {}
        label_ = r["id"]
        if not ms:
            bars.append({"label": label_, "value": 0.0, "colour": "#9e9e9e", "group": (r["data_type"], r["backend"]),
                         "note": f"{r['status']}" + (f" ({r['kind']})" if r.get("kind") else "")})
            continue
        m, v = next(iter(ms.items()))
        pct = v.get("pct_of_reference")
        ratio_pct = 100 * v["target"] / v["value"] * pct / 100 if pct and v["value"] else None
        ok = v["within"]
        bars.append({"label": label_, "value": pct or 0.0, "colour": "#2e7d32" if ok else "#c62828",
                     "target": ratio_pct, "group": (r["data_type"], r["backend"]),
                     "note": f"{m} {pct:.2f}% {'probe within target' if ok else 'probe below target'}"
                             if pct is not None else f"{m} {v['value']:.4g}"})
    vals = [b["value"] for b in bars] + [b["target"] for b in bars if b.get("target") is not None]
    out.append("<div>" + svg_bars(bars, 0.0, max(vals + [100.0]), (),
                                  "probe accuracy as % of reference per point (dashed tick: the target; a probe is "
                                  "never a PASS)") + "</div>")
    return "".join(out)


def explore_section(sw: dict) -> str:
    e = html.escape
    return (f'<section id="sweep-{e(_anchor(sw["file"]))}"><h2>{e(_sweep_title(sw))}</h2>'
            f"<p>Sweep dir <code>{e(sw.get('sweep_dir', str(Path(sw['file']).parent)))}</code>: per point a short "
            f"LoadGen performance run ({e(', '.join(sw['settings']['scenarios']))}) and an accuracy run on the same "
            f"probe of {e(_probe_size(sw))} spread over the set. {e(_best_text(sw))}</p>"
            + _html_table(explore_rows(sw), "results") + explore_plots(sw) + "</section>")


# ------------------------------------------------------------------ pages

# The page must read at 1280 px whatever the number of runs: the results table takes the page's
# width and wraps inside its cells (run ids and dirs may break anywhere), verdicts and flags never
# wrap, and plots scale down to the page.
CSS = """body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px;max-width:100%}table.results{width:100%}
th,td{border:1px solid #ccc;padding:3px 5px;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f0f0f0}td.id,code{overflow-wrap:anywhere}td.id{min-width:9em}td.ml{white-space:pre-line}
.PASS,.VALID{color:#2e7d32;font-weight:bold}.FAIL,.INVALID,.ERROR{color:#c62828;font-weight:bold}
td.PASS,td.FAIL,td.VALID,td.INVALID,td.ERROR{white-space:nowrap}
.flag{background:#fff3cd;padding:0 4px;margin:0 4px 2px 0;border-radius:3px;white-space:nowrap;display:inline-block}
.flag.ERROR,.flag.FAILED{background:#f8d7da}.err{color:#c62828}
svg{max-width:100%;height:auto}svg text{font:12px sans-serif}svg text.t{font-weight:bold}
svg text.mark{paint-order:stroke;stroke:#fff;stroke-width:3px}
section{border-top:1px solid #ddd;margin-top:16px}"""

VERDICTS = {"PASS", "FAIL", "VALID", "INVALID", "ERROR"}


def _flag_spans(fl) -> str:
    return "".join(f'<span class="flag {html.escape(f)}">{html.escape(f)}</span>' for f in fl)


PER_METRIC = ("accuracy", "% of ref", "accuracy target", "verified (delta)")


def _html_table(rows: list[dict], cls: str = "") -> str:
    """A run with several target metrics takes one table row per metric: its PER_METRIC cells
    line up metric by metric, the other cells span those rows."""
    if not rows:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(k)}</th>" for k in rows[0])
    body = []
    for r in rows:
        n = max(len(r[k].split("\n")) for k in PER_METRIC if k in r) if any(k in r for k in PER_METRIC) else 1
        span = f' rowspan="{n}"' if n > 1 else ""
        cells, sub = [], [[] for _ in range(n - 1)]
        for k, v in r.items():
            if n > 1 and k in PER_METRIC:
                lines = v.split("\n") if "\n" in v else [v] + ["-"] * (n - 1)
                cells.append(_html_cell(k, lines[0]))
                for i, line in enumerate(lines[1:]):
                    sub[i].append(_html_cell(k, line))
            else:
                cells.append(_html_cell(k, v, span))
        body.append('<tr class="run">' + "".join(cells) + "</tr>" + "".join(f"<tr>{''.join(c)}</tr>" for c in sub))
    return f'<table{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}><tr>{head}</tr>{"".join(body)}</table>'


def _html_cell(k: str, v: str, span: str = "") -> str:
    e = html.escape
    if k == "run":
        # one line per dir of a run split over node dirs; a break allowed after every "/"
        links = "<br>".join(e(d).replace("/", "/<wbr>") for d in v.split(" + "))
        return f'<td class="id"{span}><a href="#{e(_anchor(v))}">{links}</a></td>'
    if k == "flags" and v != "-":
        return f"<td{span}>" + _flag_spans(v.split()) + "</td>"
    if k in ("dir", "devices", "host"):
        return f'<td class="id"{span}>{e(v)}</td>'
    cls = v if v in VERDICTS else "FAIL" if v.endswith(" FAIL") else "ml" if "\n" in v else ""
    text = e(v).replace("_", "_<wbr>")  # TOKENS_PER_SAMPLE may wrap: no column wider than it must
    return f'<td class="{cls}"{span}>{text}</td>' if cls else f"<td{span}>{text}</td>"


def _anchor(run_id: str) -> str:
    return "run-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in run_id)


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", "; ")  # noqa: E731
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell(v) for v in r.values()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_html(runs: list[dict], log_dir: Path, sweeps: list[dict] = ()) -> str:
    e = html.escape
    errors = [(r, error_line(r)) for r in runs if r["check_error"] is not None]
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
             f"<meta name=\"viewport\" content=\"width=device-width\">"
             f"<title>evalkit report: {e(str(log_dir))}</title><style>{CSS}</style></head><body>",
             f"<h1>MLPerf Inference accuracy and performance</h1><p>Runs under <code>{e(str(log_dir))}</code>: {len(runs)}, "
             f"written {time.strftime('%Y-%m-%d %H:%M:%S')}. SYNTHETIC runs are scored against the synthetic model's "
             f"own outputs; PARTIAL runs cover fewer samples than the dataset; ERROR: the run's check raised an "
             f"error (below). A run split over several dirs is one row.</p>",
             "<h2>Results</h2>", _html_table([summary_row(r) for r in runs], "results")]
    if errors:
        parts.append("<ul>" + "".join(f'<li class="err"><a href="#{e(_anchor(r["id"]))}">{e(r["id"])}</a>: {e(msg)}</li>'
                                      for r, msg in errors) + "</ul>")
    qrows = quant_rows(runs)
    if qrows:  # MLPerf results pages are read for this: the reference model next to the quantized one
        parts += ["<h2>Quantized vs unquantized</h2><p>Each quantized run beside the unquantized run of the same "
                  "checkpoint and data. On SYNTHETIC data the reference is the fp32 model's own output.</p>",
                  _html_table(qrows)]
    parts += ["<h2>Accuracy as % of reference</h2>", accuracy_plot(runs)]
    parts += [explore_section(sw) for sw in sweeps]
    parts.append("<h2>Runs</h2>")
    for run in runs:
        dirs = ", ".join(f"<code>{e(d)}</code>" for d in run["dirs"])
        parts.append(f'<section id="{e(_anchor(run["id"]))}"><h3>{e(run["id"])} {_flag_spans(flags(run))}</h3>'
                     f"<p>{e(run['model'])} {e(run['scenario'])} {e(run['mode'])}, {e(run['data_type'])}, "
                     f"devices {e(', '.join(run['devices']) or '-')}, hosts {e(', '.join(run['hosts']) or '-')}, "
                     f"{'dirs' if len(run['dirs']) > 1 else 'dir'} {dirs}</p>")
        if run["check_error"] is not None:
            parts.append(f'<p class="err">{e(error_line(run))}</p>')
        fails = perf_failures(run)
        if fails:
            parts.append("<p>failed constraints: " + e("; ".join(fails)) + "</p>")
        parts.append(_html_table(partition_rows(run)) + wall_plot(run) + "</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(runs: list[dict], log_dir: Path, sweeps: list[dict] = ()) -> str:
    out = [f"# MLPerf Inference accuracy and performance\n\nruns under `{log_dir}`: {len(runs)}\n",
           "## Results\n", _md_table([summary_row(r) for r in runs])]
    qrows = quant_rows(runs)
    if qrows:
        out += ["## Quantized vs unquantized\n", _md_table(qrows)]
    for sw in sweeps:
        out += [f"## {_sweep_title(sw)}\n", _md_table(explore_rows(sw)), _best_text(sw) + "\n"]
    errors = [f"- {r['id']}: {error_line(r)}" for r in runs if r["check_error"] is not None]
    if errors:
        out.append("\n".join(errors) + "\n")
    out.append("## Runs\n")
    for run in runs:
        out.append(f"### {run['id']}" + (" — " + " ".join(flags(run)) if flags(run) else "") + "\n")
        if len(run["dirs"]) > 1:
            out.append("dirs: " + ", ".join(f"`{d}`" for d in run["dirs"]) + "\n")
        if run["check_error"] is not None:
            out.append(error_line(run) + "\n")
        fails = perf_failures(run)
        if fails:
            out.append("failed constraints: " + "; ".join(fails) + "\n")
        out.append(_md_table(partition_rows(run)))
    return "\n".join(out)


def write_report(log_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    log_dir = Path(log_dir)
    runs = collect_runs(log_dir)
    sweeps = find_sweeps(log_dir)
    if not runs and not sweeps:
        raise KitError(f"log dir {log_dir} holds no runs (no partition manifests, progress.json, "
                       f"accuracy.json or performance.json)")
    out_dir = Path(out_dir or log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_f, md_f = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(html_f, render_html(runs, log_dir, sweeps))
    atomic_write_text(md_f, render_markdown(runs, log_dir, sweeps))
    return html_f, md_f
