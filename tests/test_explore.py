"""evalkit explore (issue 28): probe runs, the sweep, its failed rows, its report section.

Tiny grids on the shared synthetic sets: the 3 x 2 x 2 sweeps are measured by hand (docs/explore.md).
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import tempfile

import pytest

from evalkit.explore import Sweep, check as explore_check, classify, parse_list, parse_size
from evalkit.errors import KitError
from evalkit.probe import probe_indices

from conftest import ROOT, SYNTH_N, evalkit, one_line_error, sh
from test_report import CHROMIUM_FLAGS, overlaps


def merged_indices(run_dir) -> list[int]:
    text = (run_dir / "merged_mlperf_log_accuracy.json").read_text()
    return [int(x) for x in re.findall(r'"qsl_idx" : (\d+)', text)]


def test_probe_indices_are_spread_distinct_and_fixed():
    assert probe_indices(24, 6) == [2, 6, 10, 14, 18, 22]  # the middle of 6 strata of 4
    ids = probe_indices(50000, 256)
    assert len(set(ids)) == 256 and ids == sorted(ids) and ids[0] < 100 and ids[-1] > 49900
    assert probe_indices(7, 7) == list(range(7)) and probe_indices(10833, 256) == probe_indices(10833, 256)
    with pytest.raises(KitError, match="outside"):
        probe_indices(8, 9)


def test_sweep_knobs_parse_or_name_the_variable():
    assert parse_list("1, 8,32", "BATCH_SIZES", int) == (1, 8, 32)
    assert parse_size("2G") == 2 ** 31 and parse_size("1500M") == 1500 * 2 ** 20 and parse_size("64") == 64 * 2 ** 20
    for bad, flag in (("1,x", "BATCH_SIZES"), ("1,,2", "BATCH_SIZES"), ("8,8", "BATCH_SIZES")):
        with pytest.raises(KitError, match=flag):
            parse_list(bad, flag, int)
    with pytest.raises(KitError, match="EXPLORE_MEM_LIMIT"):
        parse_size("lots")
    # what a failed point's error says -> its row's kind
    assert classify("partition 0: the model failed: RuntimeError: DefaultCPUAllocator: can't allocate memory", 2) \
        == "out of memory"
    assert classify("what():  std::bad_alloc", -6) == "out of memory"
    assert classify("", -9) == "out of memory"
    assert classify("BackendCompilerFailed: backend='inductor' raised: ...", 2) == "cannot compile"
    assert classify('"addmm_impl_cpu_" not implemented for \'Half\'', 2) == "data type unsupported"
    assert classify("partition 0: sample qsl_idx 3: missing file", 2) == "failed"


def test_probe_run_scores_its_spread_samples_and_is_never_a_pass(resnet_synth, tmp_path):
    """The merged log holds the set's own qsl_idx of the probe (the ones a full run scores), the
    probe scores the synthetic reference, and check refuses to call it a PASS."""
    log = tmp_path / "probe"
    cp = evalkit("run", "resnet", "--dataset", resnet_synth / "dataset", "--model_path", resnet_synth / "model",
                 "--probe", 6, "--batch_size", 4, "--log_path", log)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "PROBE: probe within target" in cp.stdout and "PASS" not in cp.stdout.replace("not a PASS", "")
    assert merged_indices(log) == [2, 6, 10, 14, 18, 22]
    result = json.loads((log / "probe.json").read_text())
    assert result["metrics"]["acc"] == 100.0 and result["n"] == 6 and result["of"] == 24
    assert "never checked against the targets as a PASS" in one_line_error(evalkit("check", log))
    assert result["synthetic_low_precision"] is None  # fp32: the synthetic reference is exact
    # bf16 on a synthetic set: judged by the floor check uses for the full run (targets.SYNTHETIC_LOW_PRECISION),
    # not the fp32 target (which a correct bf16 run on fp32 references cannot reach)
    cp = evalkit("run", "resnet", "--dataset", resnet_synth / "dataset", "--model_path", resnet_synth / "model",
                 "--probe", 6, "--batch_size", 4, "--data_type", "bf16", "--log_path", tmp_path / "bf16")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    low = json.loads((tmp_path / "bf16" / "probe.json").read_text())
    floor = low["synthetic_low_precision"]["metrics"]["acc"]["floor"]
    assert [r["target"] for r in low["rows"]] == [pytest.approx(floor)], low["rows"]


def test_probe_takes_whole_groups():
    """BERT scores a question from all its features: a probe takes whole questions."""
    groups = [0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3]
    assert probe_indices(11, 1, groups) == [8]  # question 2: the middle of 4
    assert probe_indices(11, 2, groups) == [4, 5, 6, 7, 9, 10]
    assert probe_indices(10, 3, groups) == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # question 3 is cut by n_count: not a unit
    with pytest.raises(KitError, match=r"4 is outside \[1, 3\]"):
        probe_indices(10, 4, groups)


def test_bert_probe_scores_only_the_probed_questions(synthetic, tmp_path):
    """BERT's score counts an unanswered question as 0 (the synthetic set: 2 questions of 4 features):
    without Benchmark.score_subset the probe of one question would read F1 50, below target."""
    s = synthetic("bert", SYNTH_N)
    log = tmp_path / "bert_probe"
    cp = evalkit("run", "bert", "--dataset", s / "dataset", "--model_path", s / "model", "--probe", 1,
                 "--log_path", log)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    result = json.loads((log / "probe.json").read_text())
    assert result["within_target"] and result["metrics"]["F1"] == pytest.approx(100.0), result
    assert result["metrics"]["questions"] == 1 and merged_indices(log) == [4, 5, 6, 7]


@pytest.fixture(scope="module")
def sweep(resnet_synth, tmp_path_factory):
    d = tmp_path_factory.mktemp("explore") / "resnet"
    args = ["explore", "resnet", "--dataset", resnet_synth / "dataset", "--model_path", resnet_synth / "model",
            "--data", "synthetic", "--batch_sizes", "1,4", "--data_types", "fp32", "--backends", "pytorch",
            "--probe", 4, "--sweep_dir", d, "--min_query_count", 8]
    first = evalkit(*args)
    again = evalkit(*args)  # resumes: every point is done
    return d, first, again


def test_sweep_rows_best_point_and_full_set_command(sweep):
    d, cp, again = sweep
    assert cp.returncode == 0, cp.stdout + cp.stderr
    result = json.loads((d / "explore.json").read_text())
    rows = {r["id"]: r for r in result["points"]}
    assert set(rows) == {"pytorch-fp32-bs1", "pytorch-fp32-bs4"}
    for r in rows.values():
        assert r["status"] == "ok" and r["throughput"]["Offline"]["value"] > 0
        assert r["probe"]["label"] == "probe within target" and r["peak_memory"]["host_rss_bytes"] > 0
        assert json.loads((d / "points" / r["id"] / "perf-Offline" / "performance.json").read_text())["result"]
    fastest = max(rows.values(), key=lambda r: r["throughput"]["Offline"]["value"])
    assert result["best"] == fastest["id"]
    assert f"--batch_size {fastest['batch_size']}" in result["command"]["cli"]
    assert "PASS" not in cp.stdout.replace("not a PASS", "")
    table = list(csv.DictReader(open(d / "explore.csv")))
    assert [t["point"] for t in table] == [r["id"] for r in result["points"]]
    assert again.returncode == 0 and again.stderr.count("(resumed)") == 2, again.stderr


def test_out_of_memory_point_is_a_row_not_a_crash(resnet_synth, tmp_path):
    """EXPLORE_MEM_LIMIT caps the point's processes (RLIMIT_AS): the point fails, the sweep does not."""
    d = tmp_path / "oom"
    cp = evalkit("explore", "resnet", "--dataset", resnet_synth / "dataset", "--model_path", resnet_synth / "model",
                 "--data", "synthetic", "--batch_sizes", "2", "--probe", 4, "--sweep_dir", d, EXPLORE_MEM_LIMIT="700M")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    (row,) = json.loads((d / "explore.json").read_text())["points"]
    assert row["status"] == "failed" and row["kind"] == "out of memory" and row["reason"], row
    assert "failed (out of memory)" in cp.stdout and "no point has its probe within target" in cp.stdout


