"""`evalkit explore`: batch size x data type x backend sweeps before the long run.

For every point of the grid: a short LoadGen performance run (Offline, plus the scenario
asked for) and an accuracy run on a probe (evalkit/probe.py: the same PROBE qsl indices
for every point, spread over the set, the ones a later full run scores). Each is an
ordinary run of the kit (`python -m evalkit run ...` in a child process, its run dir
under the sweep dir), so a point resumes like any run and a point that fails (out of
memory, a backend that cannot compile, a data type the device lacks) is a row with its
reason, never a crashed sweep. EXPLORE_MEM_LIMIT / --mem_limit caps each point's
processes (RLIMIT_AS), so an out-of-memory row can be forced on any machine.

Writes <sweep>/explore.json and explore.csv; the report (evalkit/report.py) draws its
table and plots. The best point is the fastest whose probe is within the target, with
the command that runs the full set with it. A probe is never a PASS.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import registry
from .errors import KitError
from .util import ROOT, atomic_write_json, atomic_write_text

EXPLORE_JSON, EXPLORE_CSV, POINT_JSON, POINT_LOG = "explore.json", "explore.csv", "point.json", "point.log"
DEFAULT_PROBE = 256
MEM_ENV = "EXPLORE_MEM_LIMIT"

# What a failed run's error line says -> the row's kind. First match wins.
_KINDS = (
    ("out of memory", re.compile(r"out of memory|allocate|MemoryError|bad_alloc|killed by SIGKILL|"
                                 r"failed to map segment|ENOMEM", re.I)),
    ("cannot compile", re.compile(r"compile|dynamo|inductor|triton", re.I)),
    ("data type unsupported", re.compile(r"data.?type|dtype|BFloat16|Half|not implemented for", re.I)),
)


def parse_list(text: str | None, flag: str, cast=str) -> tuple:
    """'1,8,32' -> (1, 8, 32); an empty item, a repeat or a bad value is a one-line error naming flag."""
    if text is None or not str(text).strip():
        return ()
    out = []
    for item in str(text).split(","):
        item = item.strip()
        try:
            v = cast(item)
        except ValueError:
            raise KitError(f"{flag}={text}: {item!r} is not a {cast.__name__}") from None
        if item == "" or v in out:
            raise KitError(f"{flag}={text}: {'an empty item' if item == '' else f'{item} twice'}")
        out.append(v)
    return tuple(out)


def parse_size(text: str | None) -> int | None:
    """'2G', '1500M', '4096' (MiB without a unit) -> bytes."""
    if text is None or str(text).strip() == "":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.I)
    if not m:
        raise KitError(f"--mem_limit / {MEM_ENV}={text} is not a size like 2G, 1500M or 4096 (MiB)")
    unit = {"": 2 ** 20, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}[m.group(2).upper()]
    return int(float(m.group(1)) * unit)


@dataclass(frozen=True)
class Sweep:
    """The request, validated by check() before any point runs."""
    model: str
    batch_sizes: tuple[int, ...]
    data_types: tuple[str, ...]
    backends: tuple[str, ...]
    quantizers: tuple[str, ...] = ()
    probe: int = DEFAULT_PROBE
    scenario: str = "Offline"
    sweep_dir: Path | None = None
    data: str = "real"
    dataset: Path | None = None
    model_path: Path | None = None
    n_count: int | None = None
    device: str = "cpu"
    accuracy_target: str | None = None
    mem_limit: int | None = None
    min_duration: int = 1000          # ms: a short performance run (LoadGen's default is 600000)
    min_query_count: int = 0          # 0: 2 x the largest batch size
    threads: int = 0
    extra: dict = field(default_factory=dict)  # anything else for every run (--option, --backend_option)

    @property
    def scenarios(self) -> list[str]:
        return ["Offline"] + ([self.scenario] if self.scenario != "Offline" else [])

    def settings(self) -> dict:
        """What every point shares: a sweep dir holds one of these (the grid may grow)."""
        return {"model": self.model, "probe": self.probe, "scenarios": self.scenarios, "data": self.data,
                "dataset": str(self.dataset) if self.dataset else None,
                "model_path": str(self.model_path) if self.model_path else None, "n_count": self.n_count,
                "device": self.device, "accuracy_target": self.accuracy_target,
                "min_duration": self.min_duration, "min_query_count": self.query_count, "extra": self.extra}

    @property
    def query_count(self) -> int:
        return self.min_query_count or 2 * max(self.batch_sizes)

    def points(self) -> list[dict]:
        qs = [None if q == "none" else q for q in self.quantizers] or [None]
        return [{"id": point_id(b, dt, bs, q), "backend": b, "data_type": dt, "batch_size": bs, "quantizer": q}
                for q in qs for b in self.backends for dt in self.data_types for bs in self.batch_sizes]


def point_id(backend: str, data_type: str, batch_size: int, quantizer: str | None) -> str:
    return f"{backend}-{data_type}-bs{batch_size}" + (f"-{quantizer}" if quantizer else "")


def default_dir(model: str) -> Path:
    return ROOT / "logs" / model / "explore" / time.strftime("%Y%m%d-%H%M%S")


def check(s: Sweep) -> None:
    """Everything that can be refused before a model loads: the grid's names and numbers, the
    probe size against the set (one plan resolved: dataset, checkpoint, options), the sweep dir."""
    from . import backends
    from .plan import RunSpec, resolve

    bench = registry.get(s.model)
    if not s.batch_sizes or not s.data_types or not s.backends:
        raise KitError("explore needs BATCH_SIZES, DATA_TYPES and BACKENDS (--batch_sizes 1,8,32 "
                       "--data_types fp32,bf16 --backends pytorch,pytorch-compile)")
    bad = [b for b in s.batch_sizes if b < 1]
    if bad:
        raise KitError(f"BATCH_SIZES: {bad[0]} is not a positive batch size")
    for dt in s.data_types:
        if dt not in bench.data_types:
            raise KitError(f"DATA_TYPES: {dt} is not a data type of {bench.name} ({', '.join(bench.data_types)})")
    for b in s.backends:
        backends.resolve(b)
    if s.quantizers:  # evalkit/quantize.py: each named quantizer must load now; "none": the unquantized model
        from .quantize import resolve_class
        for q in s.quantizers:
            if q != "none":
                resolve_class(q)
    from .plan import SCENARIOS
    if s.scenario not in SCENARIOS:
        raise KitError(f"SCENARIO={s.scenario} is not one of {', '.join(SCENARIOS)}")
    if s.probe < 1:
        raise KitError(f"PROBE={s.probe} must be at least 1")
    if s.min_duration < 0 or s.min_query_count < 0:
        raise KitError("MIN_DURATION / MIN_QUERY_COUNT must not be negative")
    # one probe plan, resolved here: a bad dataset, checkpoint, option or PROBE > n_count fails now
    resolve(RunSpec(model=s.model, data=s.data, dataset=s.dataset, model_path=s.model_path, n_count=s.n_count,
                    scenario="Offline", mode="accuracy", data_type=s.data_types[0], device=s.device,
                    batch_size=s.batch_sizes[0], backend=s.backends[0], accuracy_target=s.accuracy_target,
                    probe=s.probe, options=s.extra.get("options", {}), log_path=Path(s.sweep_dir or ".") / "_check",
                    quantizer=next((q for q in s.quantizers if q != "none"), "")))
    f = Path(s.sweep_dir) / EXPLORE_JSON if s.sweep_dir else None
    if f is not None and f.exists():
        try:
            old = json.loads(f.read_text()).get("settings")
        except ValueError:
            raise KitError(f"{f}: corrupt; remove it or sweep into another dir") from None
        if old != s.settings():
            diff = [k for k in s.settings() if s.settings()[k] != (old or {}).get(k)]
            raise KitError(f"sweep dir {s.sweep_dir} was made with other settings ({', '.join(diff)}); "
                           f"resume it with the same ones or sweep into another LOG_PATH / --sweep_dir")


def _run_args(s: Sweep, pt: dict, mode: str, scenario: str, log: Path) -> list[str]:
    args = ["run", s.model, "--data", s.data, "--mode", mode, "--scenario", scenario, "--data_type", pt["data_type"],
            "--backend", pt["backend"], "--batch_size", str(pt["batch_size"]), "--device", s.device,
            "--log_path", str(log)]
    for flag, v in (("--dataset", s.dataset), ("--model_path", s.model_path), ("--n_count", s.n_count),
                    ("--accuracy_target", s.accuracy_target), ("--threads", s.threads or None)):
        if v is not None:
            args += [flag, str(v)]
    for k, v in s.extra.get("options", {}).items():
        args += ["--option", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    for k, v in s.extra.get("backend_options", {}).items():
        args += ["--backend_option", f"{k}={v}"]
    if pt.get("quantizer"):  # a quantized run calibrates once (evalkit/quantize.py), then runs like any other
        args += ["--quantizer", pt["quantizer"]]
    if mode == "performance":
        args += ["--min_duration", str(s.min_duration), "--min_query_count", str(s.query_count)]
    else:
        args += ["--probe", str(s.probe), "--no_check"]  # explore gathers and scores the probe itself
    return args


def _limit(nbytes: int | None):
    if nbytes is None:
        return None

    def apply():  # in the child, before exec: the run and its workers inherit it
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return apply


def _error_line(text: str) -> str:
    """The one line that says why a run failed: its last `error:` line, else its last line of its own."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    errs = [x for x in lines if x.startswith("error:")]
    tail = [x for x in lines if not x.startswith(("partition ", "warning:", "[evalkit]"))]
    return (errs or tail or lines or [""])[-1].removeprefix("error: ")


