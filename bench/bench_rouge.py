"""ROUGE on a CNN/DM-sized set: the kit's language/rouge.py vs the path the reference runs.

13,368 synthetic prediction/target pairs (the CNN/DM validation size; ~50-word
predictions, ~60-word references, a few sentences each, words drawn Zipf-like
from a pseudo-word lexicon as news text reuses its words). Both sides get the
same post-processed texts (one sentence per line), so only scoring is timed.

* reference: what language/llama2-70b/evaluate-accuracy.py runs: a Pool of
  cpu_count() workers over cpu_count() chunks, each chunk one
  RougeScorer(use_stemmer=True) looping `score(target, prediction)` (evaluate's
  "rouge" with use_aggregator=False), F-measures averaged, *100, round 4
  (bench_scorers.reference_rouge). GPT-J's script runs the same loop in one process.
* kit: `language.rouge.rouge` (worker pool, default workers = cores).

Asserts the four printed scores are equal; goal kit >= 3x faster. Llama-2's size
(24,576 pairs of ~225 words) is in bench/bench_scorers.py.

    .venv/bin/python bench/bench_rouge.py [--n 13368] [--repeats 1] [--workers 0]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from language import rouge  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from bench_scorers import reference_rouge, rouge_texts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=13368)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="kit workers; 0 = one per core")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    # ~50-60-word answers in sentences of 8-20 words, the same input to both sides
    preds, refs = rouge_texts(a.n, a.seed, pred_words=(40, 61), ref_words=(50, 71), sentence=(8, 21))
    t_ref, t_kit = [], []
    for _ in range(a.repeats):  # interleaved, so machine noise hits both alike
        t0 = time.perf_counter()
        ref = reference_rouge(preds, refs)
        t_ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        kit = rouge.rouge(preds, refs, workers=a.workers)
        t_kit.append(time.perf_counter() - t0)
        for t in rouge.ROUGE_TYPES:
            assert ref[t] == kit[t], (t, ref[t], kit[t])  # the printed (rounded) numbers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    r, k = statistics.median(t_ref), statistics.median(t_kit)
    print(f"ROUGE (stemmer) on {a.n} pairs, ~50-word predictions / ~60-word references, {cores} cores, "
          f"load avg {os.getloadavg()[0]:.1f}, {a.repeats} repeat(s) (median)")
    print(f"{'path':<40}{'seconds':>10}{'pairs/s':>10}")
    print(f"{'reference (rouge_score, Pool(cpu_count))':<40}{r:>10.2f}{a.n / r:>10.0f}")
    print(f"{'kit language/rouge.py':<40}{k:>10.2f}{a.n / k:>10.0f}")
    print(f"{'speed-up':<40}{r / k:>10.2f}x   goal >= 3x")
    print("scores  " + "  ".join(f"{t}={kit[t]:.4f}" for t in rouge.ROUGE_TYPES) + "   (the reference's, to the last digit)")


if __name__ == "__main__":
    main()
