"""RetinaNet benchmarks (issues 15, 25), CPU.

1. Images/s of the full-size MLPerf RetinaNet (ResNeXt50-32x4d FPN, 264 classes, random weights)
   at --size (800 as the reference), make_batch + forward + post-processing: the reference-exact
   default (fp32, NCHW, float32 samples) vs the fast options (channels_last, preprocess=uint8, bf16).
2. Preprocessing per image: the reference's float32 resize (default) vs preprocess=uint8, and the
   uint8 option's difference from the reference (max |diff|, share of values that differ) on
   photos (scikit-learn's sample JPEGs when installed) and generated pictures at OpenImages sizes.
3. mAP time on a synthetic log of --images (24,781 as the full set) OpenImages-MLPerf images: the
   reference way (accuracy-openimages.py: json.load of the whole log, detections json written and
   re-read by loadRes, single-process pycocotools) vs the kit (streamed log, faster-coco-eval).
   Both must give the same mAP. Goal: the kit at least 2x faster.

    .venv/bin/python bench/bench_retinanet.py [--size 800] [--n 3] [--images 24781] [--skip_speed]
        [--skip_preprocess] [--skip_map]
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


def layout_difference(size: int) -> tuple[float, float]:
    """channels_last vs the default NCHW, fp32, one picture: max |score difference| over every
    anchor and class, max |box difference| (px) over every decoded anchor box."""
    torch.manual_seed(0)
    net = rm.RetinaNet().eval()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.integers(0, 256, (1, 3, size, size)).astype(np.float32) / np.float32(255))
    out = []
    for cl in (False, True):
        m = net.to(memory_format=torch.channels_last) if cl else net
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x
        with torch.inference_mode():
            cls, reg, hw = m.head_outputs(xi)
            anchors = rm.grid_anchors((size, size), hw, "cpu")
            boxes = torch.cat([rm.decode_boxes(r[0], a) for r, a in zip(reg, anchors)])
            out.append((torch.sigmoid(torch.cat([c[0].flatten() for c in cls])), boxes))
    return (float((out[0][0] - out[1][0]).abs().max()), float((out[0][1] - out[1][1]).abs().max()))


def _mode(size: int, n: int, dtype: str, channels_last: bool, preprocess: str):
    """(net, options, samples) of one mode: the full-size net with random weights, n + 1 images."""
    torch.manual_seed(0)
    net = rm.RetinaNet().eval()
    with torch.no_grad():  # the reference's head init: prior 0.01, so a random net detects little
        net.head.classification_head.cls_logits.bias.fill_(-4.595)
    net = net.to(BENCHMARK.torch_dtype(dtype))
    opts = {"channels_last": channels_last, "preprocess": preprocess}
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    samples = [(i, rng.integers(0, 256, (3, size, size), dtype=np.uint8)) for i in range(n + 1)]
    if preprocess == "float32":  # the default samples: already /255 in float32
        samples = [(i, x.astype(np.float32) / np.float32(255)) for i, x in samples]
    return net, opts, samples


def images_per_s(size: int, n: int, modes: list[tuple]) -> list[float]:
    """Median images/s of each mode; the modes take turns image by image, so a busy shared machine
    slows them alike."""
    built = [_mode(size, n, *m) for m in modes]
    times = [[] for _ in modes]

    def one(k, s):
        net, opts, _ = built[k]
        dtype = modes[k][0]
        BENCHMARK.postprocess(BENCHMARK.forward(net, BENCHMARK.make_batch([s], "cpu", dtype, opts)), 1)

    for k, (_, _, samples) in enumerate(built):
        one(k, samples[0])  # warm-up
    for i in range(1, n + 1):
        for k, (_, _, samples) in enumerate(built):
            t = time.perf_counter()
            one(k, samples[i])
            times[k].append(time.perf_counter() - t)
    return [1.0 / float(np.median(t)) for t in times]


def _pictures(root: Path) -> list[Path]:
    """Photos when scikit-learn's sample JPEGs are there, plus generated pictures at typical
    OpenImages sizes (1024 x 683, 1024 x 768, 768 x 1024): smooth areas, edges, texture."""
    import cv2

    out = []
    try:
        import sklearn.datasets as skd
        out += sorted((Path(skd.__file__).parent / "images").glob("*.jpg"))
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(683, 1024), (768, 1024), (1024, 768)]):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([xx * 255 / w, yy * 255 / h, 128 + 60 * np.sin(xx / 23 + yy / 41)], -1)
        for _ in range(12):
            y0, x0 = int(rng.integers(0, h - 100)), int(rng.integers(0, w - 100))
            img[y0:y0 + int(rng.integers(30, 300)), x0:x0 + int(rng.integers(30, 300))] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 8, img.shape)
        p = root / f"generated_{k}.jpg"
        cv2.imwrite(str(p), np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(p)
    return out


def preprocess_table(size: int, repeat: int = 5) -> None:
    """ms per image of each preprocessing, and preprocess=uint8's difference from the reference."""
    with tempfile.TemporaryDirectory() as d:
        pics = _pictures(Path(d))
        print(f"\nPreprocessing to {size}x{size} ({len(pics)} JPEGs, best of {repeat}; decode included)")
        print(f"{'image':<28}{'HxW':>11}{'float32 ms':>12}{'uint8 ms':>10}{'max |diff|':>13}{'values differ':>15}")
        worst, shares = 0.0, []
        for p in pics:
            ms = {}
            for kind in ("float32", "uint8"):
                best = float("inf")
                for _ in range(repeat):
                    t = time.perf_counter()
                    x = oi.preprocess_file(p, size, kind)
                    best = min(best, time.perf_counter() - t)
                ms[kind] = (1e3 * best, x)
            ref, u8 = ms["float32"][1], ms["uint8"][1]
            diff = np.abs(u8.astype(np.float32) / np.float32(255) - ref)   # as the device sees it
            worst = max(worst, float(diff.max()))
            shares.append(float((diff > 0).mean()))
            import cv2
            h, w = cv2.imread(str(p)).shape[:2]
            print(f"{p.name:<28}{f'{h}x{w}':>11}{ms['float32'][0]:>12.1f}{ms['uint8'][0]:>10.1f}"
                  f"{diff.max() * 255:>9.3f}/255{100 * shares[-1]:>14.1f}%")
        print(f"preprocess=uint8 vs the reference: max |diff| {worst * 255:.3f}/255, "
              f"{100 * min(shares):.1f}-{100 * max(shares):.1f} % of values differ")


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
    ap.add_argument("--skip_preprocess", action="store_true")
    ap.add_argument("--skip_map", action="store_true")
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    if not a.skip_speed:
        modes = [("fp32, NCHW, float32 samples (default)", "fp32", False, "float32"),
                 ("fp32, channels_last", "fp32", True, "float32"),
                 ("fp32, NCHW, preprocess=uint8", "fp32", False, "uint8"),
                 ("bf16, channels_last, uint8", "bf16", True, "uint8")]
        rows = list(zip([m[0] for m in modes], images_per_s(a.size, a.n, [m[1:] for m in modes])))
        print(f"\nRetinaNet (full size, random weights) {a.size}x{a.size}, batch 1, median of {a.n} images each, "
              f"modes in turn; make_batch + forward + post-processing")
        print(f"{'mode':<40}{'images/s':>10}{'vs default':>12}")
        for name, v in rows:
            print(f"{name:<40}{v:>10.3f}{v / rows[0][1]:>11.2f}x")
        ds, db = layout_difference(a.size)
        print(f"channels_last vs NCHW (fp32, every anchor): max |score diff| {ds:.2e}, max |box diff| {db:.2e} px")
    if not a.skip_preprocess:
        preprocess_table(a.size)
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
