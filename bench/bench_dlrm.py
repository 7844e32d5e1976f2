"""DLRM-v2 on the CPU: pairs/s of the reference-sized model, and AUC ours vs sklearn.

1. Throughput: recommendation.dlrm_v2 with the reference layer sizes (embedding 128, dense
   512-256-128, DCN 3 x rank 512, over 1024-1024-512-256-1) and small tables (rows capped at
   --table_rows; the real 40M-row tables only change which rows the gather reads), fed
   aggregated samples of 100..700 pairs (the reference's range; mean ~270) in batches of
   --batch_samples samples, once with every table in memory and once with every table
   memory-mapped on the host (mmap_rows=0). Reports pairs/s and samples/s.
2. AUC: --auc_pairs pairs (default 10M, random scores with ties) scored by
   recommendation.dlrm_v2.auc.roc_auc and sklearn.metrics.roc_auc_score: values, |diff|, time.

    .venv/bin/python bench/bench_dlrm.py [--batch_samples 16] [--batches 4] [--auc_pairs 10000000]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from recommendation.dlrm_v2 import benchmark as dl  # noqa: E402
from recommendation.dlrm_v2.auc import roc_auc  # noqa: E402
from recommendation.dlrm_v2.model import DLRMDCN  # noqa: E402


def write_model(d: Path, table_rows: int) -> None:
    cfg = dict(dl.REFERENCE_CONFIG, num_embeddings_per_feature=[min(r, table_rows) for r in dl.NUM_EMBEDDINGS])
    torch.manual_seed(0)
    model = DLRMDCN(cfg)
    with torch.no_grad():
        for p in model.inter_arch.crossnet.parameters():
            torch.nn.init.normal_(p, std=0.01)
    (d / dl.TABLE_DIR).mkdir(parents=True)
    (d / dl.CONFIG).write_text(json.dumps(cfg))
    torch.save(model.state_dict(), d / dl.DENSE_WEIGHTS)
    rng = np.random.default_rng(0)
    for k, r in enumerate(cfg["num_embeddings_per_feature"]):
        np.save(dl.table_path(d, k), rng.normal(0, 0.05, (r, 128)).astype(np.float32))


def make_samples(n: int, table_rows: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = int(rng.integers(100, 701))
        dense = rng.random((c, 13), dtype=np.float32)
        sparse = [rng.integers(0, min(r, table_rows), (c, h), dtype=np.int32)
                  for r, h in zip(dl.NUM_EMBEDDINGS, dl.MULTI_HOT_SIZES)]
        out.append((dense, sparse, rng.integers(0, 2, c).astype(np.float32)))
    return out


def throughput(model_dir: Path, samples, batch: int, mmap_rows: int) -> dict:
    b = dl.BENCHMARK
    net = b.load_model(model_dir, "cpu", "fp32", {"mmap_rows": mmap_rows})
    batches = [samples[i:i + batch] for i in range(0, len(samples), batch)]
    b.postprocess(b.forward(net, b.make_batch(batches[0], "cpu", "fp32", {})), len(batches[0]))  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    pairs = 0
    for bt in batches:
        out = b.postprocess(b.forward(net, b.make_batch(bt, "cpu", "fp32", {})), len(bt))
        pairs += sum(len(p) // 2 for p in out)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # pairs per CPU second as well: on a shared machine wall time measures the neighbours too
    return {"tables": "memory-mapped (host)" if mmap_rows == 0 else "in memory", "samples": len(samples),
            "pairs": pairs, "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3), "pairs_per_s": round(pairs / dt),
            "pairs_per_cpu_s": round(pairs / cpu), "samples_per_s": round(len(samples) / dt, 1)}


def auc_bench(n: int) -> dict:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    labels = (rng.random(n) < 0.03).astype(np.float32)  # ~3 % clicks, as Criteo
    scores = np.round(rng.random(n, dtype=np.float32) * 0.5 + labels * 0.1, 5)  # rounded: many ties
    c0 = time.process_time()
    ours = roc_auc(labels, scores)
    c1 = time.process_time()
    ref = roc_auc_score(labels, scores)
    c2 = time.process_time()
    return {"pairs": n, "ours": ours, "sklearn": ref, "abs_diff": abs(ours - ref),
            "ours_cpu_s": round(c1 - c0, 3), "sklearn_cpu_s": round(c2 - c1, 3), "speedup": round((c2 - c1) / (c1 - c0), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch_samples", type=int, default=16)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--table_rows", type=int, default=100_000)
    ap.add_argument("--auc_pairs", type=int, default=10_000_000)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    res = {"threads": torch.get_num_threads(), "batch_samples": a.batch_samples}
    with tempfile.TemporaryDirectory() as tmp:
        write_model(Path(tmp), a.table_rows)
        samples = make_samples(a.batch_samples * a.batches, a.table_rows)
        res["throughput"] = [throughput(Path(tmp), samples, a.batch_samples, m) for m in (10**12, 0)]
    res["auc"] = auc_bench(a.auc_pairs)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
