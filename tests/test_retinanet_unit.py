"""Unit tests for vision/retinanet (CPU, a few seconds): checkpoint names, NMS and preprocessing
vs the reference's rules written out here (offsets, ties, float32 resize), anchors, layout, payload
layout, our mAP vs pycocotools, checkpoint forms."""
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

from conftest import modules_installed  # noqa: E402
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


# --- NMS: the reference's batched_nms (torchvision's, as the training repo's model/boxes.py calls it) ---
def _reference_kernel_nms(b: np.ndarray, s: np.ndarray, iou: float) -> list[int]:
    """torchvision's CPU nms kernel (>= 0.12), written from its rules: boxes visited by a stable
    descending sort of the scores (ties: lower index first); every kept box drops each later box
    whose IoU > iou; the IoU in the boxes' float32, no +1, as
    inter / (area_kept + area_other - inter), compared with the threshold as a double."""
    n = len(s)
    order = sorted(range(n), key=lambda i: (-float(s[i]), i))
    areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])          # float32, one tensor op in the kernel
    zero = np.float32(0)
    suppressed, keep = [False] * n, []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            if suppressed[j]:
                continue
            w = max(zero, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(zero, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                ovr = inter / (areas[i] + areas[j] - inter)
            if float(ovr) > iou:
                suppressed[j] = True
    return keep


def _reference_batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> list[int]:
    """The reference's batched_nms, from its rules: more than 4,000 coordinates (1,000 boxes):
    one nms per class, the kept indices in ascending order, then ordered by torch's default (not
    stable) descending sort of their scores; else the coordinate trick: every box shifted by
    label * (max coordinate + 1) in float32, one nms over all of them."""
    b, s = boxes.astype(np.float32), scores.astype(np.float32)
    if b.size > 4000:
        mask = np.zeros(len(s), dtype=bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            mask[idx[_reference_kernel_nms(b[idx], s[idx], iou)]] = True
        kept = np.flatnonzero(mask)
        return kept[torch.sort(torch.from_numpy(s[kept]), descending=True)[1].numpy()].tolist()
    if not len(s):
        return []
    offsets = labels.astype(np.float32) * (b.max() + np.float32(1))
    return _reference_kernel_nms(b + offsets[:, None], s, iou)


def _kit_nms(boxes, scores, labels) -> list[int]:
    return rm.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels),
                          rm.NMS_THRESH).tolist()


@pytest.mark.parametrize("seed", range(4))
def test_nms_equals_the_reference_rule_with_ties(seed):
    """Up to 1,000 boxes (the coordinate trick): ties, identical boxes, several classes."""
    rng = np.random.default_rng(seed)
    n = 300
    xy = rng.uniform(0, 700, (n, 2))
    wh = rng.uniform(5, 100, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[10:20] = boxes[0]                      # identical boxes
    boxes -= np.float32(60 * (seed % 2))          # negative coordinates: one pass over all boxes
    scores = rng.choice(np.linspace(0.05, 1, 12), n).astype(np.float32)  # many exact score ties
    labels = rng.integers(0, 264, n)
    assert _kit_nms(boxes, scores, labels) == _reference_batched_nms(boxes, scores, labels, 0.5)
    empty = rm.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.numel() == 0 and empty.dtype == torch.int64


def _near_half_pair(rng, label):
    """Two boxes of one class whose exact IoU is within 2e-4 of 0.5, plus a box of class 0 that
    takes the maximum coordinate to ~800 (so large labels get offsets near 2^17: coarse float32)."""
    x, y = rng.uniform(0, 700, 2)
    w, h = rng.uniform(8, 60, 2)
    d = w / 3 * (1 + rng.uniform(-6e-4, 6e-4))   # IoU (w - d) / (w + d): 0.5 at d = w / 3
    boxes = np.array([[x, y, x + w, y + h], [x + d, y, x + d + w, y + h], [0, 0, 799.75, 799.5]], np.float32)
    return boxes, np.array([label, label, 0])


def test_nms_near_iou_half_follows_the_offset_arithmetic():
    """Same-class pairs next to IoU 0.5: the reference decides on label-offset float32
    coordinates, which rounds them; exact per-class IoU decides some of these pairs otherwise."""
    rng = np.random.default_rng(11)
    disagree = 0
    for k in range(400):
        boxes, labels = _near_half_pair(rng, int(rng.integers(100, 264)))
        scores = np.array([0.9, 0.8 if k % 2 else 0.9, 0.3], np.float32)   # every other pair tied
        want = _reference_batched_nms(boxes, scores, labels, 0.5)
        assert _kit_nms(boxes, scores, labels) == want, (k, boxes.tolist(), labels.tolist())
        exact = float(rm._iou_rows(boxes[:2])[0, 1]) > 0.5
        disagree += exact != (1 not in want)
    assert disagree >= 50, disagree   # the cases exist (109 of 400): exact arithmetic fails here


def test_nms_over_1000_boxes_orders_ties_as_torch_sort():
    """More than 1,000 candidates: nms per class, then torch's default descending sort of the kept
    scores, which is not stable: tied scores come out in its order, not in index order."""
    rng = np.random.default_rng(5)
    n = 1200
    xy = rng.uniform(0, 700, (n, 2))
    wh = rng.uniform(5, 100, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.choice(np.linspace(0.05, 1, 8), n).astype(np.float32)
    labels = rng.integers(0, 60, n)
    want = _reference_batched_nms(boxes, scores, labels, 0.5)
    got = _kit_nms(boxes, scores, labels)
    assert got == want
    stable = sorted(want, key=lambda i: (-float(scores[i]), i))
    assert stable != want   # a stable sort would give another order: the case is real
    # exactly 1,000 boxes is still the coordinate trick
    b, s, lab = boxes[:1000], scores[:1000], labels[:1000]
    assert _kit_nms(b, s, lab) == _reference_batched_nms(b, s, lab, 0.5)


# --- preprocessing and layout: the reference's arithmetic by default ---------------------------
def _reference_preprocess(path: Path, size: int) -> np.ndarray:
    """pre_process_openimages_retinanet (via maybe_resize) of the reference's dataset.py, NCHW,
    written from its steps: cv2.imread, float32 first, BGR -> RGB, INTER_LINEAR resize of the
    float32 image (never rounded), /= 255.0 in float32, HWC -> CHW."""
    import cv2

    img = np.array(cv2.imread(str(path)), dtype=np.float32)
    if img.ndim < 3 or img.shape[2] != 3:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    img /= 255.0
    return img.transpose([2, 0, 1])


def _photo(path: Path, h: int, w: int, seed: int = 0, gray: bool = False) -> Path:
    """A JPEG with gradients, edges and noise (every resize weight matters)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx * 200 / w, yy * 200 / h, (xx + yy) * 100 / (h + w)], -1) + rng.normal(0, 20, (h, w, 3))
    img[h // 4:h // 2, w // 3:w // 2] = rng.uniform(0, 255, 3)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if gray:
        img = img[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def _layout(root: Path, shapes: list[tuple[int, int]]) -> Path:
    import json

    images = []
    for i, (h, w) in enumerate(shapes):
        _photo(root / oi.IMAGES / f"img{i}.jpg", h, w, seed=i, gray=(i == 2))
        images.append({"id": i + 1, "file_name": f"img{i}.jpg", "height": h, "width": w})
    (root / oi.ANNOTATIONS).parent.mkdir(parents=True, exist_ok=True)
    (root / oi.ANNOTATIONS).write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    return root


def test_preprocessing_is_the_references_bytes(tmp_path):
    """Default path = the reference's preprocessing, byte for byte, down- and up-scaling and a
    grayscale JPEG; the model's input is those float32 values (no rounding on the way)."""
    from evalkit.plan import resolve_options

    root = _layout(tmp_path, [(333, 517), (600, 1100), (240, 180)])
    ds = BENCHMARK.open_dataset(root)                     # no model dir: 800 x 800, as the reference
    options = resolve_options(BENCHMARK, {})
    for i in range(3):
        want = _reference_preprocess(ds.path(i), 800)
        idx, got = ds.load(i)
        assert idx == i and got.dtype == np.float32 and got.shape == (3, 800, 800)
        assert got.tobytes() == np.ascontiguousarray(want).tobytes(), i
        x = BENCHMARK.make_batch([(i, got)], "cpu", "fp32", options)["images"]
        assert x.dtype == torch.float32 and x.is_contiguous()
        assert x.numpy().tobytes() == np.ascontiguousarray(want[None]).tobytes(), i


def test_uint8_preprocessing_is_an_option_with_its_difference(tmp_path):
    """preprocess=uint8: cv2's uint8 resize (4x smaller samples, /255 on the device); named, not
    exact: within 1/255 of the reference on every pixel, most pixels differ."""
    import cv2

    from evalkit.plan import resolve_options

    root = _layout(tmp_path, [(333, 517)])
    ref = _reference_preprocess(root / oi.IMAGES / "img0.jpg", 800)
    opts = resolve_options(BENCHMARK, {"preprocess": "uint8"})
    ds = BENCHMARK.open_dataset(root, None, opts)
    _, u8 = ds.load(0)
    want = cv2.resize(cv2.cvtColor(cv2.imread(str(root / oi.IMAGES / "img0.jpg")), cv2.COLOR_BGR2RGB), (800, 800),
                      interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    assert u8.dtype == np.uint8 and u8.tobytes() == np.ascontiguousarray(want).tobytes()
    x = BENCHMARK.make_batch([(0, u8)], "cpu", "fp32", opts)["images"]
    assert torch.equal(x, torch.from_numpy(u8)[None].float() / 255.0)
    diff = np.abs(x[0].numpy() - ref)
    assert 0 < diff.max() <= 1 / 255 and (diff > 0).mean() > 0.5
    # samples and option disagree: one line, never a silent other path
    for sample, o in ((ref, opts), (u8, resolve_options(BENCHMARK, {}))):
        with pytest.raises(KitError, match="preprocess") as e:
            BENCHMARK.make_batch([(0, np.ascontiguousarray(sample))], "cpu", "fp32", o)
        assert "\n" not in str(e.value)
    with pytest.raises(KitError, match="preprocess=uint16"):
        BENCHMARK.open_dataset(root, None, {"preprocess": "uint16"})
    with pytest.raises(KitError, match="preprocess=uint16"):
        BENCHMARK.load_model(tmp_path / "nowhere", "cpu", "fp32", {"preprocess": "uint16"})


def test_reference_layout_is_the_default(tmp_path):
    """channels_first (the reference's NCHW) by default; channels_last is an opt-in option."""
    from evalkit.plan import resolve_options

    assert BENCHMARK.options == {"channels_last": False, "preprocess": "float32"}
    torch.manual_seed(2)
    torch.save(rm.RetinaNet(rm.Spec(**_TINY)).state_dict(), tmp_path / "resnext50_32x4d_fpn.pth")
    sample = (0, np.zeros((3, 64, 64), np.float32))
    for given, nhwc in (({}, False), ({"channels_last": "true"}, True)):
        opts = resolve_options(BENCHMARK, given)
        m = BENCHMARK.load_model(tmp_path, "cpu", "fp32", opts)
        w = m.backbone.body.layer1[0].conv2.weight
        assert w.is_contiguous() is not nhwc and w.is_contiguous(memory_format=torch.channels_last) is nhwc
        x = BENCHMARK.make_batch([sample], "cpu", "fp32", opts)["images"]
        assert x.is_contiguous() is not nhwc


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
    with modules_installed(mods):
        for m in net.modules():
            m.__class__ = subs.get(type(m), type(m))
        del net.spec  # the kit's own description of the net: the reference's model has none
        torch.save(net, tmp_path / "whole.pth")
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


@pytest.mark.parametrize("name", ["../outside.jpg", "a/../../outside.jpg", "/etc/outside.jpg"])
def test_annotation_file_name_leaving_the_image_dir_is_refused(tmp_path, name):
    """images[].file_name is a name inside validation/data: '..' and absolute paths are refused in
    one line naming the annotation file and the entry, when the dataset opens."""
    import json

    (tmp_path / oi.ANNOTATIONS).parent.mkdir(parents=True)
    images = [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8},
              {"id": 2, "file_name": name, "height": 8, "width": 8}]
    (tmp_path / oi.ANNOTATIONS).write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    with pytest.raises(KitError, match=r"openimages-mlperf\.json: images\[1\].*outside\.jpg") as e:
        oi.read_annotations(tmp_path)
    assert "\n" not in str(e.value)
