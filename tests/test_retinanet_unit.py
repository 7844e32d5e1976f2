"""Unit tests for vision/retinanet (CPU, a few seconds): checkpoint names, NMS vs a plain reference
loop (ties included), anchors, payload layout, our mAP vs pycocotools, checkpoint forms."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from evalkit.errors import KitError  # noqa: E402
from vision.retinanet import model as rm  # noqa: E402
from vision.retinanet import openimages as oi  # noqa: E402
from vision.retinanet.benchmark import _TINY, BENCHMARK  # noqa: E402
from vision.retinanet.checkpoint import load_state_dict  # noqa: E402


def _reference_keys(blocks=(3, 4, 6, 3)) -> list[str]:
    """The reference checkpoint's key names, spelled out independently of model.py."""
    fbn = ["weight", "bias", "running_mean", "running_var"]   # FrozenBatchNorm2d: no num_batches_tracked
    b = "backbone.body."
    keys = [f"{b}conv1.weight"] + [f"{b}bn1.{s}" for s in fbn]
    for li, n in enumerate(blocks, 1):
        for j in range(n):
            p = f"{b}layer{li}.{j}"
            for c in (1, 2, 3):
                keys += [f"{p}.conv{c}.weight"] + [f"{p}.bn{c}.{s}" for s in fbn]
            if j == 0:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{s}" for s in fbn]
    for kind in ("inner_blocks", "layer_blocks"):
        for i in range(3):
            keys += [f"backbone.fpn.{kind}.{i}.weight", f"backbone.fpn.{kind}.{i}.bias"]
    keys += [f"backbone.fpn.extra_blocks.{p}.{s}" for p in ("p6", "p7") for s in ("weight", "bias")]
    for head, last in (("classification_head", "cls_logits"), ("regression_head", "bbox_reg")):
        for i in (0, 2, 4, 6):
            keys += [f"head.{head}.conv.{i}.weight", f"head.{head}.conv.{i}.bias"]
        keys += [f"head.{head}.{last}.weight", f"head.{head}.{last}.bias"]
    return keys


def test_real_architecture_names_and_shapes():
    sd = rm.RetinaNet().state_dict()
    assert sorted(sd) == sorted(_reference_keys())
    assert tuple(sd["backbone.body.layer1.0.conv2.weight"].shape) == (128, 4, 3, 3)  # 32 groups x 4
    assert tuple(sd["backbone.body.layer4.2.conv3.weight"].shape) == (2048, 1024, 1, 1)
    assert tuple(sd["head.classification_head.cls_logits.weight"].shape) == (9 * 264, 256, 3, 3)
    assert tuple(sd["backbone.fpn.inner_blocks.0.weight"].shape) == (256, 512, 1, 1)
    assert rm.Spec.from_state_dict(sd) == rm.Spec()
    tiny = rm.RetinaNet(rm.Spec(**_TINY)).state_dict()
    assert sorted(tiny) == sorted(_reference_keys())  # tiny widths, the real names
    assert rm.Spec.from_state_dict(tiny) == rm.Spec(**_TINY)


def test_anchors_match_the_reference_generator():
    a = rm.base_anchors((32, 40, 50))
    assert a.shape == (9, 4)
    assert a[1].tolist() == [-20.0, -20.0, 20.0, 20.0] or a[4].tolist() == [-20.0, -20.0, 20.0, 20.0]
    # ratio-major: first three are aspect 0.5 (h/w = 0.5), square 32 is row 3
    assert a[3].tolist() == [-16.0, -16.0, 16.0, 16.0]
    # the reference's integer strides at 800: 8, 16, 32, 800 // 13 = 61, 800 // 7 = 114
    levels = rm.grid_anchors((800, 800), [(100, 100), (50, 50), (25, 25), (13, 13), (7, 7)], "cpu")
    assert [int(lv[9, 0] - lv[0, 0]) for lv in levels] == [8, 16, 32, 61, 114]
    assert levels[0].shape == (100 * 100 * 9, 4)


