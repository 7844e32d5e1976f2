"""Performance runs: parse LoadGen's mlperf_log_summary.txt per partition and
combine the partitions into the run's performance.json.

Knows the summary format and partition dirs; nothing about models or targets.
"""
from __future__ import annotations

import re
from pathlib import Path

from . import rundir
from .errors import KitError
from .rundir import SUMMARY
from .util import atomic_write_json

PERFORMANCE = "performance.json"
_HEADER_KEYS = {"SUT name", "Scenario", "Mode"}


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def unit_of(key: str) -> str:
    k = key.lower()
    if "(ns)" in k:
        return "ns"
    if "tokens per second" in k:
        return "tokens/s"
    if "per second" in k:
        return "samples/s"
    if k.startswith("qps"):
        return "queries/s"
    return ""


def parse_summary(path: Path) -> dict:
    """The facts of one LoadGen summary: result, headline metric, constraints, latencies.

    The headline is the first numeric line of the Results Summary section, which is
    where LoadGen prints the scenario's metric (Offline samples/s, SingleStream p90
    latency, ...), so no per-scenario table is needed.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise KitError(f"{path}: cannot read the LoadGen summary ({e.strerror})") from None
    sections = re.split(r"^=+\s*$", text, flags=re.M)
    # sections: '', 'MLPerf Results Summary', body, 'Additional Stats', body, 'Test Parameters Used', body...
    named = {}
    for i in range(1, len(sections) - 1, 2):
        named[sections[i].strip()] = sections[i + 1]
    if "MLPerf Results Summary" not in named:
        raise KitError(f"{path}: not a LoadGen summary (no 'MLPerf Results Summary' section)")
    out = {"file": str(path), "result": None, "constraints": {}, "metrics": {}, "headline": None,
           "latency_ns": {}, "settings": {}, "notes": []}
    for raw in named["MLPerf Results Summary"].splitlines():
        line = raw.strip()
        if line.startswith("*"):
            out["notes"].append(line.lstrip("* ").strip())
            continue
        if ":" not in line:
            continue
        key, value = (x.strip() for x in line.split(":", 1))
        if key in _HEADER_KEYS:
            out[key.lower().replace(" ", "_")] = value
        elif key == "Result is":
            out["result"] = value
        elif key.endswith("satisfied"):
            out["constraints"][key] = value.lower() == "yes"
        elif _number(value) is not None:
            out["metrics"][key] = _number(value)
            if out["headline"] is None:
                out["headline"] = {"name": key, "value": _number(value), "unit": unit_of(key)}
    for raw in named.get("Additional Stats", "").splitlines():
        if ":" not in raw:
            continue
        key, value = (x.strip() for x in raw.split(":", 1))
        v = _number(value)
        if v is None:
            continue
        if key.endswith("latency (ns)"):
            out["latency_ns"][key.replace(" latency (ns)", "")] = v
        else:
            out["metrics"].setdefault(key, v)
    for raw in named.get("Test Parameters Used", "").splitlines():
        if ":" in raw:
            key, value = (x.strip() for x in raw.split(":", 1))
            out["settings"][key] = _number(value) if _number(value) is not None else value
    if out["result"] not in ("VALID", "INVALID"):
        raise KitError(f"{path}: no 'Result is : VALID|INVALID' line; the LoadGen run did not finish")
    if out.get("mode") != "PerformanceOnly":
        raise KitError(f"{path}: mode is {out.get('mode')}, not PerformanceOnly; only performance runs have a result")
    out["failed_constraints"] = [k for k, ok in out["constraints"].items() if not ok]
    return out


def combine(parts: dict[int, dict]) -> dict:
    """One result over partitions: VALID only if every partition is. Throughputs add
    up (the partitions ran side by side on their own devices); latencies take the worst."""
    heads = [s["headline"] for s in parts.values() if s["headline"]]
    headline = None
    if heads and len({h["name"] for h in heads}) == 1:
        h0 = heads[0]
        total = sum(h["value"] for h in heads) if h0["unit"].endswith("/s") else max(h["value"] for h in heads)
        headline = {"name": h0["name"], "value": total, "unit": h0["unit"],
                    "combined_as": "sum" if h0["unit"].endswith("/s") else "max"}
    pcts = sorted({k for s in parts.values() for k in s["latency_ns"]})
    return {
        "result": "VALID" if all(s["result"] == "VALID" for s in parts.values()) else "INVALID",
        "headline": headline,
        "failed_constraints": [f"{c} (partition {p})" for p, s in sorted(parts.items()) for c in s["failed_constraints"]],
        "latency_ns": {k: max(s["latency_ns"].get(k, 0) for s in parts.values()) for k in pcts},
    }


def run_performance(run_dir: Path) -> dict:
    """performance.json's content for a run dir whose partitions are all complete."""
    run_dir = Path(run_dir)
    parts, manifest = {}, None
    for p, (d, m) in sorted(rundir.complete_partitions([run_dir]).items()):
        if m["config"]["mode"] != "performance":
            raise KitError(f"{d / rundir.MANIFEST}: partition {p} is a {m['config']['mode']} run, not performance")
        manifest = manifest or m
        parts[p] = parse_summary(d / SUMMARY)
    if manifest is None:
        raise KitError(f"run dir {run_dir} has no complete performance partition")
    missing = [p for p in range(int(manifest["n_partitions"])) if p not in parts]
    if missing:
        raise KitError(f"run dir {run_dir}: partitions {missing} are missing or unfinished; "
                       f"performance.json needs all {manifest['n_partitions']}")
    c = manifest["config"]
    return {"model": c["model"], "scenario": c["scenario"], "data_type": c["data_type"],
            "synthetic": c["synthetic"], "n_count": c["n_count"], "n_partitions": manifest["n_partitions"],
            "config_hash": manifest["config_hash"], **combine(parts),
            "partitions": {str(p): s for p, s in parts.items()}}


