"""gather + check of a full-size accuracy run over 64 partitions: time and peak memory.

1. A synthetic set of the real size (Llama-2: 24,576 samples; DLRM-v2: 330,067 samples, 89M pairs;
   the scale variant of evalkit/synth.py: 512 samples computed, repeated) is made, or reused
   from --work.
2. A real run: every partition's response cache is filled with the model's own answers (the
   tiny model answers the 512 distinct prompts once here, fp32 batch 1, as the run would), then
   each of the 64 partitions runs through LoadGen in this process (evalkit.runner.run_partition:
   real mlperf_log_accuracy.json files and manifests; the model is not asked again).
3. `evalkit gather` and `evalkit check` run as the user runs them, each timed in its own
   process; peak memory = its maximum RSS (getrusage of the child).

    nice .venv/bin/python bench/bench_gather_scale.py [--model llama2] [--n 24576] [--partitions 64] [--work DIR]
    nice .venv/bin/python bench/bench_gather_scale.py --model dlrm --n 330067
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# Runs argv[2:] in a child of its own and writes [exit code, CPU s, peak RSS KB] to argv[1]. A child
# of this (large) bench process would inherit its peak: Linux carries the resident-set high-water
# mark across fork and exec, and this process maps the dataset; the launcher's own child does not.
_LAUNCHER = """import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
open(sys.argv[1], "w").write(json.dumps([os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime, ru.ru_maxrss]))
"""


def timed(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, last stdout/stderr lines) of one child process."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rusage.json"
        t0 = time.perf_counter()
        cp = subprocess.run([sys.executable, "-c", _LAUNCHER, str(result), *cmd], capture_output=True, text=True,
                            cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        wall = time.perf_counter() - t0
        code, cpu, peak_kb = json.loads(result.read_text()) if result.exists() else (cp.returncode, 0.0, 0)
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")
    tail = "\n".join((cp.stdout + cp.stderr).strip().splitlines()[-6:])
    return wall, cpu, peak_kb / 1024, tail


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama2")
    ap.add_argument("--n", type=int, default=24576)
    ap.add_argument("--partitions", type=int, default=64)
    ap.add_argument("--work", type=Path, default=Path("/tmp/evalkit_gather_scale"))
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from evalkit import registry, synth
    from evalkit.cache import ResponseCache
    from evalkit.plan import RunSpec, resolve
    from evalkit.runner import run_partition
    from evalkit.synth import distinct

    setdir = a.work / f"set_{a.model}_{a.n}"
    t0 = time.perf_counter()
    synth.synthesize(a.model, setdir, a.n, 0)
    t_synth = time.perf_counter() - t0

    run = a.work / f"run_{a.model}_{a.n}_{a.partitions}"
    shutil.rmtree(run, ignore_errors=True)
    plan = resolve(RunSpec(model=a.model, dataset=setdir / "dataset", model_path=setdir / "model", log_path=run,
                           n_partitions=a.partitions, n_devices=1))
    bench = registry.get(a.model)
    t0 = time.perf_counter()
    m = distinct(a.n)
    import torch

    torch.set_num_threads(1)  # batch-1 steps of a tiny model: a second thread only contends
    model = bench.load_model(setdir / "model", "cpu", "fp32", plan.spec.options)
    opts = plan.spec.options
    answers = [bench.postprocess(bench.forward(model, bench.make_batch([plan.dataset.load(k)], "cpu", "fp32", opts)),
                                 1)[0].tobytes() for k in range(m)]
    del model
    for p in range(a.partitions):
        start, stop = plan.range(p)
        (run / str(p)).mkdir(parents=True, exist_ok=True)
        c = ResponseCache(run / str(p), plan.config_hash, start, stop)
        c.append([(i, answers[i % m]) for i in range(start, stop)])
        c.close()
    with contextlib.redirect_stderr(io.StringIO()):
        for p in range(a.partitions):
            run_partition(plan, p)
    t_run = time.perf_counter() - t0
    log_bytes = sum(f.stat().st_size for f in run.glob("*/mlperf_log_accuracy.json"))

    evalkit = [sys.executable, "-m", "evalkit"]
    g = timed(evalkit + ["gather", str(run)])
    c = timed(evalkit + ["check", str(run)])
    merged = run / "merged_mlperf_log_accuracy.json"
    print(f"{bench.mlperf_name} accuracy run at full size: {a.n} samples over {a.partitions} partitions "
          f"({m} distinct answers), {len(os.sched_getaffinity(0))} cores, load avg {os.getloadavg()[0]:.1f}")
    print(f"  synthetic set {t_synth:.0f} s (reused when already in {setdir}); cached run of every partition "
          f"{t_run:.0f} s; partition logs {log_bytes / 1e6:.1f} MB, merged log "
          f"{merged.stat().st_size / 1e6:.1f} MB")
    print(f"{'step':<10}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}")
    for name, r in (("gather", g), ("check", c)):
        print(f"{name:<10}{r[0]:>9.1f}{r[1]:>9.1f}{r[2]:>13.0f}")
    print("check says:\n  " + c[3].replace("\n", "\n  "))


if __name__ == "__main__":
    main()
