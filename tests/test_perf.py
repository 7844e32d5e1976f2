"""Performance mode: real LoadGen PerformanceOnly runs of synthetic ResNet50, their
summaries parsed into performance.json (VALID and INVALID), and bad summaries."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalkit import perf
from evalkit.errors import KitError
from evalkit.progress import Progress, line

from conftest import evalkit, one_line_error


def perf_run(synth: Path, log: Path, *extra):
    return evalkit("run", "resnet", "--dataset", synth / "dataset", "--model_path", synth / "model",
                   "--log_path", log, "--mode", "performance", *extra)


@pytest.fixture(scope="module")
def valid_run(resnet_synth, tmp_path_factory):
    """Offline over 2 partitions; tiny min_duration/min_query_count so LoadGen is satisfied at once."""
    log = tmp_path_factory.mktemp("perf") / "offline"
    cp = perf_run(resnet_synth, log, "--n_count", 8, "--n_devices", 2, "--batch_size", 4,
                  "--min_duration", 50, "--min_query_count", 1)
    assert cp.returncode == 0, cp.stderr
    return log, cp


@pytest.fixture(scope="module")
def invalid_run(resnet_synth, tmp_path_factory):
    """SingleStream with 4 queries: LoadGen's early stopping needs 64, so the result is INVALID."""
    log = tmp_path_factory.mktemp("perf") / "single"
    cp = perf_run(resnet_synth, log, "--n_count", 4, "--scenario", "SingleStream", "--batch_size", 1,
                  "--min_duration", 10, "--min_query_count", 4)
    assert cp.returncode == 0, cp.stderr
    return log, cp


def test_valid_offline_summary(valid_run):
    log, cp = valid_run
    s = perf.parse_summary(log / "0" / perf.SUMMARY)
    assert s["result"] == "VALID" and s["scenario"] == "Offline" and s["mode"] == "PerformanceOnly"
    assert s["headline"]["name"] == "Samples per second" and s["headline"]["unit"] == "samples/s"
    assert s["headline"]["value"] > 0
    assert s["constraints"]["Min duration satisfied"] and s["failed_constraints"] == []
    assert s["latency_ns"]["50.00 percentile"] <= s["latency_ns"]["99.00 percentile"]
    assert s["settings"]["min_duration (ms)"] == 50
    # eager runs one untimed batch first in performance mode, as pytorch-compile does (explore compares them)
    assert json.loads((log / "0" / "partition.json").read_text())["timings"]["warmup_s"] is not None


def test_performance_json_combines_partitions(valid_run):
    log, cp = valid_run
    result = json.loads((log / perf.PERFORMANCE).read_text())
    assert result["result"] == "VALID" and result["n_partitions"] == 2
    parts = result["partitions"]
    assert sorted(parts) == ["0", "1"]
    # throughput adds up over partitions that ran side by side; latency takes the worst
    assert result["headline"]["value"] == pytest.approx(sum(p["headline"]["value"] for p in parts.values()))
    p99 = max(p["latency_ns"]["99.00 percentile"] for p in parts.values())
    assert result["latency_ns"]["99.00 percentile"] == p99
    assert "RESULT: VALID" in cp.stdout and "Samples per second" in cp.stdout
    assert not (log / "merged_mlperf_log_accuracy.json").exists(), "performance runs are not gathered"


def test_invalid_single_stream_summary(invalid_run):
    log, cp = invalid_run
    s = perf.parse_summary(log / "0" / perf.SUMMARY)
    assert s["result"] == "INVALID"
    assert s["headline"]["name"].startswith("90.0th percentile latency") and s["headline"]["unit"] == "ns"
    assert s["constraints"]["Early stopping satisfied"] is False
    assert "Early stopping satisfied" in s["failed_constraints"]
    assert any("64 queries" in n for n in s["notes"])
    result = json.loads((log / perf.PERFORMANCE).read_text())
    assert result["result"] == "INVALID"
    assert result["failed_constraints"] == ["Early stopping satisfied (partition 0)"]
    assert "RESULT: INVALID" in cp.stdout


def test_bad_summaries_name_the_file(valid_run, tmp_path):
    log, _ = valid_run
    text = (log / "0" / perf.SUMMARY).read_text()
    cut = tmp_path / "cut.txt"
    cut.write_text(text.split("Result is")[0])
    with pytest.raises(KitError, match="cut.txt.*did not finish"):
        perf.parse_summary(cut)
    acc = tmp_path / "acc.txt"
    acc.write_text(text.replace("PerformanceOnly", "AccuracyOnly"))
    with pytest.raises(KitError, match="acc.txt.*not PerformanceOnly"):
        perf.parse_summary(acc)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    with pytest.raises(KitError, match="junk.txt.*not a LoadGen summary"):
        perf.parse_summary(junk)
    with pytest.raises(KitError, match="missing.txt"):
        perf.parse_summary(tmp_path / "missing.txt")


def test_performance_command_errors(valid_run, tmp_path):
    log, _ = valid_run
    err = one_line_error(evalkit("performance", tmp_path))
    assert str(tmp_path) in err and "no complete performance partition" in err
    broken = tmp_path / "broken"
    shutil.copytree(log, broken)
    (broken / "1" / perf.SUMMARY).write_text("truncated\n")
    err = one_line_error(evalkit("performance", broken))
    assert str(broken / "1" / perf.SUMMARY) in err


def test_progress_for_performance_runs(tmp_path):
    """A performance run's total is LoadGen's horizon; past a lower bound it grows, never > 100 %."""
    assert line("partition 0", 7, 0, 2.0) == "partition 0: 7 samples 2.00 samples/s"
    assert "ETA 00:05" in line("partition 0", 5, 15, 2.0, 5.0)
    pr = Progress(tmp_path, 1, 4, stream=open("/dev/null", "w"), min_duration_s=600)
    pr.add(6)
    d = json.loads((tmp_path / "progress.json").read_text())
    assert d["done"] == d["total"] == 6 and d["eta_s"] > 500  # min_duration not reached: ETA from the clock
    pr = Progress(tmp_path, 3, 10, meta={"model": "resnet", "mode": "accuracy"}, stream=open("/dev/null", "w"))
    pr.add(4)
    d = json.loads((tmp_path / "progress.json").read_text())
    assert d["partition"] == 3 and d["done"] == 4 and d["model"] == "resnet" and d["eta_s"] is not None
