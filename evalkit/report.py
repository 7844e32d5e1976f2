"""Runs under a logs dir -> one self-contained HTML page (inline CSS + SVG, no JS)
and its Markdown twin, like the MLPerf results page: model, accuracy target,
accuracy, % of reference, PASS/FAIL, performance VALID/INVALID.

Reads only what runs leave behind (partition.json, progress.json,
accuracy.json, performance.json); collect_runs() is shared with metrics.py.
"""
from __future__ import annotations

import html
import json
import statistics
import time
from pathlib import Path

from . import rundir
from .errors import KitError
from .perf import PERFORMANCE, fmt_value, run_performance
from .progress import fmt_eta
from .util import atomic_write_text

VERIFIED_DIR = "internal"  # logs/internal/<model>/accuracy.json: verified reference logs
STRAGGLER = 1.25           # a partition this many times the median wall time is flagged


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise KitError(f"{path}: corrupt JSON; rerun the command that writes it") from None


def find_runs(log_dir: Path) -> list[Path]:
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise KitError(f"log dir {log_dir} does not exist")
    found, stack = [], [log_dir]
    while stack:
        d = stack.pop()
        if rundir.is_run_dir(d):
            found.append(d)
            continue  # a run's partition dirs are not runs
        stack.extend(x for x in d.iterdir() if x.is_dir() and not (d == log_dir and x.name == VERIFIED_DIR))
    return sorted(found)


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


def load_run(run_dir: Path, log_dir: Path, verified: dict[str, dict], now: float | None = None) -> dict:
    run_dir = Path(run_dir)
    acc = _read_json(run_dir / "accuracy.json")
    perf = _read_json(run_dir / PERFORMANCE)
    parts, meta = [], {}
    gathered = _read_json(run_dir / rundir.GATHER_INFO)
    if gathered and not rundir.partition_dirs(run_dir):
        # `gather --out DIR` over other nodes' dirs: the partitions are known from gather.json
        meta = dict(gathered["config"], n_partitions=gathered["n_partitions"])
        parts = [{"partition": p["partition"], "state": "complete", "device": p.get("device"), "host": p.get("host"),
                  "wall_s": _wall(p.get("timings", {})), "done": p.get("entries"), "total": p.get("entries"),
                  "rate": None, "eta_s": None} for p in gathered.get("partitions", [])]
    else:
        # the same states as `evalkit status`: one reader of the run dir (evalkit/rundir.py)
        st = rundir.collect([run_dir], now=now)
        meta = dict(st.meta)
        for x in st.parts.values():
            if x.manifest is not None:
                meta = {**x.manifest["config"], "n_partitions": x.manifest["n_partitions"], **meta}
            parts.append({"partition": x.p, "state": x.state, "done": x.done if x.state != "missing" else None,
                          "total": x.total or None, "rate": x.rate, "eta_s": x.eta, "device": x.device,
                          "host": x.host, "wall_s": x.wall_s})
    if acc and not meta:
        meta = dict(acc.get("config", {}))
    if perf and not meta:
        meta = {k: perf.get(k) for k in ("model", "scenario", "data_type", "synthetic", "n_count", "n_partitions")}
        meta["mode"] = "performance"
    n_parts = int(meta.get("n_partitions") or len(parts) or 1)
    have = {r["partition"] for r in parts}
    parts += [{"partition": p, "state": "missing", "wall_s": None, "done": None, "total": None, "rate": None,
               "eta_s": None, "device": None, "host": None} for p in range(n_parts) if p not in have]
    parts.sort(key=lambda r: r["partition"])
    states = {r["state"] for r in parts}
    state = ("complete" if states == {"complete"} else "failed" if "failed" in states
             else "in progress" if "running" in states else "incomplete")
    if perf is None and meta.get("mode") == "performance" and state == "complete":
        perf = run_performance(run_dir)  # e.g. partitions copied in from other nodes
    model = meta.get("model") or run_dir.parent.parent.name
    n_count = meta.get("n_count") or (acc or {}).get("n_count")
    dataset_size = (acc or {}).get("dataset_size")
    rid = str(run_dir.relative_to(log_dir)) if run_dir != Path(log_dir) else run_dir.name
    return {
        "id": rid, "dir": str(run_dir), "model": model, "scenario": meta.get("scenario", "?"),
        "mode": meta.get("mode", "accuracy" if acc else "?"), "data_type": meta.get("data_type", "?"),
        "synthetic": bool(meta.get("synthetic") or (acc or {}).get("synthetic")),
        "partial": bool((acc or {}).get("partial")), "n_count": n_count, "dataset_size": dataset_size,
        "n_partitions": n_parts, "state": state, "partitions": parts,
        "devices": sorted({r["device"] for r in parts if r.get("device")}),
        "hosts": sorted({r["host"] for r in parts if r.get("host")}),
        "accuracy": acc, "performance": perf, "verified": verified.get(model),
    }


