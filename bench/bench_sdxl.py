"""SDXL benchmarks (issue 16): tiny-pipeline images/s fp32 vs bf16 on CPU, and the scorer's
peak memory on a synthetic log of full-size 1024x1024 images.

    .venv/bin/python bench/bench_sdxl.py [--threads 1] [--gen_n 8] [--score_n 32 64] [--side 1024]

Generation: the synthetic set's pipeline (20 Euler steps, guidance 8, 32x32 images),
batch 4, after one warm-up batch. Scoring: CLIP ViT-B/32 and the FID Inception at their
real sizes (random weights, the real formats), a LoadGen-format log of random images, one
fresh process per log size: peak RSS (VmHWM) and the Python/numpy peak (tracemalloc).
A full 5,000-image log is 31.5 GB; the peak must not grow with the log, so two sizes are
measured (both at least one full scoring batch) and the growth per image reported.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bench_generation(tmp: Path, n: int, threads: int) -> dict:
    import torch

    from text_to_image.sdxl import synthetic
    from text_to_image.sdxl.benchmark import BENCHMARK as B

    torch.set_num_threads(threads)
    out = tmp / "synth"
    synthetic.synthesize(B, out, max(n, synthetic.MIN_N), 0)
    ds = B.open_dataset(out / "dataset", out / "model")
    samples = [ds.load(i) for i in range(n)]
    res = {}
    for dt in ("fp32", "bf16"):
        gen = B.load_model(out / "model", "cpu", dt, {})
        B.postprocess(B.forward(gen, B.make_batch(samples[:4], "cpu", dt, {})), 4)  # warm-up
        t = time.perf_counter()
        for k in range(0, n, 4):
            B.postprocess(B.forward(gen, B.make_batch(samples[k:k + 4], "cpu", dt, {})), len(samples[k:k + 4]))
        res[dt] = round(n / (time.perf_counter() - t), 3)
    return {"images_per_s": res, "image_side": synthetic.IMAGE_SIDE, "batch": 4, "threads": threads}


def real_size_scoring_set(root: Path, n: int, side: int) -> None:
    """captions, val2014.npz (2048-d), a ViT-B/32-sized CLIPModel and the full FID Inception."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from text_to_image.sdxl import fid, synthetic
    from text_to_image.sdxl.benchmark import CAPTION_COLUMNS, CAPTIONS, CLIP_DIR, INCEPTION, STATISTICS

    ds, model = root / "dataset", root / "model"
    (ds / CAPTIONS).parent.mkdir(parents=True)
    rows = ["\t".join(CAPTION_COLUMNS)] + [f"{i}\t{i}\tA photo of object number {i} on a table.\t{side}\t{side}"
                                           f"\tf{i}.jpg\turl" for i in range(n)]
    (ds / CAPTIONS).write_text("\n".join(rows) + "\n")
    net = fid.build_inception(1)
    (ds / INCEPTION).mkdir(parents=True)
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")},
               ds / INCEPTION / fid.INCEPTION_FILE)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2048, 2048)) / 45
    np.savez(ds / STATISTICS, mu=rng.uniform(0, 1, 2048), sigma=a @ a.T)
    synthetic.write_tokenizer(ds / CLIP_DIR, [], pad="<|endoftext|>")
    cfg = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                                      num_attention_heads=8, max_position_embeddings=77, bos_token_id=49406,
                                      eos_token_id=49407, pad_token_id=49407),
                     vision_config=dict(image_size=224, patch_size=32, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12), projection_dim=512)
    CLIPModel(cfg).save_pretrained(ds / CLIP_DIR)
    (model / "unet").mkdir(parents=True)
    (model / "vae").mkdir()
    (model / "model_index.json").write_text("{}")
    (model / "unet" / "config.json").write_text(json.dumps({"sample_size": side // 8}))
    (model / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512]}))


SCORE_SCRIPT = textwrap.dedent("""
    import json, sys, time, tracemalloc
    import numpy as np
    from pathlib import Path
    from evalkit.accuracy_log import Writer
    from evalkit.scoring import score_log
    from text_to_image.sdxl.benchmark import BENCHMARK
    root, n, side = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

    def hwm_mb():
        # VmHWM: this process image's peak RSS (ru_maxrss would include the parent's from before exec)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    log = root / "log.json"
    t = time.perf_counter()
    with open(log, "w") as f:
        w = Writer(f)
        for i in range(n):
            img = np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)
            w.write({"seq_id": i, "qsl_idx": i, "data": img.tobytes().hex().upper()})
        w.close()
    write_s = time.perf_counter() - t
    rss0 = hwm_mb()
    tracemalloc.start()
    t = time.perf_counter()
    m = score_log(BENCHMARK, log, root / "dataset", n, root / "model")
    score_s = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    size = log.stat().st_size
    log.unlink()
    print(json.dumps({"n": n, "log_gb": round(size / 1e9, 3), "write_s": round(write_s, 1),
                      "score_s": round(score_s, 1), "peak_rss_mb": hwm_mb(),
                      "rss_before_scoring_mb": rss0, "tracemalloc_peak_mb": round(peak / 1e6, 1),
                      "images": m["images"]}))
""")


def bench_scoring(tmp: Path, sizes: list[int], side: int, threads: int) -> list[dict]:
    root = tmp / "score"
    real_size_scoring_set(root, max(sizes), side)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    out = []
    for n in sizes:
        cp = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(root), str(n), str(side)], env=env,
                            capture_output=True, text=True)
        if cp.returncode:
            raise SystemExit(cp.stderr)
        out.append(json.loads(cp.stdout.strip().splitlines()[-1]))
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gen_n", type=int, default=8)
    ap.add_argument("--score_n", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--skip_generation", action="store_true")
    ap.add_argument("--skip_scoring", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {}
        if not a.skip_generation:
            result["generation"] = bench_generation(tmp, a.gen_n, a.threads)
            print(json.dumps(result["generation"]), flush=True)
        if a.skip_scoring:
            return
        runs = bench_scoring(tmp, a.score_n, a.side, a.threads)
        lo, hi = runs[0], runs[-1]
        per_image = (hi["peak_rss_mb"] - lo["peak_rss_mb"]) / max(1, hi["n"] - lo["n"])
        result["scoring"] = {"runs": runs, "rss_growth_mb_per_image": round(per_image, 3),
                             "extrapolated_5000_peak_rss_mb": round(hi["peak_rss_mb"] + per_image * (5000 - hi["n"]))}
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
