"""Synthetic OpenImages-MLPerf set: structured JPEGs, a tiny random RetinaNet with the real key
names, and annotations = the model's own fp32 batch-1 detections (so truth scores mAP 100 %).

A random detector finds nothing (every score sits near the 0.01 prior) or everything, so the
generator calibrates it: frozen-BN statistics from calibration images, class logits standardised
per channel and shifted so about _CANDIDATES anchors per image pass the 0.05 threshold.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

from . import openimages as oi
from .benchmark import _CALIB_IMAGES, _CANDIDATES, _SYNTH_SIZE, _TINY, CHECKPOINT, MODEL_CONFIG

_MIN_DETS, _MAX_DETS = 1, 100
_MAX_ATTEMPTS = 40
_MARGIN = 1e-4              # relative distance to a threshold that a last-bit difference cannot cross
_IOU_MARGIN = 2e-3          # IoU distance to 0.5: covers a flipped float32 rounding of an offset box


def _image(rng):
    """Objects on a plain background: a smooth gradient, 1-4 solid rectangles or ellipses, light
    noise. Texture is the same everywhere but at the objects, so the (zero-sum) detector fires on
    them and a picture's detections sit where its objects are."""
    from PIL import Image

    w, h = (int(v) for v in rng.integers(160, 321, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = rng.uniform(80, 175, 3).astype(np.float32)
    img = np.broadcast_to(bg, (h, w, 3)).copy()
    for _ in range(int(rng.integers(1, 5))):
        bw, bh = rng.uniform(0.15, 0.45) * w, rng.uniform(0.15, 0.45) * h
        cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
        if rng.random() < 0.5:
            m = (np.abs(xx - cx) <= bw / 2) & (np.abs(yy - cy) <= bh / 2)
        else:
            m = ((xx - cx) / (bw / 2)) ** 2 + ((yy - cy) / (bh / 2)) ** 2 <= 1
        # one contrast for every object: a random net's response grows with contrast, and equal
        # contrast keeps the detection count per picture in a narrow band
        d = rng.normal(size=3)
        img[m] = bg + np.float32(70.0) * (d / np.linalg.norm(d)).astype(np.float32)
    img += rng.normal(0, 3, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _calibrate(model, x):
    """Fit the tiny model to the synthetic images; x: (N, 3, S, S) float32 in [0, 1]."""
    import torch

    from .model import FrozenBatchNorm2d

    bns = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    originals = {}

    def calibrating(bn):
        def fwd(t):  # statistics of this input become the frozen statistics
            bn.running_mean.copy_(t.mean(dim=(0, 2, 3)))
            bn.running_var.copy_(t.var(dim=(0, 2, 3), unbiased=False))
            return originals[bn](t)
        return fwd

    with torch.no_grad():
        for bn in bns:
            originals[bn] = bn.forward
            bn.forward = calibrating(bn)
        model.head_outputs(x)
        for bn in bns:
            del bn.forward  # back to the class's forward
        # box deltas: small but not zero, so boxes are not just the anchors
        cls, reg, _ = model.head_outputs(x)
        rh = model.head.regression_head.bbox_reg
        sd = torch.cat([r.reshape(-1, 4) for r in reg]).std()
        rh.weight.mul_(0.15 / sd)
        rh.bias.zero_()
        # class logits: standardise every output channel (anchor x class) over the calibration set,
        # then put the 0.05 threshold _CANDIDATES anchors below each image's best
        head = model.head.classification_head
        # zero-sum 3x3 kernels: a uniform feature map (a picture's global colour) gives no
        # response, so detections follow local structure and their count varies less per picture
        head.cls_logits.weight.sub_(head.cls_logits.weight.mean(dim=(2, 3), keepdim=True))
        cls, reg, _ = model.head_outputs(x)
        k = head.num_classes
        per_channel = []
        for c in cls:  # (N, HWA, K) -> (N * HW, A * K) in the conv's channel order
            per_channel.append(c.reshape(c.shape[0], -1, model.spec.num_anchors * k).reshape(-1, model.spec.num_anchors * k))
        allc = torch.cat(per_channel)
        mu, sd = allc.mean(0), allc.std(0) + 1e-6
        z = [((c.reshape(c.shape[0], -1, model.spec.num_anchors * k) - mu) / sd).reshape(c.shape[0], -1)
             for c in cls]
        z = torch.cat(z, dim=1)  # (N, all scores)
        top = z.topk(_CANDIDATES + 1, dim=1).values
        t = float(top[:, -1].median())
        s = 4.0 / max(float((top[:, 0] - top[:, -1]).median()), 1e-3)
        prior = math.log(0.05 / 0.95)
        w = head.cls_logits.weight
        w.mul_((s / sd).view(-1, 1, 1, 1))
        head.cls_logits.bias.copy_(s * (head.cls_logits.bias - mu) / sd - s * t + prior)


def _fragile(bench, net, x) -> bool:
    """True when a last-bit difference (another thread count, batch or kernel) could change the
    picture's detections: a score next to the 0.05 threshold, a level at the top-k cut, or two
    same-class candidates with IoU next to the NMS threshold, exact or on the label-offset
    coordinates the reference's NMS compares (whose float32 rounding a last bit can flip)."""
    import torch

    from .model import NMS_THRESH, SCORE_THRESH, TOPK_CANDIDATES, _iou_rows, decode_boxes, grid_anchors

    with torch.inference_mode():
        xb = bench.make_batch([(0, x)], "cpu", "fp32", {})["images"]
        cls, reg, hw = net.head_outputs(xb)
        anchors = grid_anchors(tuple(xb.shape[-2:]), hw, xb.device)
        boxes, labels = [], []
        for c, r, a in zip(cls, reg, anchors):
            sc = torch.sigmoid(c[0].float())
            if bool((((sc - SCORE_THRESH).abs()) < _MARGIN * SCORE_THRESH).any()):
                return True
            keep = torch.nonzero(sc > SCORE_THRESH)
            if keep.shape[0] >= TOPK_CANDIDATES:
                return True
            # clipped to the (square) image as post-processing does
            boxes.append(decode_boxes(r[0].float()[keep[:, 0]], a[keep[:, 0]]).clamp(0, xb.shape[-1]))
            labels.append(keep[:, 1])
        b, lab = torch.cat(boxes), torch.cat(labels)
        if not lab.numel():
            return False
        shifted = (b + lab.to(b)[:, None] * (b.max() + 1)).numpy()
        b, lab = b.numpy(), lab.numpy()
        for k in np.unique(lab):  # every level's candidates meet in one NMS
            for bk in (b[lab == k], shifted[lab == k]):
                if (np.abs(_iou_rows(bk) - NMS_THRESH) < _IOU_MARGIN).any():
                    return True
    return False


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only add overhead (and on a busy machine, a lot)
    try:
        return _write(bench, out, n, seed)
    finally:
        torch.set_num_threads(threads)


def _write(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import torch
    from torch import nn

    from .model import RetinaNet, Spec

    ds, md = out / "dataset", out / "model"
    (ds / oi.IMAGES).mkdir(parents=True, exist_ok=True)
    (ds / oi.ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    md.mkdir(parents=True, exist_ok=True)
    size = _SYNTH_SIZE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RetinaNet(Spec(**_TINY)).eval()
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias) if m.bias is not None else None
    calib = []
    for k in range(_CALIB_IMAGES):
        p = ds / f"_calib_{k}.jpg"
        _image(np.random.default_rng([seed, 1, k])).save(p, "JPEG", quality=90)
        calib.append(oi.preprocess_file(p, size))
        p.unlink()
    _calibrate(model, torch.from_numpy(np.stack(calib)))   # float32 in [0, 1], the default samples
    torch.save(model.state_dict(), md / CHECKPOINT)
    (md / MODEL_CONFIG).write_text(json.dumps({"image_size": size}) + "\n")
    del model

    # ground truth: the saved checkpoint through the real load path, fp32, batch 1
    net = bench.load_model(md, "cpu", "fp32", {})
    from evalkit.synth import distinct, link_copy

    images, payloads = [], []
    n_all, n = n, distinct(n)  # pictures drawn and detected; beyond them the set repeats them (scale variant)
    for i in range(n):
        name = f"{seed:04d}{i:08x}.jpg"
        # a random detector's count swings with the picture's global look: redraw the picture
        # until it has a few detections, never more than COCO's 100 per image
        for attempt in range(_MAX_ATTEMPTS):
            img = _image(np.random.default_rng([seed, 2, i, attempt]))
            img.save(ds / oi.IMAGES / name, "JPEG", quality=90)
            x = oi.preprocess_file(ds / oi.IMAGES / name, size)
            y = bench.forward(net, bench.make_batch([(i, x)], "cpu", "fp32", {}))
            pl = bench.postprocess(y, 1)[0]
            if _MIN_DETS <= pl.size // 7 <= _MAX_DETS and not _fragile(bench, net, x):
                break
        else:
            raise KitError(f"synthetic retinanet: no picture with {_MIN_DETS}..{_MAX_DETS} detections for image {i} "
                           f"in {_MAX_ATTEMPTS} tries (seed {seed}); try another seed.")
        images.append({"id": i + 1, "file_name": name, "height": img.height, "width": img.width,
                       "coco_url": f"synthetic://{name}"})
        payloads.append(pl)
    for k in range(n, n_all):  # image k is a copy of image k % n under its own name and id
        src = images[k % n]
        name = f"{seed:04d}{k:08x}.jpg"
        link_copy(ds / oi.IMAGES / src["file_name"], ds / oi.IMAGES / name)
        images.append(dict(src, id=k + 1, file_name=name, coco_url=f"synthetic://{name}"))
        payloads.append(payloads[k % n])

    anns = []
    for i, pl in enumerate(payloads):
        if pl.size == 0:
            continue
        im = images[i]
        d = pl.reshape(-1, 7)
        # the scorer's own conversion (normalised -> pixels, float32), so truth boxes match exactly
        rows, _, _, _ = oi.detections_from_pairs([(i, pl)], images)
        for r in rows:
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(r[6]),
                         "bbox": [float(r[1]), float(r[2]), float(r[3]), float(r[4])],
                         "area": float(r[3]) * float(r[4]), "iscrowd": 0})
        assert d.shape[0] == rows.shape[0]
    gt = {"info": {"description": "evalkit synthetic OpenImages-MLPerf"}, "images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"class_{c}"} for c in range(Spec().num_classes)]}
    (ds / oi.ANNOTATIONS).write_text(json.dumps(gt))
    return payloads
