"""Reading a RetinaNet checkpoint without running the pickle's code.

Accepted: a bare state dict, a training checkpoint {"model": state_dict, ...}, or the reference's
whole pickled model (resnext50_32x4d_fpn.pth is `torch.save(model)`; the reference loads it with
torch.load(weights_only=False), which imports its model package and can run arbitrary code).
State dicts go through torch's weights-only loader (evalkit.safeload.load_torch). The whole model
goes through the core's own reader (evalkit.safeload.load_torch_model): tensors from the zip's
data/ records, and for each class of the reference model, by its exact (module, name), a
do-nothing stand-in that keeps its attributes; then the stand-ins' _parameters/_buffers/_modules
are walked into a state dict. Any other name in the file is refused.
"""
from __future__ import annotations

from pathlib import Path

from evalkit import safeload
from evalkit.errors import KitError

WHAT = "RetinaNet checkpoint"

# The classes of the reference's pickled model, by the names its pickle carries. The model was built
# and saved from mlcommons/training single_stage_detector/ssd, whose package is imported as `model`
# (`from model.retinanet import retinanet_from_backbone`); resnext50_32x4d with an FPN whose norm
# layer is torchvision's FrozenBatchNorm2d, everything else plain torch.nn layers.
REFERENCE_CLASSES = (
    ("model.retinanet", "RetinaNet"),                        # the model
    ("model.retinanet", "RetinaNetHead"),                    # .head
    ("model.retinanet", "RetinaNetClassificationHead"),      # .head.classification_head
    ("model.retinanet", "RetinaNetRegressionHead"),          # .head.regression_head
    ("model.anchor_utils", "AnchorGenerator"),               # .anchor_generator (no weights)
    ("model.transform", "GeneralizedRCNNTransform"),         # .transform (no weights)
    ("model.utils", "BoxCoder"),                             # .box_coder (plain object)
    ("model.utils", "Matcher"),                              # .proposal_matcher (plain object)
    ("model.backbone_utils", "BackboneWithFPN"),             # .backbone
    ("model.utils", "IntermediateLayerGetter"),              # .backbone.body (the ResNeXt's layers)
    ("model.resnet", "Bottleneck"),                          # .backbone.body.layerN[i]
    ("model.feature_pyramid_network", "FeaturePyramidNetwork"),  # .backbone.fpn
    ("model.feature_pyramid_network", "LastLevelP6P7"),      # .backbone.fpn.extra_blocks
    ("torchvision.ops.misc", "FrozenBatchNorm2d"),           # every norm layer of the backbone
    ("torch.nn.modules.conv", "Conv2d"),
    ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.pooling", "MaxPool2d"),
    ("torch.nn.modules.batchnorm", "BatchNorm2d"),           # a checkpoint with trainable norms
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.container", "ModuleList"),
    ("torch.nn.modules.container", "ModuleDict"),
)
ALLOW = safeload.TORCH_TENSORS.named(WHAT) | safeload.stand_ins(WHAT, REFERENCE_CLASSES)


def _collect(obj, prefix: str, out: dict, depth: int = 0) -> None:
    """The stand-ins' _parameters/_buffers/_modules as a state dict (module.state_dict()'s keys)."""
    import torch

    d = getattr(obj, "__dict__", {})
    if depth > 64:
        raise ValueError(f"modules nested deeper than 64 at {prefix!r}")
    skip = d.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        entries = d.get(group) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"{prefix}{group} is a {type(entries).__name__}, not a dict")
        for k, v in entries.items():
            if v is None or (group == "_buffers" and k in skip):
                continue
            if not isinstance(k, str) or not isinstance(v, torch.Tensor):
                raise ValueError(f"{prefix}{k} is a {type(v).__name__}, not a tensor")
            out[prefix + k] = v.detach()
    modules = d.get("_modules") or {}
    if not isinstance(modules, dict):
        raise ValueError(f"{prefix}_modules is a {type(modules).__name__}, not a dict")
    for k, m in modules.items():
        if m is not None:
            _collect(m, f"{prefix}{k}.", out, depth + 1)


def _whole_model(path: Path):
    """The reference's pickled model, read by the core with stand-ins (see REFERENCE_CLASSES)."""
    return safeload.load_torch_model(path, ALLOW, WHAT)


def load_state_dict(path: Path) -> dict:
    """The checkpoint's state dict; KitError naming the file when it is none of the accepted forms."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"checkpoint {path} not found")
    try:
        obj = safeload.load_torch(path, WHAT)
    except KitError:
        # not weights-only: maybe the reference's whole pickled model; its reader's error is the one
        # to show (a refused name there is exact, where torch's would be about the model classes)
        obj = _whole_model(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # MLPerf training checkpoint
    if isinstance(obj, dict):
        return dict(obj)
    if not isinstance(obj, safeload.StandIn):
        raise KitError(f"checkpoint {path} holds a {type(obj).__name__}; expected a RetinaNet state dict or the "
                       f"reference's resnext50_32x4d_fpn.pth")
    out: dict = {}
    try:
        _collect(obj, "", out)
    except ValueError as e:
        raise KitError(f"checkpoint {path} is not a RetinaNet model ({e}); expected a RetinaNet state dict or the "
                       f"reference's resnext50_32x4d_fpn.pth") from None
    if not out:
        raise KitError(f"checkpoint {path} holds a {type(obj).__name__} with no weights; expected a "
                       f"RetinaNet state dict")
    return out
