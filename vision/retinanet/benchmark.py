"""RetinaNet 800x800 on OpenImages-MLPerf (MLPerf `retinanet`, checker `retinanet`).

Follows the reference PyTorch profile: cv2 preprocessing to 800x800 RGB /255, the model's own
mean/std normalisation, torchvision-0.10 post-processing (facts §3, §5); payload float32 groups
of 7 [qsl_idx, ymin, xmin, ymax, xmax, score, label] normalised by the input size, as
PostProcessOpenImagesRetinanet writes them; accuracy = accuracy-openimages.py (COCO bbox mAP).

Defaults are the reference's arithmetic on CPU in fp32 (float32 resize, NCHW, its batched NMS);
the options preprocess=uint8 and channels_last=true are faster and not bit-exact (README).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark
from evalkit.errors import KitError
from vision import synthetic_needs_config

from . import openimages as oi

CHECKPOINT = "resnext50_32x4d_fpn.pth"   # the published file name
MODEL_CONFIG = "model_config.json"       # optional {"image_size": S}: only synthetic checkpoints have one
COCO_EVALUATOR = "faster"                # see openimages.coco_map; tests prove it equal to pycocotools

# synthetic knobs
_SYNTH_SIZE = 128           # input size of the tiny model (the real one is 800)
_TINY = dict(stem=8, widths=(8, 16, 32, 64), outs=(32, 64, 128, 256), groups=4, blocks=(3, 4, 6, 3), fpn=16)
_CALIB_IMAGES = 32
_CANDIDATES = 30           # score > 0.05 anchors before NMS on the median picture


def checkpoint_file(model_path: Path) -> Path:
    p = Path(model_path)
    return p / CHECKPOINT if p.is_dir() else p


def input_size(model_path: Path | None) -> int:
    """The model's square input size: 800, or what a synthetic checkpoint dir records."""
    if model_path is None:
        return 800
    p = Path(model_path)
    cfg = (p if p.is_dir() else p.parent) / MODEL_CONFIG
    if not cfg.is_file():
        return 800
    try:
        size = int(json.loads(cfg.read_text())["image_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KitError(f"{cfg} is malformed ({type(e).__name__}: {e}); expected {{\"image_size\": N}}") from None
    if not 32 <= size <= 4096:
        raise KitError(f"{cfg}: image_size {size} is outside 32..4096")
    return size


class RetinaNetBenchmark(Benchmark):
    name = "retinanet"
    mlperf_name = "retinanet"
    checker_names = {"99": "retinanet"}
    default_accuracy_target = "99"
    dataset_size = 24781
    performance_sample_count = 64
    payload_dtype = "float32"
    payload_size = None           # 7 floats per detection, 0..300 detections
    # One image per forward by default: a sample's detections then never depend on its batch
    # neighbours (kernel choice per batch shape), so partitions reproduce byte for byte.
    default_batch_size = 1
    # NCHW fp32 convolutions on CPU (the reference's layout) give last-bit different logits at
    # batch 1 and batch 3 (oneDNN picks other kernels): a batch size is part of a run's identity.
    batch_invariant = False
    synthetic_n = 12
    # Defaults: the reference's arithmetic. channels_last=true: NHWC convolutions, faster on CPU
    # (bf16) and GPU, last-bit differences. preprocess=uint8: cv2's uint8 resize, samples 4x
    # smaller, /255 on the device, within 1/255 of the reference's float32 resize per pixel.
    options = {"channels_last": False, "preprocess": "float32"}

    # --- data -----------------------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> oi.OpenImages:
        """`options`: the run's model options; preprocess=uint8 makes the dataset load uint8 samples."""
        synthetic_needs_config(Path(path), model_path, MODEL_CONFIG)
        return oi.OpenImages(Path(path), input_size(model_path), _preprocess(options or {}))

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        f = Path(dataset_path) / oi.ANNOTATIONS
        if not f.is_file():
            raise KitError(f"{f} not found; the OpenImages-MLPerf layout keeps the annotations there.")
        return {"image_size": input_size(model_path)}  # the files themselves: by content, in the core

    # --- model ----------------------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> Any:
        import torch

        from .checkpoint import load_state_dict
        from .model import RetinaNet, Spec

        dtype = self.torch_dtype(data_type)
        _preprocess(options)  # a bad value fails before the weights load
        ckpt = checkpoint_file(model_path)
        if not ckpt.is_file():
            raise KitError(f"checkpoint {ckpt} not found; put the MLPerf RetinaNet weights there as {CHECKPOINT}.")
        sd = load_state_dict(ckpt)
        try:
            spec = Spec.from_state_dict(sd)
            model = RetinaNet(spec)
            model.load_state_dict(sd, strict=True)
        except (KeyError, ValueError, RuntimeError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KitError(f"checkpoint {ckpt} is not an MLPerf RetinaNet state dict ({first[:300]}).") from None
        model.eval().to(device=device, dtype=dtype)
        if options.get("channels_last", self.options["channels_last"]):
            model.to(memory_format=torch.channels_last)
        return model

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> Any:
        import torch

        idx = [int(i) for i, _ in samples]
        want = np.dtype(_preprocess(options))
        got = {np.asarray(img).dtype for _, img in samples}
        if got != {want}:
            raise KitError(f"retinanet samples are {'/'.join(sorted(map(str, got)))} but the run's option is "
                           f"preprocess={want}: open the dataset with the run's options "
                           f"(open_dataset(path, model_path, options)), or run with preprocess="
                           f"{'/'.join(sorted(map(str, got)))}")
        x = torch.from_numpy(np.stack([img for _, img in samples])).to(device)
        if want == np.uint8:
            x = x.float() / 255.0   # the uint8 option: /255 on the device
        # float32: the reference's samples as they are (already /255 in float32 on the host)
        x = x.to(self.torch_dtype(data_type))
        if options.get("channels_last", self.options["channels_last"]):
            x = x.contiguous(memory_format=torch.channels_last)
        return {"images": x, "idx": idx}

    def forward(self, model: Any, inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            dets = model(inputs["images"])
        return {"dets": dets, "idx": inputs["idx"], "size": inputs["images"].shape[-2:]}

    def postprocess(self, outputs: Any, n: int) -> list[np.ndarray]:
        import torch

        h, w = (int(v) for v in outputs["size"])
        out = []
        for qsl_idx, d in list(zip(outputs["idx"], outputs["dets"]))[:n]:
            keep = d["scores"] >= 0.05  # the reference's threshold loop (scores are sorted)
            b, s, lab = d["boxes"][keep].float().cpu(), d["scores"][keep].float().cpu(), d["labels"][keep].cpu()
            if not s.numel():
                out.append(np.zeros(0, dtype=np.float32))
                continue
            g = torch.stack([torch.full_like(s, float(qsl_idx)), b[:, 1] / h, b[:, 0] / w, b[:, 3] / h, b[:, 2] / w,
                             s, lab.float()], dim=1)
            out.append(np.ascontiguousarray(g.numpy().astype(np.float32).reshape(-1)))
        return out

    # --- accuracy -------------------------------------------------------------------------
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        gt = oi.read_annotations(Path(dataset_path))
        dets, img_ids, no_results, mismatch = oi.detections_from_pairs(pairs, gt["images"])
        if mismatch:
            import sys
            print(f"warning: {mismatch} responses carry an image_idx other than their qsl_idx (scored by "
                  f"qsl_idx, as accuracy-openimages.py does)", file=sys.stderr)
        m = oi.coco_map(gt, dets, img_ids, COCO_EVALUATOR)
        return {"mAP": 100.0 * m, "images": len(img_ids), "detections": int(dets.shape[0]),
                "no_results": no_results, "image_idx_mismatch": mismatch}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        return ["mAP={:.3f}%".format(float(metrics["mAP"]))]

    # --- synthetic ------------------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"mAP": 100.0}


def _preprocess(options: dict) -> str:
    value = options.get("preprocess", RetinaNetBenchmark.options["preprocess"])
    if value not in oi.PREPROCESS:
        raise KitError(f"--option preprocess={value} for retinanet: use float32 (the reference's arithmetic, "
                       f"the default) or uint8 (faster, within 1/255 per pixel)")
    return value


BENCHMARK = RetinaNetBenchmark()
