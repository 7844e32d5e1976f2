"""Report and metrics over a logs dir of real short runs of synthetic ResNet50:
PASS, FAIL (shifted merged log), PARTIAL, performance VALID/INVALID, a run in
progress, a run split over two node dirs, a run whose check errored, GPT-J and
Mixtral results with all their target metrics (files only) and a verified log:
11 runs.
The HTML is rendered in headless Chromium at 1280 px and measured there."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from evalkit import rundir, targets
from evalkit.accuracy_log import iter_entries
from evalkit.errors import KitError
from evalkit.gather import gather
from evalkit.progress import Progress

from conftest import evalkit, one_line_error, rewrite_merged
from one_process import evalkit_each

MERGED = "merged_mlperf_log_accuracy.json"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


def run(synth: Path, log: Path, *extra) -> list:
    """`evalkit run resnet` argv for the synthetic set (the runs below go through tests/one_process.py)."""
    return ["run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model",
            "--log_path", log, "--batch_size", 4, *extra]


@pytest.fixture(scope="module")
def logs(resnet_synth, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    off = logs / "resnet" / "Offline"
    # the four real runs through the CLI's entry point in one interpreter (each fails the fixture if not 0);
    # accuracy-pass still launches its 2 partitions as 2 worker processes
    evalkit_each(
        run(resnet_synth, off / "accuracy-pass", "--n_devices", 2),
        run(resnet_synth, off / "accuracy-partial", "--n_count", 8),
        run(resnet_synth, off / "performance-valid", "--mode", "performance", "--n_count", 8,
            "--min_duration", 50, "--min_query_count", 1),
        run(resnet_synth, logs / "resnet" / "SingleStream" / "performance-invalid", "--mode", "performance",
            "--scenario", "SingleStream", "--n_count", 4, "--batch_size", 1, "--min_duration", 10,
            "--min_query_count", 4))
    # FAIL: the PASS run with its merged log shifted by one index, scored by check (in-process, as below)
    fail = off / "accuracy-fail"
    shutil.copytree(off / "accuracy-pass", fail)
    n = len(list(iter_entries(fail / MERGED)))
    rewrite_merged(fail, lambda e: {"seq_id": e["seq_id"], "qsl_idx": (e["qsl_idx"] + 1) % n, "data": e["data"]})
    assert check(fail)["verdict"] == "FAIL"
    # partitions gathered into a dir of their own (as after runs on several nodes)
    gather([off / "accuracy-pass"], off / "accuracy-merged")
    assert check(off / "accuracy-merged")["verdict"] == "PASS"
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
    # one run split over two node dirs (LOG_PATH=a --partition_offset 0, LOG_PATH=b --partition_offset 1)
    chash = json.loads((off / "accuracy-pass" / "0" / "partition.json").read_text())["config_hash"]
    for p, node in ((0, "a"), (1, "b")):
        shutil.copytree(off / "accuracy-pass" / str(p), off / f"accuracy-split-{node}" / str(p))
        rundir.record_launch(off / f"accuracy-split-{node}", [p], 2, f"node {node}: evalkit run ...", chash)
    # the check errors: an out-of-range qsl_idx in the merged log (in-process: no second interpreter)
    broken = off / "accuracy-error"
    shutil.copytree(off / "accuracy-pass", broken)
    corrupt_merged(broken)
    with pytest.raises(KitError):
        check(broken)
    scored_result(logs / GPTJ_RUN, "gpt-j", "gptj-99", GPTJ, 13368, 8)
    scored_result(logs / MIXTRAL_RUN, "mixtral", "mixtral-8x7b", MIXTRAL, 15000, 4)
    # a verified log to compare with
    (logs / "internal" / "resnet").mkdir(parents=True)
    shutil.copy(off / "accuracy-pass" / "accuracy.json", logs / "internal" / "resnet" / "accuracy.json")
    return logs


def corrupt_merged(run_dir: Path) -> None:
    rewrite_merged(run_dir, lambda e: {"seq_id": e["seq_id"], "qsl_idx": e["qsl_idx"] + 1000, "data": e["data"]})


def check(run_dir: Path):
    from evalkit.check import check as check_
    return check_(run_dir)


GPTJ = {"ROUGE1": 43.1, "ROUGE2": 20.05, "ROUGEL": 29.4, "GEN_LEN": 3950000.0}  # ROUGEL below 99%: FAIL
MIXTRAL = {"ROUGE1": 45.7, "ROUGE2": 23.4, "ROUGEL": 30.5, "TOKENS_PER_SAMPLE": 150.0, "gsm8k_accuracy": 73.5,
           "mbxp_accuracy": 60.1}


def scored_result(run_dir: Path, model: str, checker: str, metrics: dict, n_count: int, n_parts: int) -> None:
    """What `gather --out` + `check` leave for an n_parts-GPU run (files only): gather.json, accuracy.json."""
    run_dir.mkdir(parents=True)
    config = {"model": model, "scenario": "Offline", "mode": "accuracy", "data_type": "fp16", "synthetic": False,
              "n_count": n_count}
    v = targets.evaluate(targets.get(checker), metrics)
    parts = [{"partition": p, "entries": n_count // n_parts, "device": f"cuda:{p}",
              "host": "gpu-node-017.cluster.example.org", "timings": {"started": 0.0, "finished": 600.0 + 37 * p}}
             for p in range(n_parts)]
    (run_dir / "gather.json").write_text(json.dumps({"config": config, "n_partitions": n_parts, "config_hash": model,
                                                     "partitions": parts, "run_dirs": []}))
    (run_dir / "accuracy.json").write_text(json.dumps({
        "model": model, "checker_name": checker, "accuracy_target": "99", "metrics": metrics, "rows": v.rows,
        "verdict": "PASS" if v.passed else "FAIL", "synthetic": False, "n_count": n_count, "dataset_size": n_count,
        "partial": False, "config_hash": model, "config": config}))


SPLIT = "resnet/Offline/accuracy-split-a + resnet/Offline/accuracy-split-b"
GPTJ_RUN = "gpt-j/Offline/accuracy-fp16-8xH100-node-pool-b-2026-11-26T02-50-00"
MIXTRAL_RUN = "mixtral/Offline/accuracy"
EXPECT = {  # run id -> (result, flags)
    "resnet/Offline/accuracy-pass": ("PASS", "SYNTHETIC"),
    "resnet/Offline/accuracy-fail": ("FAIL", "SYNTHETIC"),
    "resnet/Offline/accuracy-partial": ("PASS", "SYNTHETIC PARTIAL"),
    "resnet/Offline/accuracy-merged": ("PASS", "SYNTHETIC"),
    "resnet/Offline/accuracy-running": ("-", "SYNTHETIC IN PROGRESS"),
    "resnet/Offline/performance-valid": ("VALID", "SYNTHETIC"),
    "resnet/SingleStream/performance-invalid": ("INVALID", "SYNTHETIC"),
    SPLIT: ("-", "SYNTHETIC"),  # one run, complete over its two dirs (not yet gathered)
    "resnet/Offline/accuracy-error": ("ERROR", "ERROR SYNTHETIC"),
    GPTJ_RUN: ("FAIL", "-"),
    MIXTRAL_RUN: ("PASS", "-"),
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
    assert table[SPLIT]["partitions"] == "2/2" and table[SPLIT]["samples"] == "24"
    assert table["resnet/Offline/accuracy-error"]["accuracy"] == "-", "the stale PASS is not shown as the result"
    # every target metric of GPT-J, one line each (Markdown joins the lines with "; ")
    assert table[GPTJ_RUN]["accuracy"] == ("ROUGE1 = 43.1000; ROUGE2 = 20.0500; ROUGEL = 29.4000; "
                                           "GEN_LEN = 3.95e+06")
    assert table[GPTJ_RUN]["% of ref"] == "100.26%; 99.63%; 98.04% FAIL; 98.34%"
    assert table[MIXTRAL_RUN]["accuracy target"].split("; ")[3:5] == [">= 90% of 144.8", "<= 110% of 145.9"]
    assert table[GPTJ_RUN]["accuracy target"].startswith(">= 99% of 42.99; >= 99% of 20.12; >= 99% of 29.99; >= 90%")
    assert table[GPTJ_RUN]["devices"] == ", ".join(f"cuda:{p}" for p in range(8))
    assert table["resnet/Offline/performance-valid"]["performance"].endswith("samples/s")
    assert table["resnet/SingleStream/performance-invalid"]["performance"].endswith(" ms")
    text = md.read_text()
    assert "Early stopping satisfied (partition 0)" in text
    err = text.split("## Results\n")[1].split("## Runs")[0]
    assert re.search(r"- resnet/Offline/accuracy-error: check failed \(.*\): .*qsl_idx .*\(the PASS in "
                     r"accuracy.json is from an earlier check\)", err), err
    split = text.split(f"### {SPLIT}")[1].split("###")[0]
    assert "accuracy-split-a`, `" in split
    assert re.search(r"\| 0 \| complete \| resnet/Offline/accuracy-split-a \|", split), split
    assert re.search(r"\| 1 \| complete \| resnet/Offline/accuracy-split-b \|", split), split
    running = text.split("### resnet/Offline/accuracy-running")[1].split("###")[0]
    assert re.search(r"\| 1 \| running \| .* \| 5/12 \| .* \| \d\d:\d\d \|", running), running


def test_html_renders_in_chromium_without_errors(report, tmp_path):
    html, _ = report
    page = html.read_text()
    assert "<script" not in page and not re.search(r"(src|href)=\"https?:", page), "must be self-contained"
    assert page.count("<svg") == 1 + len(EXPECT)  # accuracy plot + a wall-time plot per run
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed; `make test` installs it (see docs/developers.md)"
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


# Injected into a copy of the page (the report itself has no script): measures the layout in the browser.
MEASURE = """<script>
const vw = window.innerWidth, doc = document.documentElement;
const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const table = document.querySelector("table.results");
const col = name => [...table.rows[0].cells].findIndex(c => c.textContent === name);
const runs = [...table.querySelectorAll("tr.run")];  // a run's first row: further ones hold per-metric cells only
const cells = name => runs.map(r => box(r.cells[col(name)]));
const svgs = [...document.querySelectorAll("svg")].map(svg => ({
  title: svg.getAttribute("aria-label"),
  texts: [...svg.querySelectorAll("text")].map(t => ({text: t.textContent, cls: t.getAttribute("class"), box: box(t)}))}));