def collect_runs(log_dir: Path) -> list[dict]:
    verified = verified_logs(log_dir)
    runs = [load_run(d, Path(log_dir), verified) for d in find_runs(log_dir)]
    return sorted(runs, key=lambda r: (r["model"], r["scenario"], r["data_type"], r["mode"], r["id"]))


# ------------------------------------------------------------------ table rows

def flags(run: dict) -> list[str]:
    out = []
    if run["synthetic"]:
        out.append("SYNTHETIC")
    if run["partial"]:
        out.append("PARTIAL")
    if run["state"] != "complete":
        out.append(run["state"].upper())
    return out


def _acc_row(acc: dict | None) -> dict | None:
    return acc["rows"][0] if acc and acc.get("rows") else None


def summary_row(run: dict) -> dict:
    """The results-page line of one run; HTML and Markdown both render these strings."""
    acc, perf, r = run["accuracy"], run["performance"], _acc_row(run["accuracy"])
    done = sum(p["state"] == "complete" for p in run["partitions"])
    walls = [p["wall_s"] for p in run["partitions"] if p.get("wall_s") is not None]
    ver = _acc_row(run["verified"])
    verified = "-"
    if ver and r and ver["metric"] == r["metric"]:
        verified = f"{ver['value']:.4f} ({r['value'] - ver['value']:+.4f})"
    return {
        "run": run["id"], "model": run["model"], "scenario": run["scenario"], "mode": run["mode"],
        "dtype": run["data_type"], "devices": ", ".join(run["devices"]) or "-",
        "partitions": f"{done}/{run['n_partitions']}", "samples": str(run["n_count"] or "-"),
        "accuracy target": f"{acc['accuracy_target']}% of {r['reference']:.4g}" if acc and r else "-",
        "accuracy": f"{r['metric']} = {r['value']:.4f}" if r else "-",
        "% of ref": f"{r['pct_of_reference']:.2f}%" if r and r.get("pct_of_reference") is not None else "-",
        "verified (delta)": verified,
        "performance": fmt_value(perf.get("headline")) if perf else "-",
        # a run is one mode: PASS/FAIL for accuracy, VALID/INVALID for performance
        "result": acc["verdict"] if acc else perf["result"] if perf else "-",
        "slowest partition": f"{max(walls):.1f} s" if walls else "-",
        "flags": " ".join(flags(run)) or "-",
    }


def partition_rows(run: dict) -> list[dict]:
    out = []
    for p in run["partitions"]:
        total = p.get("total") or 0
        out.append({"partition": str(p["partition"]), "state": p["state"], "device": p.get("device") or "-",
                    "host": p.get("host") or "-",
                    "wall": f"{p['wall_s']:.1f} s" if p.get("wall_s") is not None else "-",
                    "done": f"{p.get('done')}/{total}" if total > 0 else str(p.get("done") if p.get("done") is not None else "-"),
                    "rate": f"{p['rate']:.2f}/s" if p.get("rate") is not None else "-",
                    "ETA": fmt_eta(p.get("eta_s")) if p["state"] == "running" else "-"})
    return out


def perf_failures(run: dict) -> list[str]:
    return list(run["performance"].get("failed_constraints", [])) if run["performance"] else []


# ------------------------------------------------------------------ plots

def svg_bars(bars: list[tuple[str, float, str, str]], lo: float, hi: float, marks: list[tuple[float, str]] = (),
             title: str = "") -> str:
    """Horizontal bar chart as inline SVG: bars = (label, value, colour, text at the bar's end)."""
    lw, pw, bh, gap, top = 12 + 7 * max(len(b[0]) for b in bars), 420, 18, 6, 40
    h = top + len(bars) * (bh + gap) + 20
    span = (hi - lo) or 1.0
    x = lambda v: lw + pw * (min(max(v, lo), hi) - lo) / span  # noqa: E731
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{lw + pw + 130}" height="{h}" role="img" '
           f'aria-label="{e(title)}"><text x="4" y="16" class="t">{e(title)}</text>']
    for i, (label, v, colour, note) in enumerate(bars):
        y = top + i * (bh + gap)
        out.append(f'<text x="{lw - 6}" y="{y + 13}" text-anchor="end">{e(label)}</text>'
                   f'<rect x="{lw}" y="{y}" width="{max(x(v) - lw, 1):.1f}" height="{bh}" fill="{colour}"/>'
                   f'<text x="{x(v) + 4:.1f}" y="{y + 13}">{e(note)}</text>')
    for v, label in marks:
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 6}" y2="{h - 16}" stroke="#333" '
                   f'stroke-dasharray="4 3"/><text x="{x(v):.1f}" y="{top - 10}" text-anchor="middle">{e(label)}</text>')
    out.append(f'<text x="{lw}" y="{h - 4}">{lo:.3g}</text>'
               f'<text x="{lw + pw}" y="{h - 4}" text-anchor="end">{hi:.3g}</text>')
    return "".join(out) + "</svg>"


