"""Quantized models (issue 26): per model with a built-in quantizer, on this machine's device,
the calibration seconds for N_CALIB samples, eval throughput quantized vs fp32, and the synthetic
metric delta (the synthetic reference is the fp32 model's own output).

    .venv/bin/python bench/bench_quant.py [--models bert,resnet,gpt-j] [--n_calib bert=100,resnet=8,gpt-j=8]
                                          [--n 12] [--device cpu] [--dir /tmp/evalkit-bench-quant]

Goal: BERT calibrates on 100 samples in under a minute on this CPU with the synthetic model.
Synthetic sets and calibration splits are written once under --dir and reused.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_N_CALIB = {"bert": 100, "resnet": 8, "gpt-j": 8}


def eval_set(bench, model, ds, device, bs):
    pairs, t = [], time.perf_counter()
    for s in range(0, ds.size, bs):
        idx = list(range(s, min(ds.size, s + bs)))
        out = bench.postprocess(bench.forward(model, bench.make_batch([ds.load(i) for i in idx], device, "fp32",
                                                                      bench.options)), len(idx))
        pairs += list(zip(idx, out))
    return pairs, time.perf_counter() - t


def one(name: str, n: int, n_calib: int, device: str, root: Path) -> dict:
    from evalkit import calibration, quantize, registry
    from evalkit.synth import synthesize

    bench = registry.get(name)
    base = root / name
    if not (base / "dataset").exists():
        synthesize(name, base, n, 0)
    split = base / f"calibration_{n_calib}"
    if not split.exists():
        calibration.write_synthetic_split(bench, split, n_calib, 1000)
    mp = base / "model"
    ds = bench.open_dataset(base / "dataset", mp, bench.options)
    calib = bench.open_dataset(split, mp, bench.options)
    q = quantize.resolve_class(bench.default_quantizer)({})
    run = {"device": device, "data_type": "fp32", "options": bench.options, "quantizer_options": {}}
    bs = bench.default_batch_size
    fp32 = bench.load_model(mp, device, "fp32", bench.options)
    ref_pairs, t_fp32 = eval_set(bench, fp32, ds, device, bs)
    t0 = time.perf_counter()
    stats = q.calibrate(bench, bench.load_model(mp, device, "fp32", bench.options),
                        calibration.batches(bench, calib, n_calib, bs, device, "fp32", bench.options), run)
    t_cal = time.perf_counter() - t0
    t0 = time.perf_counter()
    qm = q.build(bench, bench.load_model(mp, device, "fp32", bench.options), stats, run)
    t_build = time.perf_counter() - t0
    q_pairs, t_q = eval_set(bench, qm, ds, device, bs)
    m_ref = bench.score(iter(ref_pairs), base / "dataset", ds.size, mp)
    m_q = bench.score(iter(q_pairs), base / "dataset", ds.size, mp)
    key = next(iter(bench.synthetic_reference()))
    from evalkit.manifest import read_synthetic

    synth = read_synthetic(base / "dataset")
    # every metric with a synthetic reference: % of it reached quantized, and what an index shift scores
    # (the figures of evalkit/targets.py SYNTHETIC_QUANTIZED)
    pct = {k: (100.0 * float(m_q[k]) / float(v), 100.0 * float(synth["index_shift"].get(k, 0.0)) / float(v))
           for k, v in synth["reference"].items() if float(v)}
    return {"model": name, "quantizer": q.name, "n_calib": n_calib, "calibrate_s": t_cal, "build_s": t_build,
            "fp32_sps": ds.size / t_fp32, "q_sps": ds.size / t_q, "metric": key,
            "fp32": float(m_ref[key]), "quant": float(m_q[key]), "pct": pct}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="bert,resnet,gpt-j")
    ap.add_argument("--n_calib", default="")
    ap.add_argument("--n", type=int, default=12, help="synthetic evaluation set size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/evalkit-bench-quant"))
    a = ap.parse_args()
    nc = dict(DEFAULT_N_CALIB, **{k: int(v) for k, v in (x.split("=") for x in a.n_calib.split(",") if x)})
    a.dir.mkdir(parents=True, exist_ok=True)
    rows = [one(m, a.n, nc[m], a.device, a.dir) for m in a.models.split(",")]
    print(f"\ndevice {a.device}; synthetic sets of {a.n} samples (reference = the fp32 model's own output)")
    hdr = ("model", "quantizer", "N_CALIB", "calibrate s", "build s", "fp32 samples/s", "quant samples/s", "ratio",
           "metric", "fp32", "quantized", "delta")
    body = [(r["model"], r["quantizer"], str(r["n_calib"]), f"{r['calibrate_s']:.1f}", f"{r['build_s']:.1f}",
             f"{r['fp32_sps']:.2f}", f"{r['q_sps']:.2f}", f"{r['q_sps'] / r['fp32_sps']:.2f}x", r["metric"],
             f"{r['fp32']:.2f}", f"{r['quant']:.2f}", f"{r['quant'] - r['fp32']:+.2f}") for r in rows]
    w = [max(len(x[i]) for x in [hdr] + body) for i in range(len(hdr))]
    for line in [hdr, tuple("-" * k for k in w)] + body:
        print("  ".join(s.ljust(k) for s, k in zip(line, w)))
    print("\n% of the fp32 synthetic reference, quantized | index shift (evalkit/targets.py SYNTHETIC_QUANTIZED):")
    for r in rows:
        print(f"  {r['model']} {r['quantizer']}: " + ", ".join(f"{k} {a:.2f} | {b:.2f}" for k, (a, b) in r["pct"].items()))
    bert = [r for r in rows if r["model"] == "bert" and r["n_calib"] == 100]
    if bert:
        print(f"goal: BERT, 100 calibration samples in under 60 s: {bert[0]['calibrate_s']:.1f} s "
              f"({'met' if bert[0]['calibrate_s'] < 60 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
