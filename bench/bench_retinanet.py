"""RetinaNet benchmarks (issue 15), CPU.

1. Images/s of the full-size MLPerf RetinaNet (ResNeXt50-32x4d FPN, 264 classes, random weights)
   at --size (800 as the reference): fp32 NCHW vs bf16 + channels_last, forward + post-processing.
2. mAP time on a synthetic log of --images (24,781 as the full set) OpenImages-MLPerf images: the
   reference way (accuracy-openimages.py: json.load of the whole log, detections json written and
   re-read by loadRes, single-process pycocotools) vs the kit (streamed log, faster-coco-eval).
   Both must give the same mAP. Goal: the kit at least 2x faster.

    .venv/bin/python bench/bench_retinanet.py [--size 800] [--n 3] [--images 24781] [--skip_speed]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from evalkit.scoring import score_log  # noqa: E402
from vision.retinanet import model as rm  # noqa: E402
from vision.retinanet import openimages as oi  # noqa: E402
from vision.retinanet.benchmark import BENCHMARK  # noqa: E402


def images_per_s(size: int, n: int, dtype: str, channels_last: bool) -> float:
    torch.manual_seed(0)
    net = rm.RetinaNet().eval()
    with torch.no_grad():  # the reference's head init: prior 0.01, so a random net detects little
        net.head.classification_head.cls_logits.bias.fill_(-4.595)
    net = net.to(BENCHMARK.torch_dtype(dtype))
    opts = {"channels_last": channels_last}
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    samples = [(i, rng.integers(0, 256, (3, size, size), dtype=np.uint8)) for i in range(n + 1)]
    BENCHMARK.postprocess(BENCHMARK.forward(net, BENCHMARK.make_batch(samples[:1], "cpu", dtype, opts)), 1)  # warm-up
    t0 = time.perf_counter()
    for s in samples[1:]:
        BENCHMARK.postprocess(BENCHMARK.forward(net, BENCHMARK.make_batch([s], "cpu", dtype, opts)), 1)
    return n / (time.perf_counter() - t0)


def synthetic_log(root: Path, n_images: int, seed: int = 0) -> Path:
    """annotations/openimages-mlperf.json with ~5 boxes per image and a LoadGen accuracy log whose
    detections are jittered copies of them plus false positives (~12 per image)."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    (root / oi.ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    log = root / "mlperf_log_accuracy.json"
    with open(log, "w") as f:
        f.write("[\n")
        for q in range(n_images):
            h, w = int(rng.integers(300, 1024)), int(rng.integers(300, 1024))
            images.append({"id": q + 1, "file_name": f"{q:08x}.jpg", "height": h, "width": w, "coco_url": ""})
            k = int(rng.integers(1, 10))
            xy = rng.uniform(0, 0.7, (k, 2))
            wh = rng.uniform(0.05, 0.3, (k, 2))
            cats = rng.integers(0, 264, k)
            for j in range(k):
                anns.append({"id": len(anns) + 1, "image_id": q + 1, "category_id": int(cats[j]),
                             "bbox": [xy[j, 0] * w, xy[j, 1] * h, wh[j, 0] * w, wh[j, 1] * h],
                             "area": wh[j, 0] * w * wh[j, 1] * h, "iscrowd": 0})
            # detections: jittered true boxes + false positives, [q, ymin, xmin, ymax, xmax, score, label]
            jit = rng.normal(0, 0.01, (k, 4))
            tp = np.stack([np.full(k, q), xy[:, 1] + jit[:, 0], xy[:, 0] + jit[:, 1], xy[:, 1] + wh[:, 1] + jit[:, 2],
                           xy[:, 0] + wh[:, 0] + jit[:, 3], rng.uniform(0.2, 1, k), cats], 1)
            m = int(rng.integers(0, 10))
            fy, fx = rng.uniform(0, 0.7, (2, m))
            fp = np.stack([np.full(m, q), fy, fx, fy + rng.uniform(0.05, 0.3, m), fx + rng.uniform(0.05, 0.3, m),
                           rng.uniform(0.05, 0.8, m), rng.integers(0, 264, m)], 1)
            d = np.concatenate([tp, fp]).astype(np.float32)
            d = d[np.argsort(-d[:, 5], kind="stable")]
            f.write(("" if q == 0 else ",\n") + '{ "seq_id" : %d, "qsl_idx" : %d, "data" : "%s" }'
                    % (q, q, d.reshape(-1).tobytes().hex().upper()))
        f.write("\n]\n")
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in range(264)]}
    (root / oi.ANNOTATIONS).write_text(json.dumps(gt))
    return log