def classify(reason: str, rc: int) -> str:
    if rc in (-9, 137):
        return "out of memory"  # the kernel's OOM killer (or RLIMIT) sends SIGKILL
    for kind, rx in _KINDS:
        if rx.search(reason):
            return kind
    return "failed"


def _kit_run(args: list[str], log: Path, mem_limit: int | None) -> tuple[int, str]:
    """One `python -m evalkit run ...` as a child process; its output appended to log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("EVALKIT_RESUME_CMD", None)  # the point's own command resumes it, not the make line
    with open(log, "a") as f:
        f.write(f"$ {shlex.join([sys.executable, '-m', 'evalkit', *args])}\n")
        f.flush()
        start = f.tell()
        rc = subprocess.run([sys.executable, "-m", "evalkit", *args], stdout=f, stderr=subprocess.STDOUT, env=env,
                            cwd=ROOT, preexec_fn=_limit(mem_limit)).returncode
    with open(log, "rb") as f:
        f.seek(start)
        text = f.read().decode(errors="replace")
    return rc, (_error_line(text) if rc != 0 else "")


def _manifest(run_dir: Path) -> dict:
    from . import rundir
    parts = rundir.complete_partitions([run_dir])
    return parts[min(parts)][1] if parts else {}


def run_point(s: Sweep, pt: dict, sweep_dir: Path) -> dict:
    """Both runs of one point (skipped when point.json says it is done with these settings)."""
    d = sweep_dir / "points" / pt["id"]
    d.mkdir(parents=True, exist_ok=True)
    done = _read(d / POINT_JSON)
    if done and done.get("status") != "failed" and done.get("settings") == s.settings():
        return done | {"resumed": True}
    log = d / POINT_LOG
    row = dict(pt, status="ok", kind=None, reason=None, throughput={}, probe=None, peak_memory={},
               runs={}, settings=s.settings(), log=str(log))
    t0 = time.time()
    for scen in s.scenarios:
        run = d / f"perf-{scen}"
        row["runs"][f"perf-{scen}"] = str(run)
        rc, reason = _kit_run(_run_args(s, pt, "performance", scen, run), log, s.mem_limit)
        if rc != 0:
            return _failed(row, d, reason or f"exit {rc}", rc, t0)
        perf = _read(run / "performance.json") or {}
        h = perf.get("headline") or {}
        row["throughput"][scen] = {"name": h.get("name"), "value": h.get("value"), "unit": h.get("unit"),
                                   "result": perf.get("result")}
        m = _manifest(run)
        _peak(row, m)
        fb = (m.get("backend") or {}).get("fallback")
        if fb:
            row["status"], row["kind"] = "not compiled", "cannot compile"
            row["reason"] = f"{pt['backend']} fell back to eager: {fb}"
    run = d / "probe"
    row["runs"]["probe"] = str(run)
    rc, reason = _kit_run(_run_args(s, pt, "accuracy", "Offline", run), log, s.mem_limit)
    if rc != 0:
        return _failed(row, d, reason or f"exit {rc}", rc, t0)
    from .probe import gather_and_score
    try:
        pr = gather_and_score(run, s.accuracy_target)
    except KitError as e:
        return _failed(row, d, str(e), 2, t0)
    _peak(row, _manifest(run))
    rows = pr["rows"]
    row["probe"] = {"label": pr["label"], "within_target": pr["within_target"], "n": pr["n"], "of": pr["of"],
                    "samples": pr["samples"],
                    "metrics": {r["metric"]: {"value": r["value"], "target": r["target"], "kind": r["kind"],
                                              "pct_of_reference": r["pct_of_reference"], "within": r["pass"]}
                                for r in rows}}
    row["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(d / POINT_JSON, row)
    return row


def _peak(row: dict, manifest: dict) -> None:
    for k, v in (manifest.get("peak_memory") or {}).items():
        row["peak_memory"][k] = max(v, row["peak_memory"].get(k, 0))


def _failed(row: dict, d: Path, reason: str, rc: int, t0: float) -> dict:
    row.update(status="failed", kind=classify(reason, rc), reason=reason, seconds=round(time.time() - t0, 1))
    atomic_write_json(d / POINT_JSON, row)
    return row


def _read(f: Path) -> dict | None:
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def best_point(rows: list[dict]) -> dict | None:
    """The fastest Offline point whose probe is within the target (compiled where it asked to be)."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("probe") and r["probe"]["within_target"]
          and (r["throughput"].get("Offline") or {}).get("value") is not None]
    return max(ok, key=lambda r: r["throughput"]["Offline"]["value"], default=None)