def accuracy_plot(runs: list[dict]) -> str:
    bars, marks = [], set()
    for run in runs:
        r = _acc_row(run["accuracy"])
        if r and r.get("pct_of_reference") is not None:
            ok = run["accuracy"]["verdict"] == "PASS"
            bars.append((f"{run['id']} {run['data_type']}",
                         r["pct_of_reference"], "#2e7d32" if ok else "#c62828",
                         f"{r['pct_of_reference']:.2f}% {run['accuracy']['verdict']}"))
            marks.add(float(run["accuracy"]["accuracy_target"]))
    if not bars:
        return "<p>No scored accuracy runs.</p>"
    vals = [b[1] for b in bars] + list(marks)
    lo, hi = max(0.0, min(vals) - 2), max(vals) + 1
    return svg_bars(bars, round(lo), round(hi), [(m, f"target {m:g}%") for m in sorted(marks)],
                    "accuracy as % of reference")


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
        bars.append((f"partition {p['partition']} ({p.get('device') or '-'})", w, colour,
                     f"{w:.1f} s" + (" straggler" if slow else "") + ("" if p["state"] == "complete" else f" {p['state']}")))
    marks = [(med, f"median {med:.1f} s")] if len(walls) > 1 else []
    return svg_bars(bars, 0, max(walls) * 1.1 or 1, marks, "wall time per partition (s)")


# ------------------------------------------------------------------ pages

CSS = """body{font:13px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f0f0f0}.PASS,.VALID{color:#2e7d32;font-weight:bold}.FAIL,.INVALID{color:#c62828;font-weight:bold}
.flag{background:#fff3cd;padding:0 4px;margin-right:4px;border-radius:3px}svg text{font:12px sans-serif}
svg text.t{font-weight:bold}section{border-top:1px solid #ddd;margin-top:16px}"""

VERDICTS = {"PASS", "FAIL", "VALID", "INVALID"}


def _html_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    e = html.escape
    head = "".join(f"<th>{e(k)}</th>" for k in rows[0])
    body = []
    for r in rows:
        cells = []
        for k, v in r.items():
            if k == "run":
                cells.append(f'<td><a href="#{e(_anchor(v))}">{e(v)}</a></td>')
            elif k == "flags" and v != "-":
                cells.append("<td>" + "".join(f'<span class="flag">{e(f)}</span>' for f in v.split()) + "</td>")
            else:
                cells.append(f'<td class="{e(v) if v in VERDICTS else ""}">{e(v)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _anchor(run_id: str) -> str:
    return "run-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in run_id)


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell(v) for v in r.values()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_html(runs: list[dict], log_dir: Path) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
             f"<title>evalkit report: {e(str(log_dir))}</title><style>{CSS}</style></head><body>",
             f"<h1>MLPerf Inference accuracy and performance</h1><p>Runs under <code>{e(str(log_dir))}</code>: {len(runs)}, "
             f"written {time.strftime('%Y-%m-%d %H:%M:%S')}. SYNTHETIC runs are scored against the synthetic model's "
             f"own outputs; PARTIAL runs cover fewer samples than the dataset.</p>",
             "<h2>Results</h2>", _html_table([summary_row(r) for r in runs]),
             "<h2>Accuracy as % of reference</h2>", accuracy_plot(runs), "<h2>Runs</h2>"]
    for run in runs:
        fl = "".join(f'<span class="flag">{e(f)}</span>' for f in flags(run))
        parts.append(f'<section id="{e(_anchor(run["id"]))}"><h3>{e(run["id"])} {fl}</h3>'
                     f"<p>{e(run['model'])} {e(run['scenario'])} {e(run['mode'])}, {e(run['data_type'])}, "
                     f"devices {e(', '.join(run['devices']) or '-')}, hosts {e(', '.join(run['hosts']) or '-')}, "
                     f"dir <code>{e(run['dir'])}</code></p>")
        fails = perf_failures(run)
        if fails:
            parts.append("<p>failed constraints: " + e("; ".join(fails)) + "</p>")
        parts.append(_html_table(partition_rows(run)) + wall_plot(run) + "</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(runs: list[dict], log_dir: Path) -> str:
    out = [f"# MLPerf Inference accuracy and performance\n\nruns under `{log_dir}`: {len(runs)}\n",
           "## Results\n", _md_table([summary_row(r) for r in runs]), "## Runs\n"]
    for run in runs:
        out.append(f"### {run['id']}" + (" — " + " ".join(flags(run)) if flags(run) else "") + "\n")
        fails = perf_failures(run)
        if fails:
            out.append("failed constraints: " + "; ".join(fails) + "\n")
        out.append(_md_table(partition_rows(run)))
    return "\n".join(out)


def write_report(log_dir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
    log_dir = Path(log_dir)
    runs = collect_runs(log_dir)
    if not runs:
        raise KitError(f"log dir {log_dir} holds no runs (no partition manifests, progress.json, "
                       f"accuracy.json or performance.json)")
    out_dir = Path(out_dir or log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_f, md_f = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(html_f, render_html(runs, log_dir))
    atomic_write_text(md_f, render_markdown(runs, log_dir))
    return html_f, md_f
