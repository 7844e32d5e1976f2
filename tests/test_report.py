"""Report and metrics over a logs dir of real short runs of synthetic ResNet50:
PASS, FAIL (shifted merged log), PARTIAL, performance VALID/INVALID, a run in
progress and a verified log. The HTML is rendered in headless Chromium."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from evalkit.accuracy_log import Writer, iter_entries
from evalkit.progress import Progress

from conftest import evalkit, one_line_error

MERGED = "merged_mlperf_log_accuracy.json"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def run(synth: Path, log: Path, *extra):
    cp = evalkit("run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model",
                 "--log_path", log, "--batch_size", 4, *extra)
    assert cp.returncode == 0, cp.stderr
    return cp


@pytest.fixture(scope="module")
def logs(resnet_synth, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    off = logs / "resnet" / "Offline"
    run(resnet_synth, off / "accuracy-pass", "--n_devices", 2)
    run(resnet_synth, off / "accuracy-partial", "--n_count", 8)
    run(resnet_synth, off / "performance-valid", "--mode", "performance", "--n_count", 8,
        "--min_duration", 50, "--min_query_count", 1)
    run(resnet_synth, logs / "resnet" / "SingleStream" / "performance-invalid", "--mode", "performance",
        "--scenario", "SingleStream", "--n_count", 4, "--batch_size", 1, "--min_duration", 10,
        "--min_query_count", 4)
    # FAIL: the PASS run with its merged log shifted by one index, scored by check
    fail = off / "accuracy-fail"
    shutil.copytree(off / "accuracy-pass", fail)
    es = sorted(iter_entries(fail / MERGED), key=lambda e: e["qsl_idx"])
    with open(fail / MERGED, "w") as f:
        w = Writer(f)
        for e in es:
            w.write({"seq_id": e["seq_id"], "qsl_idx": (e["qsl_idx"] + 1) % len(es), "data": e["data"]})
        w.close()
    assert evalkit("check", fail).returncode == 1
    # partitions gathered into a dir of their own (as after runs on several nodes)
    evalkit("gather", off / "accuracy-pass", "--out", off / "accuracy-merged", check=True)
    evalkit("check", off / "accuracy-merged", check=True)
    # In progress: partition 1 has no manifest yet, only the progress.json a running worker writes
    prog = off / "accuracy-running"
    shutil.copytree(off / "accuracy-pass", prog)
    for name in (MERGED, "gather.json", "accuracy.json", "accuracy.txt"):
        (prog / name).unlink()
    (prog / "1" / "partition.json").unlink()
    meta = json.loads((prog / "0" / "progress.json").read_text())
    pr = Progress(prog / "1", 1, 12, meta={k: meta[k] for k in ("model", "scenario", "mode", "data_type",
                                                                "synthetic", "n_count", "n_partitions")},
                  stream=open(os.devnull, "w"))
    pr.started -= 10  # ten seconds in
    pr.add(5)
    # a verified log to compare with
    (logs / "internal" / "resnet").mkdir(parents=True)
    shutil.copy(off / "accuracy-pass" / "accuracy.json", logs / "internal" / "resnet" / "accuracy.json")
    return logs


EXPECT = {  # run id -> (result, flags)
    "resnet/Offline/accuracy-pass": ("PASS", "SYNTHETIC"),
    "resnet/Offline/accuracy-fail": ("FAIL", "SYNTHETIC"),
    "resnet/Offline/accuracy-partial": ("PASS", "SYNTHETIC PARTIAL"),
    "resnet/Offline/accuracy-merged": ("PASS", "SYNTHETIC"),
    "resnet/Offline/accuracy-running": ("-", "SYNTHETIC IN PROGRESS"),
    "resnet/Offline/performance-valid": ("VALID", "SYNTHETIC"),
    "resnet/SingleStream/performance-invalid": ("INVALID", "SYNTHETIC"),
}


def md_results(text: str) -> dict[str, dict]:
    """The Markdown Results table as run id -> {column: cell}."""
    block = text.split("## Results\n")[1].split("\n## ")[0]
    rows = [[c.strip() for c in l.strip().strip("|").split("|")] for l in block.splitlines() if l.startswith("|")]
    head, body = rows[0], rows[2:]
    return {r[0]: dict(zip(head, r)) for r in body}


@pytest.fixture(scope="module")
def report(logs):
    cp = evalkit("report", logs, check=True)
    html, md = logs / "report.html", logs / "report.md"
    assert f"report: {html}" in cp.stdout
    return html, md


def test_markdown_shows_every_run_with_its_verdict(report):
    _, md = report
    table = md_results(md.read_text())
    assert set(table) == set(EXPECT), "internal/ holds verified logs, not runs"
    for rid, (result, flags) in EXPECT.items():
        assert table[rid]["result"] == result, (rid, table[rid])
        assert table[rid]["flags"] == flags, (rid, table[rid])
    assert table["resnet/Offline/accuracy-pass"]["% of ref"] == "100.00%"
    assert float(table["resnet/Offline/accuracy-fail"]["% of ref"].rstrip("%")) < 50
    assert table["resnet/Offline/accuracy-pass"]["verified (delta)"] == "100.0000 (+0.0000)"
    assert table["resnet/Offline/accuracy-fail"]["verified (delta)"].split("(")[1].startswith("-")
    assert table["resnet/Offline/accuracy-running"]["partitions"] == "1/2"
    assert table["resnet/Offline/accuracy-pass"]["partitions"] == "2/2"
    assert table["resnet/Offline/accuracy-merged"]["partitions"] == "2/2"
    assert table["resnet/Offline/performance-valid"]["performance"].endswith("samples/s")
    assert table["resnet/SingleStream/performance-invalid"]["performance"].endswith(" ms")
    text = md.read_text()
    assert "Early stopping satisfied (partition 0)" in text
    running = text.split("### resnet/Offline/accuracy-running")[1].split("###")[0]
    assert re.search(r"\| 1 \| running \| .* \| 5/12 \| .* \| \d\d:\d\d \|", running), running


def test_html_renders_in_chromium_without_errors(report, tmp_path):
    html, _ = report
    page = html.read_text()
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page), "must be self-contained"
    assert page.count("<svg") == 1 + len(EXPECT)  # accuracy plot + a wall-time plot per run
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed; `make test` installs it (see README, Developers)"
    png = tmp_path / "report.png"

    def chrome(*args):
        with tempfile.TemporaryDirectory() as profile:
            return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, html.as_uri()],
                                  capture_output=True, text=True, timeout=120)

    dom = chrome("--dump-dom")
    shot = chrome(f"--screenshot={png}", "--window-size=1600,2400")
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr + shot.stderr
    console = [l for l in (dom.stderr + shot.stderr).splitlines() if ":CONSOLE" in l]
    assert console == [], console
    for rid in EXPECT:
        assert rid in dom.stdout
        assert 'id="run-' + re.sub(r"[^A-Za-z0-9_-]", "-", rid) + '"' in dom.stdout
    assert png.stat().st_size > 20_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_errors_are_caught(tmp_path):
    """The check above can fail: a page with a script error shows up in the CONSOLE lines."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>no_such_function()</script></body></html>")
    cp = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                         bad.as_uri()], capture_output=True, text=True, timeout=120)
    assert any(":CONSOLE" in l and "no_such_function" in l for l in cp.stderr.splitlines()), cp.stderr