def full_command(s: Sweep, r: dict) -> dict:
    """The make line and the CLI line that run the full set with point r."""
    synth_n = os.environ.get("SYNTH_N") if s.data == "synthetic" else None  # the same synthetic set
    mk = [f"make {s.model}", f"DATA={s.data}"] + ([f"SYNTH_N={synth_n}"] if synth_n else []) + [
          f"BATCH_SIZE={r['batch_size']}", f"DATA_TYPE={r['data_type']}", f"BACKEND={r['backend']}"] + ([f"DEVICE={s.device}"] if s.device != "cpu" else []) + \
         ([f"ACCURACY_TARGET={s.accuracy_target}"] if s.accuracy_target else []) + \
         ([f"N_COUNT={s.n_count}"] if s.n_count else []) + ([f"QUANTIZER={r['quantizer']}"] if r.get("quantizer") else [])
    cli = [str(ROOT / "bin" / "evalkit"), "run", s.model, "--data", s.data, "--batch_size", str(r["batch_size"]),
           "--data_type", r["data_type"], "--backend", r["backend"], "--device", s.device]
    for flag, v in (("--dataset", s.dataset), ("--model_path", s.model_path), ("--accuracy_target", s.accuracy_target),
                    ("--n_count", s.n_count)):
        if v is not None:
            cli += [flag, str(v)]
    if r.get("quantizer"):
        cli += ["--quantizer", r["quantizer"]]
    for k, v in s.extra.get("options", {}).items():
        cli += ["--option", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    for k, v in s.extra.get("backend_options", {}).items():
        cli += ["--backend_option", f"{k}={v}"]
    # make knows the default data paths only, and no model or backend options: then the CLI line alone
    plain = s.dataset is None and s.model_path is None and not s.extra.get("options") and not s.extra.get("backend_options")
    return {"make": f"cd {shlex.quote(str(ROOT))} && " + " ".join(mk) if plain else None, "cli": shlex.join(cli)}


CSV_FIELDS = ("point", "backend", "data_type", "batch_size", "quantizer", "status", "offline_samples_per_s",
              "scenario", "scenario_metric", "scenario_value", "scenario_unit", "probe", "probe_metric",
              "probe_value", "probe_target", "host_peak_rss_mib", "cuda_peak_allocated_mib", "reason", "run_dirs")


def csv_row(r: dict, scenario: str) -> dict:
    off = r["throughput"].get("Offline") or {}
    sc = r["throughput"].get(scenario) or {}
    pm = next(iter((r.get("probe") or {}).get("metrics", {}).items()), (None, {}))
    mem = r.get("peak_memory") or {}
    mib = lambda k: round(mem[k] / 2 ** 20, 1) if k in mem else ""  # noqa: E731
    return {"point": r["id"], "backend": r["backend"], "data_type": r["data_type"], "batch_size": r["batch_size"],
            "quantizer": r.get("quantizer") or "", "status": r["status"],
            "offline_samples_per_s": off.get("value") if off.get("value") is not None else "",
            "scenario": scenario if scenario != "Offline" else "", "scenario_metric": sc.get("name") or "" if scenario != "Offline" else "",
            "scenario_value": sc.get("value") if scenario != "Offline" and sc.get("value") is not None else "",
            "scenario_unit": sc.get("unit") or "" if scenario != "Offline" else "",
            "probe": (r.get("probe") or {}).get("label", ""), "probe_metric": pm[0] or "",
            "probe_value": pm[1].get("value", ""), "probe_target": pm[1].get("target", ""),
            "host_peak_rss_mib": mib("host_rss_bytes"), "cuda_peak_allocated_mib": mib("cuda_max_allocated_bytes"),
            "reason": r.get("reason") or "", "run_dirs": " ".join(r.get("runs", {}).values())}


def write_outputs(s: Sweep, sweep_dir: Path, rows: list[dict], started: float, synthetic: bool) -> dict:
    best = best_point(rows)
    result = {"kind": "evalkit explore", "model": s.model, "sweep_dir": str(sweep_dir), "settings": s.settings(),
              "grid": {"batch_sizes": list(s.batch_sizes), "data_types": list(s.data_types),
                       "backends": list(s.backends), "quantizers": list(s.quantizers)},
              "synthetic": synthetic, "points": rows, "best": best["id"] if best else None,
              "command": full_command(s, best) if best else None,
              "note": "probe results are for PROBE samples only: never a PASS; only the full-set check is",
              "started": started, "elapsed_s": round(time.time() - started, 1)}
    atomic_write_json(sweep_dir / EXPLORE_JSON, result)
    with open(sweep_dir / (EXPLORE_CSV + ".tmp"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow(csv_row(r, s.scenario))
    os.replace(sweep_dir / (EXPLORE_CSV + ".tmp"), sweep_dir / EXPLORE_CSV)
    return result


def explore(s: Sweep) -> dict:
    from .manifest import read_synthetic
    from .plan import default_paths

    sweep_dir = Path(s.sweep_dir or default_dir(s.model))
    s = Sweep(**{**s.__dict__, "sweep_dir": sweep_dir})
    check(s)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    ds = s.dataset or default_paths(s.model, s.data)[0]
    synthetic = read_synthetic(Path(ds)) is not None
    started = time.time()
    rows: list[dict] = []
    old = _read(sweep_dir / EXPLORE_JSON) or {}
    keep = {r["id"]: r for r in old.get("points", [])}  # points of an earlier, wider grid stay rows
    pts = s.points()
    for i, pt in enumerate(pts):
        print(f"explore {s.model}: point {i + 1}/{len(pts)} {pt['id']}", file=sys.stderr, flush=True)
        row = run_point(s, pt, sweep_dir)
        print(f"  {describe(row)}", file=sys.stderr, flush=True)
        rows.append(row)
        keep.pop(row["id"], None)
        write_outputs(s, sweep_dir, rows + list(keep.values()), started, synthetic)  # a table after every point
    return write_outputs(s, sweep_dir, rows + list(keep.values()), started, synthetic)


def describe(r: dict) -> str:
    if r["status"] == "failed":
        return f"FAILED ({r['kind']}): {r['reason']}"
    off = r["throughput"].get("Offline") or {}
    pr = r.get("probe") or {}
    return (f"{off.get('value', 0):.4g} samples/s Offline, {pr.get('label', '-')}"
            + (f" [{r['reason']}]" if r.get("reason") else "") + (" (resumed)" if r.get("resumed") else ""))


def format_table(result: dict) -> str:
    scen = [x for x in result["settings"]["scenarios"] if x != "Offline"]
    hdr = ["point", "status", "Offline samples/s"] + [f"{x}" for x in scen] + ["probe", "peak RSS MiB", "reason"]
    body = []
    for r in result["points"]:
        c = csv_row(r, scen[0] if scen else "Offline")
        off = c["offline_samples_per_s"]
        sc = [f"{c['scenario_value']:.4g} {c['scenario_unit']}" if c["scenario_value"] != "" else "-"] if scen else []
        probe = (f"{c['probe_metric']} {c['probe_value']:.4g} ({c['probe']})" if c["probe"] else "-")
        status = f"{r['status']} ({r['kind']})" if r["status"] == "failed" else r["status"]
        body.append([r["id"], status, f"{off:.4g}" if off != "" else "-", *sc, probe,
                     str(c["host_peak_rss_mib"] or "-"), (r.get("reason") or "")[:100]])
    widths = [max(len(str(x[i])) for x in [hdr] + body) for i in range(len(hdr))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    samples = {(r.get("probe") or {}).get("samples") for r in result["points"]} - {None}
    probe = f"probe of {result['settings']['probe']}" + (
        f" scoring units ({samples.pop()} samples)" if len(samples) == 1 and samples != {result['settings']['probe']}
        else " samples")
    lines = [f"explore {result['model']}: {len(result['points'])} points, {probe}"
             + (" -- SYNTHETIC data" if result["synthetic"] else ""),
             fmt.format(*hdr), "  ".join("-" * w for w in widths)] + [fmt.format(*b).rstrip() for b in body]
    if result["best"]:
        lines += [f"best by Offline throughput with the probe within target: {result['best']} "
                  f"(a probe, not a PASS: run the full set)",
                  *[f"  {c}" for c in (result["command"]["make"], result["command"]["cli"]) if c]]
    else:
        lines.append("no point has its probe within target: no full-set command to suggest")
    return "\n".join(lines)