def _reference_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> list[int]:
    """Plain per-class greedy NMS as torchvision documents batched_nms: boxes in descending score
    order (a stable sort: ties keep index order), each kept box drops later same-class boxes with
    IoU > iou; IoU in float32 without +1. Result by descending score."""
    b = boxes.astype(np.float32)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    removed, keep = set(), []
    for n, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[n + 1:]:
            if labels[j] != labels[i] or j in removed:
                continue
            xx1, yy1 = max(b[i, 0], b[j, 0]), max(b[i, 1], b[j, 1])
            xx2, yy2 = min(b[i, 2], b[j, 2]), min(b[i, 3], b[j, 3])
            inter = np.float32(max(np.float32(0), xx2 - xx1)) * np.float32(max(np.float32(0), yy2 - yy1))
            ai = (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1])
            aj = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            if inter / (ai + aj - inter) > np.float32(iou):
                removed.add(j)
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_nms_equals_reference_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[10:20] = boxes[0]                      # identical boxes
    scores = rng.choice(np.linspace(0.05, 1, 12), n).astype(np.float32)  # many exact score ties
    labels = rng.integers(0, 4, n)
    got = rm.nms_torch(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5)
    assert got.tolist() == _reference_nms(boxes, scores, labels, 0.5)
    assert rm.nms_torch(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).numel() == 0


def test_postprocess_payload_layout():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 128.0, 128.0]])
    dets = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.3]), "labels": torch.tensor([263, 5])}]
    (pl,) = BENCHMARK.postprocess({"dets": dets, "idx": [7], "size": (128, 128)}, 1)
    assert pl.dtype == np.float32 and pl.size == 14
    g = pl.reshape(-1, 7)
    # [qsl_idx, ymin, xmin, ymax, xmax, score, label], normalised by the input size
    assert g[0].tolist() == pytest.approx([7, 20 / 128, 10 / 128, 60 / 128, 30 / 128, 0.9, 263])
    empty = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert BENCHMARK.postprocess({"dets": empty, "idx": [0], "size": (128, 128)}, 1)[0].size == 0


def _random_coco(rng, n_images=40, n_cats=6):
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "height": int(rng.integers(100, 400)),
               "width": int(rng.integers(100, 400))} for i in range(n_images)]
    anns, payloads = [], []
    for q, im in enumerate(images):
        k = int(rng.integers(0, 6))
        for _ in range(k):
            x, y = rng.uniform(0, 0.7, 2)
            w, h = rng.uniform(0.05, 0.3, 2)
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": int(rng.integers(0, n_cats)),
                         "bbox": [x * im["width"], y * im["height"], w * im["width"], h * im["height"]],
                         "area": w * im["width"] * h * im["height"], "iscrowd": int(rng.random() < 0.1)})
        m = int(rng.integers(0, 8))
        g = np.zeros((m, 7), np.float32)
        for r in range(m):
            y0, x0 = rng.uniform(0, 0.7, 2)
            g[r] = [q, y0, x0, y0 + rng.uniform(0.05, 0.3), x0 + rng.uniform(0.05, 0.3), rng.uniform(0.05, 1),
                    rng.integers(0, n_cats)]
        payloads.append((q, g.reshape(-1)))
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in range(n_cats)]}
    return gt, payloads


def test_faster_evaluator_equals_pycocotools():
    rng = np.random.default_rng(3)
    gt, payloads = _random_coco(rng)
    # make some detections true positives: copy a few ground-truth boxes in
    for a in gt["annotations"][::3]:
        q = a["image_id"] - 1
        im = gt["images"][q]
        x, y, w, h = a["bbox"]
        extra = np.array([q, y / im["height"], x / im["width"], (y + h) / im["height"], (x + w) / im["width"],
                          rng.uniform(0.3, 1), a["category_id"]], np.float32)
        payloads[q] = (q, np.concatenate([payloads[q][1], extra]))
    dets, ids, _, _ = oi.detections_from_pairs(payloads, gt["images"])
    ref = oi.coco_map(gt, dets, ids, "pycocotools")
    assert 0.05 < ref < 1.0
    for workers in (1, 2, 4):  # categories split over processes, joined before the mean
        assert abs(oi.coco_map(gt, dets, ids, "faster", workers=workers) - ref) < 1e-6, workers
    # a group of categories without any detection
    only0 = dets[dets[:, 6] == 0]
    assert abs(oi.coco_map(gt, only0, ids, "faster", workers=3) - oi.coco_map(gt, only0, ids, "pycocotools")) < 1e-6


