"""python -m evalkit <command>: targets, models, synth, run, gather, check, performance, report, metrics, status, info."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Download/loading bars of HF libraries would interleave with the kit's progress lines.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _cuda_extension_on_cpu_torch(record) -> bool:
    """torchao (the quantizers' library, which transformers imports whenever it is installed) logs
    "Failed to load .../_C_*.so" for each of its CUDA-only extensions on a CPU-only torch: noise in every
    run's log there. Dropped only then; on a CUDA torch the line stays (it would be a real problem)."""
    torch = sys.modules.get("torch")
    msg = str(record.msg)
    return not (msg.startswith("Failed to load ") and ".so" in msg and torch is not None
                and getattr(torch.version, "cuda", None) is None)


import logging  # noqa: E402

logging.getLogger("torchao").addFilter(_cuda_extension_on_cpu_torch)

from . import registry, targets
from .errors import KitError
from .util import ROOT, write_error

# `status`: some partition is failed, preempted, stalled or missing and needs a resume (errors.py lists the others:
# 0 PASS, 1 a scored FAIL, 2 an error, 3 owned by another launch, 75 preempted)
NEEDS_RESUME = 4


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="kit model name (python -m evalkit models)")
    p.add_argument("--data", choices=("real", "synthetic"), default="real",
                   help="default dataset/model paths: data/{dataset,models}/<model> or data/synthetic/<model>")
    p.add_argument("--dataset", type=Path, help="dataset dir in the published layout")
    p.add_argument("--model_path", type=Path, help="checkpoint dir in the published format")
    p.add_argument("--log_path", type=Path, help="run dir (default logs/<model>/<scenario>/<mode>-<timestamp>)")
    p.add_argument("--n_count", type=int, help="first N samples (default: all)")
    p.add_argument("--n_partitions", type=int, default=0, help="partitions of the run (default: n_devices)")
    p.add_argument("--partition_offset", type=int, default=0, help="first partition this command runs")
    p.add_argument("--n_devices", type=int, default=1, help="devices this launch uses: one worker per K of them")
    p.add_argument("--devices_per_partition", type=int, default=1,
                   help="K devices per partition (worker), the model split over them (models bigger than one device)")
    p.add_argument("--scenario", default="Offline")
    p.add_argument("--mode", default="accuracy", help="accuracy (AccuracyOnly) or performance (PerformanceOnly)")
    p.add_argument("--data_type", default="fp32", help="fp32, fp16 or bf16")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batch_size", type=int, default=0, help="max samples per forward (default: model's)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (default: cores / workers)")
    p.add_argument("--user_conf", type=Path, help="LoadGen user.conf (default: one made from the knobs)")
    p.add_argument("--target_qps", type=float)
    p.add_argument("--target_latency", type=float, help="ms (SingleStream/MultiStream)")
    p.add_argument("--min_duration", type=int, help="ms")
    p.add_argument("--min_query_count", type=int)
    p.add_argument("--no_channels_last", action="store_true",
                   help="= --option channels_last=false (models that declare that option)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, e.g. num_beams=1 (gpt-j generation); recorded in the config hash")
    p.add_argument("--backend", default="pytorch",
                   help="how the model runs: pytorch, pytorch-compile, openai or an installed plug-in "
                        "(entry-point group evalkit.backends)")
    p.add_argument("--server_url", help="backend openai: the server's base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--server_urls", help="backend openai: servers, comma-separated; partition p is served by "
                   "url[p %% n] (docs/serving.md)")
    p.add_argument("--backend_option", action="append", default=[], metavar="KEY=VALUE",
                   help="the backend's own option, e.g. server_api=transformers, compile_mode=max-autotune")
    p.add_argument("--accuracy_target", help="99 or 99.9 (default: the model's first)")
    p.add_argument("--quantizer", default="", help="quantizer: int8-static, w8a8-smoothquant or an installed plug-in "
                   "(entry-point group evalkit.quantizers); default with --calibrate true: the model's built-in one")
    p.add_argument("--calibrate", choices=("true", "false", ""), default="",
                   help="true: calibrate once on the MLPerf calibration split, then quantize; false: reuse the "
                        "store's calibration of the same inputs")
    p.add_argument("--n_calib", type=int, default=0, help="calibration samples (default: the MLPerf list's size)")
    p.add_argument("--quantizer_option", action="append", default=[], metavar="KEY=VALUE",
                   help="the quantizer's own option, e.g. alpha=0.8 (w8a8-smoothquant); in the config hash")
    p.add_argument("--calib_dataset", type=Path, help="calibration split dir (default data/calibration/<model>)")
    p.add_argument("--allow_calibration_overlap", action="store_true",
                   help="accept calibration samples that are evaluated too (MLPerf lists drawn from the validation set)")
    p.add_argument("--no_check", action="store_true", help="do not gather/check even when all partitions are done")
    p.add_argument("--probe", type=int, default=0,
                   help="score only N samples spread over the n_count (evalkit explore's probe; never a PASS)")
    p.add_argument("--init_timeout", type=float, default=300,
                   help="torchrun: seconds to reach the rendezvous and see every rank join")
    p.add_argument("--dist_timeout", type=float, default=300,
                   help="torchrun: a rank silent (no heartbeat) this many seconds counts as dead")


def _request(a):
    """The run request as given; plan.resolve fills and checks everything else."""
    from .plan import RunSpec

    perf = {"target_qps": a.target_qps, "target_latency": a.target_latency,
            "min_duration": a.min_duration, "min_query_count": a.min_query_count}
    options = _key_values(a.option, "--option")
    if a.no_channels_last:
        options["channels_last"] = False
    return RunSpec(model=a.model, data=a.data, dataset=a.dataset, model_path=a.model_path, log_path=a.log_path,
                   n_count=a.n_count, n_partitions=a.n_partitions, partition_offset=a.partition_offset,
                   n_devices=a.n_devices, devices_per_partition=a.devices_per_partition, scenario=a.scenario, mode=a.mode, data_type=a.data_type,
                   device=a.device, batch_size=a.batch_size, threads=a.threads, user_conf=a.user_conf,
                   perf={k: v for k, v in perf.items() if v is not None}, options=options,
                   backend=a.backend, accuracy_target=a.accuracy_target, probe=a.probe,
                   quantizer=a.quantizer, calibrate={"true": True, "false": False}.get(a.calibrate),
                   n_calib=a.n_calib, quantizer_options=_key_values(a.quantizer_option, "--quantizer_option"),
                   calib_dataset=a.calib_dataset, allow_calibration_overlap=a.allow_calibration_overlap,
                   backend_options={**_key_values(a.backend_option, "--backend_option"),
                                    **({"server_url": a.server_url} if a.server_url else {}),
                                    **({"server_urls": a.server_urls} if a.server_urls else {})})


def _key_values(items: list[str], flag: str) -> dict:
    """KEY=VALUE strings -> dict; values parse as JSON (numbers, true/false) else stay strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KitError(f"{flag} {item!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one `error:` line (exit 2) like every other error, not the usage."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def main(argv=None) -> int:
    # bin/evalkit sets EVALKIT_ENV: its users typed bin/evalkit, the usage line says so
    prog = f"{ROOT / 'bin' / 'evalkit'}" if os.environ.get("EVALKIT_ENV") else "python -m evalkit"
    ap = _Parser(prog=prog, description="MLPerf Inference accuracy-evaluation kit")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    sub.add_parser("targets", help="print the MLPerf accuracy targets table")
    sub.add_parser("models", help="list the models of this kit")
    p = sub.add_parser("info", help="a model's facts as JSON (used by the scripts)")
    p.add_argument("model")
    p = sub.add_parser("synth", help="write a synthetic dataset + checkpoint in the published formats")
    p.add_argument("model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, help="samples (default: the model's synthetic_n, as DATA=synthetic under make)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="the model's synthetic-set options (e.g. stablediffusion image_side=1024)")
    p = sub.add_parser("run", help="run partitions under LoadGen; gather and check when all are done")
    _add_run_args(p)
    p = sub.add_parser("explore", help="batch size x data type x backend sweep: short performance runs and a "
                                       "probe accuracy per point, the best point and its full-set command")
    p.add_argument("model")
    p.add_argument("--batch_sizes", required=True, help="e.g. 1,8,32")
    p.add_argument("--data_types", default="fp32", help="e.g. fp32,bf16")
    p.add_argument("--backends", default="pytorch", help="e.g. pytorch,pytorch-compile")
    p.add_argument("--quantizers", help="quantizers (evalkit/quantize.py), e.g. none,int8-static; none: unquantized")
    p.add_argument("--probe", type=int, default=256, help="probe samples, spread over the set (default 256)")
    p.add_argument("--scenario", default="Offline", help="a performance run in this scenario too (besides Offline)")
    p.add_argument("--sweep_dir", type=Path, help="default logs/<model>/explore/<timestamp>; rerun it to resume")
    p.add_argument("--data", choices=("real", "synthetic"), default="real")
    p.add_argument("--dataset", type=Path)
    p.add_argument("--model_path", type=Path)
    p.add_argument("--n_count", type=int, help="the samples the full run scores (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--accuracy_target", help="99 or 99.9 (default: the model's first)")
    p.add_argument("--mem_limit", default=os.environ.get("EXPLORE_MEM_LIMIT"),
                   help="cap each point's processes (RLIMIT_AS), e.g. 2G (default $EXPLORE_MEM_LIMIT)")
    p.add_argument("--min_duration", type=int, default=1000, help="ms per performance run (default 1000)")
    p.add_argument("--min_query_count", type=int, default=0, help="default: 2 x the largest batch size")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--backend_option", action="append", default=[], metavar="KEY=VALUE")
    p = sub.add_parser("_worker")  # internal: one partition in a worker process
    p.add_argument("spec_json")
    p = sub.add_parser("gather", help="merge partition logs of one or more run dirs")
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="where to write the merged log (default: the first run dir)")
    p.add_argument("--force", action="store_true", help="replace an existing merged log (kept as .bak)")
    p = sub.add_parser("check", help="score the merged log, write accuracy.txt/json, PASS/FAIL table")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dataset", type=Path, help="dataset dir if it moved since the run")
    p.add_argument("--model_path", type=Path, help="checkpoint dir if it moved since the run (tokenizers)")
    p.add_argument("--accuracy_target", help="99 or 99.9")
    p.add_argument("--targets_version", help="older checker value set, e.g. v4.1 (mixtral)")
    p = sub.add_parser("performance", help="parse the partitions' LoadGen summaries into performance.json")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("report", help="HTML + Markdown report over every run under LOG_DIR")
    p.add_argument("log_dir", type=Path, nargs="?", default=ROOT / "logs")
    p.add_argument("--out", type=Path, help="where to write report.html/report.md (default: LOG_DIR)")
    p = sub.add_parser("metrics", help="dashboard rows (CSV + JSON) over every run under LOG_DIR")
    p.add_argument("log_dir", type=Path, nargs="?", default=ROOT / "logs")
    p.add_argument("--out", type=Path, help="where to write metrics.csv/metrics.json (default: LOG_DIR)")
    p.add_argument("--system", help="system name in the metric names (default: this host's name)")
    p = sub.add_parser("data", help="DVC: point the remote, import data, pull data / verified logs, publish a log")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    q = dsub.add_parser("remote", help="point the default remote mlperf-data at URL")
    q.add_argument("url")
    q.add_argument("--endpoint", help="S3-compatible endpoint, e.g. http://host:9000")
    q = dsub.add_parser("add", help="validate SRC, lay it out in data/, dvc add + push")
    q.add_argument("model")
    q.add_argument("--src", type=Path, required=True, help="dataset dir in the published layout")
    q.add_argument("--model_src", type=Path, help="checkpoint dir in the published format")
    q = dsub.add_parser("calibration", help="validate a calibration split (the MLPerf-listed samples in the "
                        "dataset's layout), lay it out in data/calibration/<model>, dvc add + push")
    q.add_argument("model")
    q.add_argument("--src", type=Path, required=True, help="the listed calibration samples in the published layout")
    q = dsub.add_parser("pull", help="dvc pull the model's dataset + checkpoint (no-op when present)")
    q.add_argument("model")
    q = dsub.add_parser("pull-log", help="dvc pull logs/internal/<model>")
    q.add_argument("model")
    q = dsub.add_parser("publish-log", help="copy a PASSing full run to logs/internal/<model>, dvc add + push")
    q.add_argument("model")
    q.add_argument("run_dir", type=Path)
    q.add_argument("--allow_synthetic", action="store_true")
    q.add_argument("--allow_partial", action="store_true")
    p = sub.add_parser("status", help="per partition and in total: done/total, rate, ETA, stalled/preempted/failed/missing, "
                                      "and the command that resumes them")
    p.add_argument("run_dirs", nargs="*", type=Path, help="the run dir (several: one per node, no shared filesystem; "
                                                          "default: the latest run under logs/)")
    p.add_argument("--stall_minutes", type=float, default=10.0,
                   help="a running partition whose progress.json is older than this counts as stalled")
    p = sub.add_parser("compare", help="metric-by-metric difference of a run vs a reference run (accuracy.json)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("ref_dir", type=Path)
    a = ap.parse_args(argv)
    try:
        return _dispatch(a)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk, a read-only dir, no permission: one line naming the path, not a traceback
        err = write_error(e, Path.cwd())
        if err is None:
            raise  # anything else is a bug or a broken device: its traceback is kept (__main__)
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


def _dispatch(a) -> int:
    if a.cmd == "targets":
        print(targets.format_table())
        return 0
    if a.cmd == "models":
        for n in registry.names():
            print(n)
        return 0
    if a.cmd == "info":
        b = registry.get(a.model)
        print(json.dumps({"name": b.name, "mlperf_name": b.mlperf_name, "checker_names": b.checker_names,
                          "dataset_size": b.dataset_size, "payload_dtype": b.payload_dtype,
                          "default_batch_size": b.default_batch_size, "options": b.options,
                          "multi_device": b.multi_device, "synthetic_n": b.synthetic_n}))
        return 0
    if a.cmd == "synth":
        from .synth import describe, synthesize
        n = registry.get(a.model).synthetic_n if a.n is None else a.n  # make's default (scripts/lib/common.sh)
        print(describe(synthesize(a.model, a.out, n, a.seed, _key_values(a.option, "--option"))))
        return 0
    if a.cmd == "_worker":
        from .launcher import run_worker
        print(run_worker(a.spec_json))
        return 0
    if a.cmd == "run":
        from .distributed import torchrun_env
        from .launcher import adopt_unfinished, finish_run, run_local
        from .plan import resolve
        req = _request(a)
        if torchrun_env() is not None:
            from . import distributed
            return distributed.run(req, a.no_check, a.init_timeout, a.dist_timeout)
        plan = resolve(req)
        if req.log_path is None:  # the same command after Ctrl-C resumes its run, not a new one
            plan = adopt_unfinished(plan)
        from .quantize import prepare
        plan = prepare(plan)  # a quantized run calibrates once here, before any partition starts
        run_local(plan)
        if plan.spec.probe and plan.spec.mode == "accuracy" and not a.no_check:
            from .probe import finish_probe
            return finish_probe(plan)
        return finish_run(plan, a.no_check)
    if a.cmd == "explore":
        from . import explore as ex
        sweep = ex.Sweep(
            model=a.model, batch_sizes=ex.parse_list(a.batch_sizes, "BATCH_SIZES", int),
            data_types=ex.parse_list(a.data_types, "DATA_TYPES"), backends=ex.parse_list(a.backends, "BACKENDS"),
            quantizers=ex.parse_list(a.quantizers, "QUANTIZERS"), probe=a.probe, scenario=a.scenario,
            sweep_dir=a.sweep_dir, data=a.data, dataset=a.dataset, model_path=a.model_path, n_count=a.n_count,
            device=a.device, accuracy_target=a.accuracy_target, mem_limit=ex.parse_size(a.mem_limit),
            min_duration=a.min_duration, min_query_count=a.min_query_count, threads=a.threads,
            extra={"options": _key_values(a.option, "--option"),
                   "backend_options": _key_values(a.backend_option, "--backend_option")})
        result = ex.explore(sweep)
        print(ex.format_table(result))
        print(f"sweep dir: {result['sweep_dir']} (explore.json, explore.csv; `make report` draws it)")
        return 0
    if a.cmd == "gather":
        from .gather import gather
        merged = gather(a.run_dirs, a.out, a.force)
        print(merged)
        return 0
    if a.cmd == "performance":
        from .perf import format_table as perf_table, write_performance
        print(perf_table(write_performance(a.run_dir)))
        return 0
    if a.cmd == "report":
        from .report import write_report
        html, md = write_report(a.log_dir, a.out)
        print(f"report: {html}\nmarkdown: {md}")
        return 0
    if a.cmd == "metrics":
        from .metrics import write_metrics
        for path in write_metrics(a.log_dir, a.out, a.system):
            print(path)
        return 0
    if a.cmd == "check":
        from .check import check, format_table
        result = check(a.run_dir, a.dataset, a.accuracy_target, a.targets_version, a.model_path)
        print(format_table(result))
        return 0 if result["verdict"] == "PASS" else 1
    if a.cmd == "data":
        from . import data
        if a.data_cmd == "remote":
            data.set_remote(a.url, a.endpoint)
        elif a.data_cmd == "add":
            data.add(a.model, a.src, a.model_src)
        elif a.data_cmd == "calibration":
            from .calibration import add_split
            add_split(a.model, a.src)
        elif a.data_cmd == "pull":
            data.pull_model_data(a.model)
        elif a.data_cmd == "pull-log":
            data.pull_log(a.model)
        else:
            data.publish_log(a.model, a.run_dir, a.allow_synthetic, a.allow_partial)
        return 0
    if a.cmd == "status":
        from .status import collect, format_status, latest_run, vouched
        if not a.run_dirs:
            a.run_dirs = [latest_run(ROOT / "logs")]
            print(f"status of the latest run under {ROOT / 'logs'}: {a.run_dirs[0]}", file=sys.stderr)
        st = collect(a.run_dirs, a.stall_minutes)
        print(format_status(st, a.run_dirs))
        problem = vouched(a.run_dirs)  # "complete" is not enough: a replaced partition or an edited merged log
        if problem:
            raise KitError(problem)
        # 4 when some partition needs a resume, so that scripts can act on it (1 means a scored FAIL only)
        from .rundir import NEEDS_RESUME as RESUMABLE
        return NEEDS_RESUME if any(x.state in RESUMABLE for x in st.parts.values()) else 0
    if a.cmd == "compare":
        from .data import compare
        print(compare(a.run_dir, a.ref_dir))
        return 0
    raise AssertionError(a.cmd)
