"""Kit overhead on ResNet50 (full size, random weights), Offline, CPU.

Samples/s through the kit (LoadGen PerformanceOnly, the kit's QSL/SUT, batching
and responses) vs a bare forward loop over the same preprocessed tensors with
the same batch, dtype and threads, in one run. Goal: kit / bare >= 0.95.

    .venv/bin/python bench/bench_resnet_overhead.py [--n 128] [--batch 16] [--repeats 3]
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from evalkit import registry  # noqa: E402
from evalkit.plan import RunSpec, resolve  # noqa: E402
from evalkit.runner import run_partition  # noqa: E402
from evalkit.synth import synthesize  # noqa: E402


def kit_samples_per_s(spec) -> float:
    run_partition(resolve(spec), 0)
    summary = (Path(spec.log_path) / "0" / "mlperf_log_summary.txt").read_text()
    return float(re.search(r"Samples per second\s*:\s*([\d.]+)", summary).group(1))


def bare_samples_per_s(bench, model, samples, spec) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(samples), spec.batch_size):
        batch = samples[i:i + spec.batch_size]
        out = bench.forward(model, bench.make_batch(batch, spec.device, spec.data_type, spec.options))
        bench.postprocess(out, len(batch))
    return len(samples) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data_type", default="fp32")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bench = registry.get("resnet")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthesize("resnet", tmp / "synth", a.n, 0)
        dataset = bench.open_dataset(tmp / "synth" / "dataset")
        samples = [dataset.load(i) for i in range(a.n)]
        base = dict(model="resnet", dataset=tmp / "synth" / "dataset", model_path=tmp / "synth" / "model",
                    n_count=a.n, mode="performance", data_type=a.data_type, batch_size=a.batch,
                    threads=a.threads, options={"channels_last": True},
                    perf={"target_qps": 1, "min_duration": 1000, "min_query_count": a.n})
        model = bench.load_model(base["model_path"], "cpu", a.data_type, base["options"])
        bare_samples_per_s(bench, model, samples[: a.batch], RunSpec(log_path=tmp, **base))  # warm-up
        kit, bare = [], []
        for r in range(a.repeats):  # interleaved, so machine noise hits both alike
            bare.append(bare_samples_per_s(bench, model, samples, RunSpec(log_path=tmp, **base)))
            kit.append(kit_samples_per_s(RunSpec(log_path=tmp / f"kit{r}", **base)))
    kit_m, bare_m = statistics.median(kit), statistics.median(bare)
    print(f"ResNet50 Offline, {a.n} samples, batch {a.batch}, {a.data_type}, {a.threads} threads, "
          f"{a.repeats} repeats (median)")
    print(f"{'path':<28}{'samples/s':>12}")
    print(f"{'bare forward loop':<28}{bare_m:>12.2f}")
    print(f"{'kit (LoadGen Offline)':<28}{kit_m:>12.2f}")
    print(f"{'ratio kit/bare':<28}{kit_m / bare_m:>12.3f}   goal >= 0.95")


if __name__ == "__main__":
    main()