def reference_map(root: Path, log: Path) -> float:
    """accuracy-openimages.py's steps, in-process (its loop, file round trip and pycocotools)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(root / oi.ANNOTATIONS))
        results = json.load(open(log))
        detections, image_ids, seen = [], set(), set()
        image_map = coco_gt.dataset["images"]
        for j in results:
            idx = j["qsl_idx"]
            if idx in seen:
                continue
            seen.add(idx)
            data = np.frombuffer(bytes.fromhex(j["data"]), np.float32)
            if len(data) < 7:
                image_ids.add(image_map[idx]["id"])
                continue
            for i in range(0, len(data), 7):
                _, ymin, xmin, ymax, xmax, score, label = data[i:i + 7]
                image = image_map[idx]
                h, w = image["height"], image["width"]
                ymin, xmin, ymax, xmax = ymin * h, xmin * w, ymax * h, xmax * w
                detections.append({"image_id": image["id"], "category_id": int(label),
                                   "bbox": [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)],
                                   "score": float(score)})
                image_ids.add(image["id"])
        out = root / "openimages-results.json"
        with open(out, "w") as fp:
            json.dump(detections, fp, sort_keys=True, indent=4)
        coco_dt = coco_gt.loadRes(str(out))
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return 100.0 * ev.stats[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--n", type=int, default=3, help="timed images per mode")
    ap.add_argument("--images", type=int, default=24781)
    ap.add_argument("--skip_speed", action="store_true")
    ap.add_argument("--skip_map", action="store_true")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    if not a.skip_speed:
        rows = [("fp32, NCHW", images_per_s(a.size, a.n, "fp32", False)),
                ("bf16, channels_last", images_per_s(a.size, a.n, "bf16", True))]
        print(f"\nRetinaNet (full size, random weights) {a.size}x{a.size}, batch 1, {a.n} images each")
        print(f"{'mode':<22}{'images/s':>10}{'vs fp32':>9}")
        for name, v in rows:
            print(f"{name:<22}{v:>10.3f}{v / rows[0][1]:>8.2f}x")
    if not a.skip_map:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            t = time.perf_counter()
            log = synthetic_log(root, a.images)
            print(f"\nmAP on a synthetic log of {a.images} images ({log.stat().st_size / 1e6:.0f} MB; "
                  f"made in {time.perf_counter() - t:.0f} s)")
            orig = oi.coco_map
            oi.coco_map = lambda *x, **k: orig(*x, **{**k, "workers": 1})
            t = time.perf_counter()
            ours1 = score_log(BENCHMARK, log, root, a.images)["mAP"]
            t_ours1 = time.perf_counter() - t
            oi.coco_map = orig
            t = time.perf_counter()
            ours = score_log(BENCHMARK, log, root, a.images)["mAP"]
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            ref = reference_map(root, log)
            t_ref = time.perf_counter() - t
            print(f"{'evaluator':<44}{'seconds':>9}{'mAP %':>12}")
            print(f"{'reference (json.load + pycocotools, 1 proc)':<44}{t_ref:>9.1f}{ref:>12.6f}")
            print(f"{'kit (streamed log + faster-coco-eval, 1 proc)':<44}{t_ours1:>9.1f}{ours1:>12.6f}")
            print(f"{'kit (categories over ' + str(min(os.cpu_count() or 1, 8)) + ' procs)':<44}{t_ours:>9.1f}{ours:>12.6f}")
            print(f"speed-up {t_ref / t_ours1:.1f}x (1 proc), {t_ref / t_ours:.1f}x; "
                  f"|mAP difference| = {max(abs(ours - ref), abs(ours1 - ref)):.2e} (percentage points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