def test_bad_sweep_is_refused_before_any_point(resnet_synth, tmp_path):
    """One line, exit 2, nothing written: the CLI once, the other refusals in-process (same check())."""
    cp = evalkit("explore", "resnet", "--dataset", resnet_synth / "dataset", "--model_path", resnet_synth / "model",
                 "--batch_sizes", "1", "--sweep_dir", tmp_path / "s", "--quantizers", "none,int9")
    assert "unknown quantizer 'int9'" in one_line_error(cp) and not (tmp_path / "s").exists()
    base = dict(model="resnet", batch_sizes=(1,), data_types=("fp32",), backends=("pytorch",), probe=4,
                dataset=resnet_synth / "dataset", model_path=resnet_synth / "model", sweep_dir=tmp_path / "s")
    for change, expect in [({"batch_sizes": (0,)}, "BATCH_SIZES: 0 is not a positive batch size"),
                           ({"probe": 25}, "--probe 25 is outside [1, 24]"),
                           ({"backends": ("nope",)}, "unknown backend 'nope'"),
                           ({"data_types": ("fp8",)}, "DATA_TYPES: fp8 is not a data type of resnet"),
                           ({"scenario": "Offlne"}, "SCENARIO=Offlne is not one of")]:
        with pytest.raises(KitError) as e:
            explore_check(Sweep(**{**base, **change}))
        assert expect in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "s").exists()


