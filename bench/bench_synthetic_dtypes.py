"""What a correct low-precision run scores on a synthetic set (issue 29 item 3).

A synthetic set's references are the fp32 outputs of a random-weight model (evalkit/synth.py), whose
outputs sit close together: fp16/bf16 rounding flips many of them (ResNet50 argmax, 3D-UNet voxels)
although nothing is wrong. This runs each model's default synthetic set (seed 0, the model's
synthetic_n, what DATA=synthetic uses) in every DATA_TYPE it supports, through `python -m evalkit
run` as a user runs it, and prints per (model, dtype): the primary metric, its % of the fp32
synthetic reference, and what an index shift by one scores (the set's own record: a pipeline bug).
The figures go into evalkit/targets.py SYNTHETIC_LOW_PRECISION, from which check judges a synthetic
low-precision run (a floor below the measured value, above the index shift).

    .venv/bin/python bench/bench_synthetic_dtypes.py [--models resnet 3d-unet retinanet] [--dtypes fp16 bf16]
        [--n N] [--set MODEL=DIR ...]   (another size; an existing set instead of writing one)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def kit(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "evalkit", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def main() -> None:
    from evalkit import registry
    from evalkit.manifest import read_synthetic

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet", "retinanet", "3d-unet"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, help="set size (default: each model's synthetic_n)")
    ap.add_argument("--set", action="append", default=[], metavar="MODEL=DIR", help="an existing synthetic set")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models:
            bench = registry.get(model)
            given = dict(x.split("=", 1) for x in a.set)
            out = Path(given.get(model) or Path(tmp) / model)
            t = time.time()
            cp = kit("synth", model, "--out", out, "--n", a.n or bench.synthetic_n, "--seed", a.seed) \
                if model not in given else subprocess.CompletedProcess([], 0)
            if cp.returncode:
                print(f"{model}: synth failed: {cp.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                continue
            info = read_synthetic(out / "dataset")
            print(f"{model}: synthetic set n={info['n']} in {time.time() - t:.0f} s", file=sys.stderr)
            for dtype in a.dtypes:
                if dtype not in bench.data_types:
                    continue
                log = Path(tmp) / f"{model}-{dtype}"
                t = time.time()
                cp = kit("run", model, "--dataset", out / "dataset", "--model_path", out / "model",
                         "--log_path", log, "--data_type", dtype)
                acc = log / "accuracy.json"
                if not acc.exists():
                    print(f"{model} {dtype}: no result ({cp.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
                    continue
                for r in json.loads(acc.read_text())["rows"]:
                    ref, shift = info["reference"][r["metric"]], info["index_shift"].get(r["metric"])
                    rows.append((model, info["n"], dtype, r["metric"], r["value"], 100 * r["value"] / ref if ref else None,
                                 None if shift is None or not ref else 100 * shift / ref, time.time() - t))
                print(f"{model} {dtype}: {time.time() - t:.0f} s {rows[-1][3:]}", file=sys.stderr, flush=True)
    print(f"{'model':<10} {'n':>4} {'dtype':<5} {'metric':<10} {'value':>10} {'% of fp32 ref':>14} "
          f"{'index shift %':>14} {'run s':>6}")
    for m, n, d, k, v, pct, sh, s in rows:
        print(f"{m:<10} {n:>4} {d:<5} {k:<10} {v:>10.4f} {pct if pct is not None else float('nan'):>14.2f} "
              f"{sh if sh is not None else float('nan'):>14.2f} {s:>6.0f}")


if __name__ == "__main__":
    main()