const out = {vw: vw, scrollWidth: doc.scrollWidth, rows: runs.length,
             flags: cells("flags"), result: cells("result"), run: cells("run"), svgs: svgs};
const pre = document.createElement("pre"); pre.id = "measure"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def measure(chromium: str, html: Path, tmp_path: Path, width: int) -> dict:
    page = tmp_path / "measured.html"
    page.write_text(html.read_text().replace("</body>", MEASURE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        cp = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900",
                             "--hide-scrollbars", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    m = re.search(r'<pre id="measure">(.*?)</pre>', cp.stdout, re.S)
    assert m, cp.stdout[-2000:] + cp.stderr
    import html as html_
    return json.loads(html_.unescape(m.group(1)))


def overlaps(a, b, slack=0.5) -> bool:
    return a[0] < b[2] - slack and b[0] < a[2] - slack and a[1] < b[3] - slack and b[1] < a[3] - slack


def test_page_reads_at_1280px_with_many_runs(report, tmp_path):
    """Issue 18 #13: no horizontal scrollbar at 1280 px; every run's result and flags in view.
    Issue 18 #16: no two text labels of a plot overlap; axis ends are round."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed; `make test` installs it (see docs/developers.md)"
    m = measure(chromium, report[0], tmp_path, 1280)
    assert m["vw"] == 1280 and m["rows"] == len(EXPECT) >= 8
    assert m["scrollWidth"] <= 1280, f"page is {m['scrollWidth']} px wide at 1280"
    for name in ("run", "result", "flags"):
        for left, top, right, bottom in m[name]:
            assert 0 <= left and right <= 1280, (name, left, right)
    for svg in m["svgs"]:
        texts = svg["texts"]
        for i, a in enumerate(texts):
            assert a["box"][2] <= 1280, (svg["title"], a)
            for b in texts[i + 1:]:
                assert not overlaps(a["box"], b["box"]), (svg["title"], a, b)
        ends = [float(t["text"]) for t in texts if t["cls"] == "axis"]
        ticks = [float(t["text"]) for t in texts if t["cls"] in ("axis", "tick")]
        assert len(ends) == 2 and ends == [ticks[0], ticks[-1]], svg
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
        assert any(abs(mantissa - k) < 1e-6 for k in (1, 2, 5)), (svg["title"], ticks)
        for v in ends:
            assert abs(v / step - round(v / step)) < 1e-6, (svg["title"], ends, step)
    acc = next(s for s in m["svgs"] if s["title"].startswith("accuracy"))
    gptj = [t["text"] for t in acc["texts"] if t["cls"] == "label" and GPTJ_RUN.split("/")[-1][-20:] in t["text"]]
    assert [l.split()[-1] for l in gptj] == list(GPTJ), "every target metric of GPT-J has its bar"
    notes = [t["text"] for t in acc["texts"] if t["cls"] == "note"]
    assert sum("FAIL" in n for n in notes) == 2, notes  # accuracy-fail, and GPT-J's ROUGEL
    # the plots themselves are wider than nothing: the median label is there, in its own row
    walls = [s for s in m["svgs"] if s["title"].startswith("wall")]
    assert any(t["cls"] == "mark" and t["text"].startswith("median") for s in walls for t in s["texts"])


def test_axis_ends_are_nice_numbers():
    from evalkit.report import nice_axis
    assert nice_axis(0, 14.6) == (0, 16, 2)
    assert nice_axis(7.54, 14.6) == (7, 15, 1)   # the ends issue 18 saw, rounded out
    assert nice_axis(97.2, 100.0) == (97, 100, 0.5)
    assert nice_axis(0, 859) == (0, 900, 100)
    lo, hi, step = nice_axis(0.0123, 0.0456)
    assert (round(lo / step), round(hi / step), step) == (2, 10, 0.005)
    assert nice_axis(3, 3) == (3, 6, 0.5)  # one value: still an axis


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
    # only scored runs are rows: not the one in progress, nor the split one (not gathered yet)
    assert set(by_run) == set(EXPECT) - {"resnet/Offline/accuracy-running", SPLIT}
    for rid, (result, _) in EXPECT.items():
        if rid not in by_run:
            continue
        r = by_run[rid]
        mode = "AccuracyMode" if "accuracy" in rid else "PerformanceMode"
        model, scenario = rid.split("/")[:2]
        assert r["metric"] == f"box1-{model}-{scenario}-{mode}" and r["scenario"] == model
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


def test_stalled_and_failed_partitions(tmp_path):
    """A worker that died leaves progress.json 'running' forever: after STALL_MINUTES it is shown as stalled."""
    from evalkit import report
    run_dir = tmp_path / "resnet" / "Offline" / "accuracy-x"
    meta = {"model": "resnet", "scenario": "Offline", "mode": "accuracy", "data_type": "fp32", "n_partitions": 2}
    for p in (0, 1):
        (run_dir / str(p)).mkdir(parents=True)
        pr = Progress(run_dir / str(p), p, 10, meta=meta, stream=open(os.devnull, "w"))
        pr.add(3)
    stale = json.loads((run_dir / "0" / "progress.json").read_text())
    stale["updated"] -= rundir.STALL_MINUTES * 60 + 1
    (run_dir / "0" / "progress.json").write_text(json.dumps(stale))
    run = report.collect_runs(tmp_path)[0]
    assert [p["state"] for p in run["partitions"]] == ["stalled", "running"]
    assert run["state"] == "in progress" and run["model"] == "resnet"
    pr.finish("failed", "boom")
    run = report.collect_runs(tmp_path)[0]
    assert [p["state"] for p in run["partitions"]] == ["stalled", "failed"] and run["state"] == "failed"
    assert report.flags(run) == ["FAILED"]


def test_check_error_is_recorded_and_cleared(logs, tmp_path):
    """Issue 18 #15: check writes check_error.json when scoring raises; a later good check removes it."""
    from evalkit import report
    from evalkit.check import CHECK_ERROR
    assert CHECK_ERROR == report.CHECK_ERROR
    off = logs / "resnet" / "Offline"
    err = json.loads((off / "accuracy-error" / CHECK_ERROR).read_text())
    assert "qsl_idx" in err["error"] and "\n" not in err["error"] and err["time"] > 0
    run_dir = shutil.copytree(off / "accuracy-error", tmp_path / "resnet" / "Offline" / "r")
    for name in (MERGED, "gather.json"):  # gathered again, from the good partitions
        shutil.copy(off / "accuracy-pass" / name, run_dir / name)
    assert check(run_dir)["verdict"] == "PASS"
    assert not (run_dir / CHECK_ERROR).exists()
    row = report.summary_row(report.collect_runs(tmp_path)[0])
    assert (row["result"], row["flags"]) == ("PASS", "SYNTHETIC")


def test_split_run_is_one_run_before_and_after_gather(logs, tmp_path):
    """Issue 18 #14: runs are identified by their config hash; a run over two node dirs is one run,
    also while one node still runs (its dir holds only progress.json, the hash is in run.json), and
    after `gather a b` wrote its outputs into a. Two attempts holding the same partition stay apart."""
    from evalkit import report
    from evalkit.gather import gather
    off = logs / "resnet" / "Offline"
    a, b = (shutil.copytree(off / f"accuracy-split-{n}", tmp_path / "resnet" / "Offline" / n) for n in "ab")
    # node b mid-run: its partition has a progress file, no manifest yet
    (b / "1" / "partition.json").rename(tmp_path / "manifest")
    meta = json.loads((off / "accuracy-pass" / "0" / "progress.json").read_text())
    Progress(b / "1", 1, 12, meta={k: meta[k] for k in ("model", "scenario", "mode", "data_type", "synthetic",
                                                        "n_count", "n_partitions")},
             stream=open(os.devnull, "w")).add(4)
    runs = report.collect_runs(tmp_path)
    assert [r["id"] for r in runs] == ["resnet/Offline/a + resnet/Offline/b"]
    assert [p["state"] for p in runs[0]["partitions"]] == ["complete", "running"]
    assert runs[0]["state"] == "in progress" and report.flags(runs[0]) == ["SYNTHETIC", "IN PROGRESS"]
    (tmp_path / "manifest").rename(b / "1" / "partition.json")
    gather([a, b])
    check(a)
    run, = report.collect_runs(tmp_path)
    assert run["dirs"] == [str(a), str(b)] and run["state"] == "complete"
    assert report.summary_row(run)["result"] == "PASS" and report.summary_row(run)["partitions"] == "2/2"
    # a second attempt at partition 1 in another dir (same config) is not folded into this run
    shutil.copytree(b, tmp_path / "resnet" / "Offline" / "c")
    assert sorted(r["id"] for r in report.collect_runs(tmp_path)) == [
        "resnet/Offline/a + resnet/Offline/b", "resnet/Offline/c"]


def test_split_performance_run_combines_its_partitions(logs, tmp_path):
    """A performance run over two node dirs: its result combines each partition's summary where it lies."""
    from evalkit import report
    src = logs / "resnet" / "Offline" / "performance-valid" / "0"
    for p, node in ((0, "a"), (1, "b")):
        d = shutil.copytree(src, tmp_path / "resnet" / "Offline" / node / str(p))
        (d / "progress.json").unlink()
        m = json.loads((d / "partition.json").read_text())  # as if the run had 2 partitions of 4 samples
        m.update(partition=p, n_partitions=2, range=[4 * p, 4 * p + 4])
        (d / "partition.json").write_text(json.dumps(m))
    run, = report.collect_runs(tmp_path)
    one = json.loads((src.parent / "performance.json").read_text())["headline"]
    assert run["id"] == "resnet/Offline/a + resnet/Offline/b" and run["state"] == "complete"
    assert run["performance"]["result"] == "VALID"
    assert run["performance"]["headline"]["value"] == pytest.approx(2 * one["value"])  # throughputs add up