def write_performance(run_dir: Path) -> dict:
    result = run_performance(run_dir)
    atomic_write_json(Path(run_dir) / PERFORMANCE, result)
    return result


def fmt_value(h: dict | None) -> str:
    if not h:
        return "-"
    if h["unit"] == "ns":
        return f"{h['value'] / 1e6:.3f} ms"
    return f"{h['value']:.4g} {h['unit']}"


def format_table(result: dict) -> str:
    """The short terminal table after a performance run."""
    hdr = ("partition", "result", "metric", "value", "p50", "p99", "failed constraints")
    rows = []
    for p, s in sorted(result["partitions"].items(), key=lambda kv: int(kv[0])):
        lat = s["latency_ns"]
        rows.append((p, s["result"], s["headline"]["name"] if s["headline"] else "-", fmt_value(s["headline"]),
                     f"{lat.get('50.00 percentile', 0) / 1e6:.2f} ms", f"{lat.get('99.00 percentile', 0) / 1e6:.2f} ms",
                     ", ".join(s["failed_constraints"]) or "-"))
    lat = result["latency_ns"]
    rows.append(("all", result["result"], result["headline"]["name"] if result["headline"] else "-",
                 fmt_value(result["headline"]), f"{lat.get('50.00 percentile', 0) / 1e6:.2f} ms",
                 f"{lat.get('99.00 percentile', 0) / 1e6:.2f} ms", ", ".join(result["failed_constraints"]) or "-"))
    widths = [max(len(str(r[i])) for r in [hdr] + rows) for i in range(len(hdr))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    sep = "  ".join("-" * w for w in widths)
    head = (f"{result['model']} {result['scenario']} PerformanceOnly, {result['data_type']}"
            + (" -- SYNTHETIC data" if result["synthetic"] else ""))
    return "\n".join(x.rstrip() for x in [head, fmt.format(*hdr), sep] + [fmt.format(*r) for r in rows] + [sep,
                     f"RESULT: {result['result']}"])
