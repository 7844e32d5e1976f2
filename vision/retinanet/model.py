"""MLPerf RetinaNet (ResNeXt50-32x4d FPN, 264 OpenImages classes) in plain PyTorch.

Module and buffer names follow the reference model (vision/classification_and_detection/
python/models/resnext50, a torchvision 0.10 copy), so its state dict loads with strict=True:
`backbone.body.*` (ResNeXt with frozen batch norm: weight/bias/running_mean/running_var, no
num_batches_tracked), `backbone.fpn.inner_blocks.N`, `layer_blocks.N`, `extra_blocks.p6/p7`,
`head.classification_head.conv.{0,2,4,6}` (Conv2d/ReLU pairs) and `cls_logits`,
`head.regression_head.conv.*` and `bbox_reg`.

The architecture is read from the state dict's shapes (`Spec.from_state_dict`): the published
checkpoint gives the real widths, a synthetic checkpoint the same names at tiny widths.
Post-processing follows the reference: sigmoid scores > 0.05, top 1000 per level, boxes decoded
against anchors and clipped, the reference's batched NMS at IoU 0.5 (its float32 label offsets and
its order for tied scores, see batched_nms), 300 detections at most.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 264
IMAGE_SIZE = 800
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ANCHOR_SIZES = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (32, 64, 128, 256, 512))
ASPECT_RATIOS = (0.5, 1.0, 2.0)
SCORE_THRESH = 0.05
NMS_THRESH = 0.5
DETECTIONS_PER_IMG = 300
TOPK_CANDIDATES = 1000
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class Spec:
    """Widths of one RetinaNet: the real one by default."""
    stem: int = 64
    widths: tuple = (128, 256, 512, 1024)     # grouped 3x3 conv width per stage (32 groups x 4 ... x 32)
    outs: tuple = (256, 512, 1024, 2048)      # stage output channels (planes * 4)
    groups: int = 32
    blocks: tuple = (3, 4, 6, 3)
    fpn: int = 256
    num_classes: int = NUM_CLASSES
    num_anchors: int = 9

    @staticmethod
    def from_state_dict(sd: dict) -> "Spec":
        """The architecture a state dict describes; KeyError/ValueError when it is not a RetinaNet."""
        b = "backbone.body."
        blocks = tuple(1 + max(int(k.split(".")[3]) for k in sd if k.startswith(f"{b}layer{i}."))
                       for i in range(1, 5))
        widths = tuple(int(sd[f"{b}layer{i}.0.conv2.weight"].shape[0]) for i in range(1, 5))
        groups = widths[0] // int(sd[f"{b}layer1.0.conv2.weight"].shape[1])
        outs = tuple(int(sd[f"{b}layer{i}.0.conv3.weight"].shape[0]) for i in range(1, 5))
        fpn = int(sd["backbone.fpn.inner_blocks.0.weight"].shape[0])
        num_anchors = int(sd["head.regression_head.bbox_reg.weight"].shape[0]) // 4
        num_classes = int(sd["head.classification_head.cls_logits.weight"].shape[0]) // num_anchors
        return Spec(int(sd[f"{b}conv1.weight"].shape[0]), widths, outs, groups, blocks, fpn,
                    num_classes, num_anchors)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics, as the reference backbone uses (no num_batches_tracked)."""

    def __init__(self, n: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, cout: int, groups: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = FrozenBatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), FrozenBatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class Body(nn.Module):
    """ResNeXt trunk returning C3, C4, C5 (the reference's returned_layers=[2, 3, 4])."""

    def __init__(self, s: Spec):
        super().__init__()
        self.conv1 = nn.Conv2d(3, s.stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(s.stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = s.stem
        for i in range(4):
            layers = []
            for j in range(s.blocks[i]):
                layers.append(Bottleneck(cin, s.widths[i], s.outs[i], s.groups, 2 if (j == 0 and i > 0) else 1))
                cin = s.outs[i]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class LastLevelP6P7(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.p6 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(c, c, 3, stride=2, padding=1)


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], c: int):
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(ci, c, 1) for ci in in_channels)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in in_channels)
        self.extra_blocks = LastLevelP6P7(c)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        last = self.inner_blocks[-1](xs[-1])
        out = [self.layer_blocks[-1](last)]
        for i in range(len(xs) - 2, -1, -1):
            lateral = self.inner_blocks[i](xs[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            out.insert(0, self.layer_blocks[i](last))
        # P6 from P5 (in_channels == out_channels in the reference's LastLevelP6P7(256, 256))
        p6 = self.extra_blocks.p6(out[-1])
        return out + [p6, self.extra_blocks.p7(F.relu(p6))]


class Backbone(nn.Module):
    def __init__(self, s: Spec):
        super().__init__()
        self.body = Body(s)
        self.fpn = FPN(list(s.outs[1:]), s.fpn)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(self.body(x))


def _tower(c: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(4):
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


class ClassificationHead(nn.Module):
    def __init__(self, c: int, num_anchors: int, num_classes: int):
        super().__init__()
        self.conv = _tower(c)
        self.cls_logits = nn.Conv2d(c, num_anchors * num_classes, 3, padding=1)
        self.num_classes = num_classes

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [_flatten_level(self.cls_logits(self.conv(f)), self.num_classes) for f in feats]


class RegressionHead(nn.Module):
    def __init__(self, c: int, num_anchors: int):
        super().__init__()
        self.conv = _tower(c)
        self.bbox_reg = nn.Conv2d(c, num_anchors * 4, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [_flatten_level(self.bbox_reg(self.conv(f)), 4) for f in feats]


def _flatten_level(t: torch.Tensor, k: int) -> torch.Tensor:
    """(N, A*K, H, W) -> (N, H*W*A, K): anchor order of the reference (location-major)."""
    n, _, h, w = t.shape
    return t.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)


class Head(nn.Module):
    def __init__(self, s: Spec):
        super().__init__()
        self.classification_head = ClassificationHead(s.fpn, s.num_anchors, s.num_classes)
        self.regression_head = RegressionHead(s.fpn, s.num_anchors)


# --- anchors, box decoding, NMS --------------------------------------------------------------
def base_anchors(sizes: tuple, ratios: tuple = ASPECT_RATIOS, dtype=torch.float32) -> torch.Tensor:
    """Zero-centred anchors of one level, ratio-major, rounded like the reference generator."""
    scales = torch.as_tensor(sizes, dtype=dtype)
    ar = torch.as_tensor(ratios, dtype=dtype)
    h_ratios = torch.sqrt(ar)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def grid_anchors(image_hw: tuple[int, int], feat_hw: list[tuple[int, int]], device) -> list[torch.Tensor]:
    """Anchors of every level in (x1, y1, x2, y2) pixels. Strides are integer divisions of the
    image size by the feature size, as in the reference (800 -> 8, 16, 32, 61, 114)."""
    out = []
    for (fh, fw), sizes in zip(feat_hw, ANCHOR_SIZES):
        sh, sw = image_hw[0] // fh, image_hw[1] // fw
        xs = torch.arange(0, fw, dtype=torch.int32, device=device) * sw
        ys = torch.arange(0, fh, dtype=torch.int32, device=device) * sh
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        shifts = torch.stack((x.reshape(-1), y.reshape(-1), x.reshape(-1), y.reshape(-1)), dim=1)
        base = base_anchors(sizes).to(device)
        out.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
    return out


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """BoxCoder(weights=(1, 1, 1, 1)).decode_single of the reference."""
    anchors = anchors.to(deltas.dtype)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + 0.5 * widths
    ctr_y = anchors[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0], deltas[:, 1]
    dw = deltas[:, 2].clamp(max=BBOX_XFORM_CLIP)
    dh = deltas[:, 3].clamp(max=BBOX_XFORM_CLIP)
    pcx = dx * widths + ctr_x
    pcy = dy * heights + ctr_y
    pw = torch.exp(dw) * widths
    ph = torch.exp(dh) * heights
    half_w, half_h = 0.5 * pw, 0.5 * ph
    return torch.stack((pcx - half_w, pcy - half_h, pcx + half_w, pcy + half_h), dim=1)


NMS_VANILLA_ABOVE = 4000   # coordinates (1,000 boxes): above, the reference runs one nms per class


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float) -> torch.Tensor:
    """The reference's batched NMS (torchvision's batched_nms as the training repo's model/boxes.py
    calls it, on CPU), the same arithmetic and the same order; kept indices, best first.

    Up to 1,000 boxes (4,000 coordinates), the coordinate trick: every box is shifted by
    label * (max coordinate + 1) in float32 (which rounds the coordinates of high labels) and one
    nms runs over all of them. Above, one nms per class, and the kept indices, in ascending order,
    are ordered by torch's default descending sort of their scores (not stable: ties come out in
    its order). nms is torchvision's CPU kernel (>= 0.12): a stable descending score sort, then
    greedy suppression of IoU > iou with _iou_rows' float32 arithmetic. Computed on the host,
    whatever the model's device: a few thousand boxes at most, and a sequential pass anyway.
    tests/test_retinanet_unit.py proves it equal to a plain loop of those rules.
    """
    device = boxes.device
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    b = boxes.detach().to("cpu", torch.float32)
    s = scores.detach().to("cpu", torch.float32)
    lab = labels.detach().cpu()
    if b.numel() > NMS_VANILLA_ABOVE:
        kept = torch.from_numpy(np.flatnonzero(_greedy(b, s, lab, iou, by_class=True)))
        out = kept[torch.sort(s[kept], descending=True).indices]   # the reference's sort: not stable
    else:
        offsets = lab.to(b) * (b.max() + torch.tensor(1).to(b))  # float32, as torchvision computes it
        order = torch.sort(s, descending=True, stable=True).indices  # the kernel's order
        shifted = b + offsets[:, None]
        # per class is the same as one pass over the shifted boxes when no two classes can touch:
        # coordinates >= 0 (boxes are clipped to the image) and far below 2**23, where the float32
        # rounding of the shifts moves a coordinate by less than the gap of 1 between classes
        by_class = bool(b.min() >= 0) and float(shifted.max()) < 2.0 ** 22
        mask = _greedy(shifted, s, lab, iou, by_class, order)
        out = order[torch.from_numpy(mask[order.numpy()])]
    return out.to(device)


def _greedy(b: torch.Tensor, s: torch.Tensor, lab: torch.Tensor, iou: float, by_class: bool,
            order: torch.Tensor | None = None) -> np.ndarray:
    """Kept-mask of torchvision's CPU nms kernel: boxes visited by a stable descending score sort,
    each kept box drops every later box with IoU > iou; by_class: only boxes of its own class (one
    small IoU matrix per class instead of an n x n one)."""
    n = s.shape[0]
    if order is None:
        order = torch.sort(s, descending=True, stable=True).indices
    o = order.numpy()
    bo = b.numpy()[o]
    lo = lab.numpy()[o]
    kept = np.zeros(n, dtype=bool)    # by position in `order`
    if by_class:
        pos_by_class = np.argsort(lo, kind="stable")      # each class's positions, best first
        groups = np.split(pos_by_class, np.flatnonzero(np.diff(lo[pos_by_class])) + 1)
    else:
        groups = [np.arange(n)]
    for pos in groups:
        if len(pos) == 1:
            kept[pos[0]] = True
            continue
        with np.errstate(invalid="ignore"):
            over = np.triu(_iou_rows(bo[pos]).astype(np.float64) > iou, k=1)  # the kernel: float vs double
        removed = np.zeros(len(pos), dtype=bool)
        for i in range(len(pos)):
            if not removed[i]:
                kept[pos[i]] = True
                removed |= over[i]
    mask = np.zeros(n, dtype=bool)
    mask[o[kept]] = True
    return mask


def _iou_rows(b: np.ndarray) -> np.ndarray:
    """float32 pairwise IoU, the arithmetic of torchvision's CPU kernel (no +1): row i is the kept
    (better) box, inter / (area_i + area_j - inter), areas as (x2 - x1) * (y2 - y1)."""
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1) * (y2 - y1)
    w = np.maximum(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), np.float32(0))
    h = np.maximum(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), np.float32(0))
    inter = w * h
    with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: 0/0 = nan, never > iou
        return inter / (area[:, None] + area[None, :] - inter)


