"""Dashboard rows for every finished run under a logs dir: metrics.csv + metrics.json.

One row per run and mode, named like the MLPerf dashboards name them:
<system>-<model>-<scenario>-AccuracyMode / -PerformanceMode, value 1/0 for
PASS/FAIL or VALID/INVALID (0 with result ERROR when the check raised), plus
the accuracy and throughput values themselves.
"""
from __future__ import annotations

import csv
import io
import json
import socket
from pathlib import Path

from . import targets
from .report import collect_runs
from .util import atomic_write_text

FIELDS = ("scenario", "metric", "value", "unit", "result", "accuracy_metric", "accuracy", "pct_of_reference",
          "performance_metric", "performance", "performance_unit", "data_type", "n_count", "synthetic",
          "partial", "run")


def rows(runs: list[dict], system: str) -> list[dict]:
    out = []
    for run in runs:
        base = {"scenario": run["model"], "data_type": run["data_type"], "n_count": run["n_count"],
                "synthetic": run["synthetic"], "partial": run["partial"], "run": run["id"]}
        acc, perf = run["accuracy"], run["performance"]
        if acc:
            r = acc["rows"][0]
            out.append(dict(base, metric=f"{system}-{run['model']}-{run['scenario']}-AccuracyMode",
                            value=int(acc["verdict"] == "PASS"), unit="PASS=1/FAIL=0", result=acc["verdict"],
                            accuracy_metric=targets.label(r["metric"]), accuracy=r["value"],
                            pct_of_reference=r.get("pct_of_reference")))
        elif run.get("check_error") is not None:
            # the check raised (check_error.json): a dashboard must see the run, as a 0
            out.append(dict(base, metric=f"{system}-{run['model']}-{run['scenario']}-AccuracyMode",
                            value=0, unit="PASS=1/FAIL=0", result="ERROR"))
        if perf:
            h = perf.get("headline") or {}
            out.append(dict(base, metric=f"{system}-{run['model']}-{run['scenario']}-PerformanceMode",
                            value=int(perf["result"] == "VALID"), unit="VALID=1/INVALID=0", result=perf["result"],
                            performance_metric=h.get("name"), performance=h.get("value"),
                            performance_unit=h.get("unit")))
    return [{k: r.get(k) for k in FIELDS} for r in out]


def write_metrics(log_dir: Path, out_dir: Path | None = None, system: str | None = None) -> list[Path]:
    data = rows(collect_runs(log_dir), system or socket.gethostname())
    out_dir = Path(out_dir or log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(data)
    csv_f, json_f = out_dir / "metrics.csv", out_dir / "metrics.json"
    atomic_write_text(csv_f, buf.getvalue())
    atomic_write_text(json_f, json.dumps(data, indent=2) + "\n")
    return [csv_f, json_f]