def test_metrics_rows_match_runs(logs, tmp_path):
    cp = evalkit("metrics", logs, "--out", tmp_path, "--system", "box1", check=True)
    assert str(tmp_path / "metrics.csv") in cp.stdout
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert rows == [{k: ("" if v is None else str(v)) for k, v in r.items()}
                    for r in json.loads((tmp_path / "metrics.json").read_text())]
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == set(EXPECT) - {"resnet/Offline/accuracy-running"}, "only finished runs are rows"
    for rid, (result, _) in EXPECT.items():
        if rid not in by_run:
            continue
        r = by_run[rid]
        mode = "AccuracyMode" if "accuracy" in rid else "PerformanceMode"
        assert r["metric"] == f"box1-resnet-{rid.split('/')[1]}-{mode}" and r["scenario"] == "resnet"
        assert r["result"] == result and r["value"] == ("1" if result in ("PASS", "VALID") else "0")
    assert float(by_run["resnet/Offline/accuracy-pass"]["accuracy"]) == 100.0
    assert float(by_run["resnet/Offline/performance-valid"]["performance"]) > 0
    assert by_run["resnet/Offline/performance-valid"]["performance_unit"] == "samples/s"
    assert by_run["resnet/Offline/accuracy-partial"]["partial"] == "True"


def test_report_errors_name_the_dir(tmp_path):
    err = one_line_error(evalkit("report", tmp_path / "nope"))
    assert str(tmp_path / "nope") in err
    err = one_line_error(evalkit("report", tmp_path))
    assert str(tmp_path) in err and "no runs" in err
    (tmp_path / "m" / "0").mkdir(parents=True)
    (tmp_path / "m" / "0" / "progress.json").write_text("{not json")
    err = one_line_error(evalkit("report", tmp_path))
    assert str(tmp_path / "m" / "0" / "progress.json") in err


def test_stalled_and_unfinished_partitions(tmp_path):
    """A worker that died leaves progress.json 'running' forever: after STALE_S it is shown as stalled."""
    from evalkit import report
    run_dir = tmp_path / "resnet" / "Offline" / "accuracy-x"
    meta = {"model": "resnet", "scenario": "Offline", "mode": "accuracy", "data_type": "fp32", "n_partitions": 2}
    for p in (0, 1):
        (run_dir / str(p)).mkdir(parents=True)
        pr = Progress(run_dir / str(p), p, 10, meta=meta, stream=open(os.devnull, "w"))
        pr.add(3)
    stale = json.loads((run_dir / "0" / "progress.json").read_text())
    stale["updated"] -= report.STALE_S + 1
    (run_dir / "0" / "progress.json").write_text(json.dumps(stale))
    run = report.collect_runs(tmp_path)[0]
    assert [p["state"] for p in run["partitions"]] == ["stalled", "running"]
    assert run["state"] == "in progress" and run["model"] == "resnet"
    pr.finish("complete")  # finished LoadGen but no manifest: not complete
    run = report.collect_runs(tmp_path)[0]
    assert [p["state"] for p in run["partitions"]] == ["stalled", "unfinished"] and run["state"] == "incomplete"