def test_make_help_lists_explore():
    cp = sh("make help", ROOT)
    assert cp.returncode == 0 and "make explore_<model> BATCH_SIZES=" in cp.stdout


# Injected into a copy of the page: the sweep section's layout as the browser lays it out.
MEASURE = """<script>
const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const sec = document.querySelector("section[id^=sweep-]");
const out = {vw: window.innerWidth, scrollWidth: document.documentElement.scrollWidth,
  rows: sec ? sec.querySelectorAll("table tr").length : 0,
  svgs: sec ? [...sec.querySelectorAll("svg")].map(s => ({title: s.getAttribute("aria-label"),
    lines: s.querySelectorAll("polyline, circle").length,
    texts: [...s.querySelectorAll("text")].map(t => ({text: t.textContent, box: box(t)}))})) : []};
const pre = document.createElement("pre"); pre.id = "measure"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def test_sweep_in_the_report_renders_in_chromium(sweep, tmp_path):
    d, _, _ = sweep
    logs = tmp_path / "logs"
    shutil.copytree(d, logs / "resnet" / "explore" / "s1")
    cp = evalkit("report", logs, check=True)
    page = (logs / "report.html").read_text()
    assert "Sweep: resnet (2 points" in page and page.count("<svg") == 2  # the sweep's 2 plots (no scored run: no accuracy plot)
    assert "probe within target" in page and "(best)" in page
    assert "Sweep: resnet" in (logs / "report.md").read_text()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed; `make test` installs it (see docs/developers.md)"
    measured = tmp_path / "m.html"
    measured.write_text(page.replace("</body>", MEASURE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900",
                              "--hide-scrollbars", "--dump-dom", measured.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not [x for x in out.stderr.splitlines() if ":CONSOLE" in x], out.stderr
    import html as html_
    m = json.loads(html_.unescape(re.search(r'<pre id="measure">(.*?)</pre>', out.stdout, re.S).group(1)))
    assert m["scrollWidth"] <= m["vw"] and m["rows"] == 3  # header + 2 points
    lines, bars = m["svgs"]
    assert "throughput against batch size" in lines["title"] and lines["lines"] == 1 + 2  # 1 line, 2 dots
    assert "probe accuracy" in bars["title"]
    for svg in m["svgs"]:
        texts = [t for t in svg["texts"] if t["text"].strip()]
        clash = [(a["text"], b["text"]) for i, a in enumerate(texts) for b in texts[i + 1:] if overlaps(a["box"], b["box"])]
        assert clash == [], (svg["title"], clash)