def test_score_checks_groups_of_seven(tmp_path):
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 10, "width": 10}], "annotations": [],
          "categories": [{"id": 0, "name": "x"}]}
    with pytest.raises(KitError, match="qsl_idx 0 .*groups of 7"):
        oi.detections_from_pairs([(0, np.zeros(8, np.float32))], gt["images"])
    dets, ids, none, mism = oi.detections_from_pairs([(0, np.zeros(0, np.float32))], gt["images"])
    assert dets.shape == (0, 7) and ids == [1] and none == 1 and mism == 0


def test_checkpoint_forms(tmp_path):
    """A bare state dict, a training checkpoint {"model": ...} and the reference's whole pickled
    model (classes from a package the kit does not have) all give the same state dict."""
    import types

    torch.manual_seed(0)
    net = rm.RetinaNet(rm.Spec(**_TINY))
    sd = net.state_dict()
    torch.save(sd, tmp_path / "bare.pth")
    torch.save({"model": sd, "epoch": 3}, tmp_path / "train.pth")
    # the reference's classes by the names its pickle carries (the training repo's `model` package,
    # torchvision's FrozenBatchNorm2d): modules made for the save, then removed
    ref = {rm.RetinaNet: ("model.retinanet", "RetinaNet"), rm.Head: ("model.retinanet", "RetinaNetHead"),
           rm.ClassificationHead: ("model.retinanet", "RetinaNetClassificationHead"),
           rm.RegressionHead: ("model.retinanet", "RetinaNetRegressionHead"),
           rm.Backbone: ("model.backbone_utils", "BackboneWithFPN"), rm.Body: ("model.utils", "IntermediateLayerGetter"),
           rm.Bottleneck: ("model.resnet", "Bottleneck"), rm.FPN: ("model.feature_pyramid_network", "FeaturePyramidNetwork"),
           rm.LastLevelP6P7: ("model.feature_pyramid_network", "LastLevelP6P7"),
           rm.FrozenBatchNorm2d: ("torchvision.ops.misc", "FrozenBatchNorm2d")}
    mods = {m: types.ModuleType(m) for _, (mod, _) in ref.items() for m in
            [".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 2)]}
    subs = {}
    for cls, (mod, name) in ref.items():
        subs[cls] = type(name, (cls,), {"__module__": mod, "__qualname__": name})
        setattr(mods[mod], name, subs[cls])
    saved = {m: sys.modules.get(m) for m in mods}
    sys.modules.update(mods)
    try:
        for m in net.modules():
            m.__class__ = subs.get(type(m), type(m))
        del net.spec  # the kit's own description of the net: the reference's model has none
        torch.save(net, tmp_path / "whole.pth")
    finally:
        for m, old in saved.items():
            if old is None:
                del sys.modules[m]
            else:
                sys.modules[m] = old
    for name in ("bare.pth", "train.pth", "whole.pth"):
        got = load_state_dict(tmp_path / name)
        assert sorted(got) == sorted(sd), name
        assert all(torch.equal(got[k], sd[k]) for k in sd), name
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(KitError, match="junk.pth"):
        load_state_dict(tmp_path / "junk.pth")


def test_load_model_from_tiny_checkpoint(tmp_path):
    torch.manual_seed(1)
    torch.save(rm.RetinaNet(rm.Spec(**_TINY)).state_dict(), tmp_path / "resnext50_32x4d_fpn.pth")
    m = BENCHMARK.load_model(tmp_path, "cpu", "bf16", {})
    assert m.spec == rm.Spec(**_TINY) and m.head.classification_head.cls_logits.weight.dtype == torch.bfloat16
    x = torch.rand(1, 3, 64, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only add overhead
    try:
        with torch.inference_mode():
            out = m(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(threads)
    assert set(out[0]) == {"boxes", "scores", "labels"}
    sd = rm.RetinaNet(rm.Spec(**_TINY)).state_dict()
    del sd["head.regression_head.bbox_reg.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(KitError, match="bad.pth"):
        BENCHMARK.load_model(tmp_path / "bad.pth", "cpu", "fp32", {})