# --- the model ---------------------------------------------------------------------------------
class RetinaNet(nn.Module):
    def __init__(self, spec: Spec = Spec()):
        super().__init__()
        self.spec = spec
        self.backbone = Backbone(spec)
        self.head = Head(spec)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def head_outputs(self, images: torch.Tensor):
        """Normalised images -> (per-level class logits, per-level box deltas, feature sizes)."""
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        feats = self.backbone(x)
        cls = self.head.classification_head(feats)
        reg = self.head.regression_head(feats)
        return cls, reg, [tuple(f.shape[-2:]) for f in feats]

    def forward(self, images: torch.Tensor) -> list[dict]:
        """(N, 3, S, S) images in [0, 1] at the model's input size -> per image
        {"boxes" (x1, y1, x2, y2 in pixels), "scores", "labels"}, sorted by score."""
        cls, reg, feat_hw = self.head_outputs(images)
        anchors = grid_anchors(tuple(images.shape[-2:]), feat_hw, images.device)
        return [postprocess_detections([c[i] for c in cls], [r[i] for r in reg], anchors,
                                       tuple(images.shape[-2:]))
                for i in range(images.shape[0])]


def postprocess_detections(logits: list[torch.Tensor], deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                           image_hw: tuple[int, int]) -> dict:
    """One image's per-level head outputs -> its detections, as the reference's
    postprocess_detections (computed in float32 whatever the model dtype)."""
    boxes_all, scores_all, labels_all = [], [], []
    for lg, dl, an in zip(logits, deltas, anchors):
        k = lg.shape[-1]
        scores = torch.sigmoid(lg.float()).flatten()
        keep = scores > SCORE_THRESH
        idx = torch.where(keep)[0]
        scores = scores[keep]
        scores, top = scores.topk(min(TOPK_CANDIDATES, idx.numel()))
        idx = idx[top]
        anchor_idx = torch.div(idx, k, rounding_mode="floor")
        boxes = decode_boxes(dl.float()[anchor_idx], an[anchor_idx])
        boxes = torch.stack((boxes[:, 0].clamp(0, image_hw[1]), boxes[:, 1].clamp(0, image_hw[0]),
                             boxes[:, 2].clamp(0, image_hw[1]), boxes[:, 3].clamp(0, image_hw[0])), dim=1)
        boxes_all.append(boxes)
        scores_all.append(scores)
        labels_all.append(idx % k)
    boxes, scores, labels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all)
    keep = batched_nms(boxes, scores, labels, NMS_THRESH)[:DETECTIONS_PER_IMG]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
