"""BERT-Large on CPU: samples/s fp32 vs bf16 through the bert Benchmark's make_batch/forward.

Full-size BertForQuestionAnswering (24 layers, hidden 1024, 16 heads, intermediate
4096, vocab 30522) with random weights, built from a config and saved to a temp
checkpoint dir so that the kit's own load_model casts it (dtype= as in a run).
Inputs are SQuAD-shaped features: 384 tokens, [CLS] question [SEP] context [SEP],
then padding (the reference always runs the full 384). Each dtype: one warm-up
batch, then --batches timed batches (median batch time -> samples/s); the two
dtypes are interleaved batch by batch so machine noise hits both alike.
Also prints the largest |bf16 - fp32| logit difference, as a sanity figure.

    .venv/bin/python bench/bench_bert.py [--batch 8] [--batches 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from language.bert.benchmark import BENCHMARK as bench  # noqa: E402

SEQ = 384


def features(n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        q, c = int(rng.integers(8, 20)), int(rng.integers(150, 360))  # question / context tokens
        c = min(c, SEQ - q - 3)
        used = q + c + 3
        ids = np.zeros(SEQ, np.int64)
        ids[:used] = rng.integers(1000, 30522, used)
        ids[0], ids[q + 1], ids[used - 1] = 101, 102, 102  # [CLS] q [SEP] c [SEP]
        mask = np.zeros(SEQ, np.int64)
        mask[:used] = 1
        seg = np.zeros(SEQ, np.int64)
        seg[q + 2:used] = 1
        out.append((ids, mask, seg))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=bench.default_batch_size)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import BertConfig, BertForQuestionAnswering

    cfg = BertConfig(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096, max_position_embeddings=512)
    torch.manual_seed(0)
    dtypes = ("fp32", "bf16")
    with tempfile.TemporaryDirectory() as tmp:
        BertForQuestionAnswering(cfg).save_pretrained(tmp)
        models = {dt: bench.load_model(Path(tmp), "cpu", dt, {}) for dt in dtypes}
    feats = features(a.batch * (a.batches + 1), 0)
    batches = [feats[i:i + a.batch] for i in range(0, len(feats), a.batch)]
    times: dict[str, list[float]] = {dt: [] for dt in dtypes}
    logits: dict[str, list[np.ndarray]] = {dt: [] for dt in dtypes}
    for k, b in enumerate(batches):
        for dt in dtypes:
            t0 = time.perf_counter()
            out = bench.postprocess(bench.forward(models[dt], bench.make_batch(b, "cpu", dt, {})), len(b))
            if k:  # batch 0 is the warm-up (oneDNN kernel selection, allocator)
                times[dt].append(time.perf_counter() - t0)
                logits[dt] += out
    sps = {dt: a.batch / statistics.median(times[dt]) for dt in dtypes}
    diff = max(float(np.abs(x - y).max()) for x, y in zip(logits["fp32"], logits["bf16"]))
    print(f"BERT-Large (24 layers, hidden 1024, 16 heads, random weights), seq {SEQ}, batch {a.batch}, CPU, "
          f"{a.threads} threads, load avg {os.getloadavg()[0]:.1f}; {a.batches} timed batches each (median), one run")
    print(f"{'data type':<10}{'s/batch':>10}{'samples/s':>11}")
    for dt in dtypes:
        print(f"{dt:<10}{statistics.median(times[dt]):>10.2f}{sps[dt]:>11.3f}")
    print(f"{'bf16/fp32':<10}{'':>10}{sps['bf16'] / sps['fp32']:>10.2f}x   max |bf16 - fp32| logit {diff:.3f}")


if __name__ == "__main__":
    main()
