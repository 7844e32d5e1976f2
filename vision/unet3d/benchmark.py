"""3D-UNet on KiTS19 (MLPerf `3d-unet`, checker 3d-unet-99 / 3d-unet-99.9).

Follows the reference PyTorch checkpoint SUT: Unet3D from
3dunet_kits19_pytorch_checkpoint.pth["best_model_state_dict"], sliding window over the
preprocessed volume (ROI 128^3, overlap 0.5, Gaussian importance sigma 0.125 * 128), argmax as
uint8 in the preprocessed shape; accuracy = accuracy_kits.py (per-case DICE of kidney and tumour
against nifti/<case>/segmentation.nii.gz, composite = their mean, mean over cases).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark
from evalkit.errors import KitError
from vision import synthetic_needs_config

from . import kits

CHECKPOINT = "3dunet_kits19_pytorch_checkpoint.pth"   # the published file name
MODEL_CONFIG = "model_config.json"   # optional {"roi": N}: only synthetic checkpoints have one


def checkpoint_file(model_path: Path) -> Path:
    p = Path(model_path)
    return p / CHECKPOINT if p.is_dir() else p


def roi_of(model_path: Path | None) -> tuple[int, int, int]:
    """The sliding-window patch: 128^3, or what a synthetic checkpoint dir records."""
    from .model import ROI

    if model_path is None:
        return ROI
    p = Path(model_path)
    cfg = (p if p.is_dir() else p.parent) / MODEL_CONFIG
    if not cfg.is_file():
        return ROI
    try:
        n = int(json.loads(cfg.read_text())["roi"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KitError(f"{cfg} is malformed ({type(e).__name__}: {e}); expected {{\"roi\": N}}") from None
    if n < 64 or n % 32:
        raise KitError(f"{cfg}: roi {n} must be a multiple of 32 and at least 64 (five stride-2 levels, instance norm needs 2^3 voxels)")
    return (n, n, n)


def load_checkpoint(ckpt: Path) -> Any:
    """The checkpoint's object, read by the core's one unpickler (evalkit.safeload) with the 3D-UNet
    checkpoint allow-list: tensors, containers and the numpy float32 metrics that MLPerf Training's
    CheckpointCallback stores beside best_model_state_dict (torch's weights-only load refuses those)."""
    import zipfile
    import zlib

    from evalkit import safeload

    try:
        return safeload.load_torch_model(ckpt, safeload.UNET3D_CHECKPOINT, "3D-UNet checkpoint")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # a damaged record inside the zip
        raise KitError(f"cannot load 3D-UNet checkpoint {ckpt} ({type(e).__name__}: {e}); replace it with the "
                       f"published file") from None


class SlidingWindowModel:
    """The loaded Unet3D plus its patch geometry: what forward() needs for whole volumes."""

    def __init__(self, net, roi, device, dtype, sw_batch):
        import torch

        from .model import gaussian_patch

        self.net, self.roi, self.dtype, self.sw_batch = net, roi, dtype, sw_batch
        self.patch = torch.from_numpy(gaussian_patch(roi)).to(device)


class UNet3DBenchmark(Benchmark):
    name = "3d-unet"
    mlperf_name = "3d-unet"
    checker_names = {"99": "3d-unet-99", "99.9": "3d-unet-99.9"}
    default_accuracy_target = "99"
    dataset_size = 43
    performance_sample_count = 43
    payload_dtype = "uint8"
    payload_size = None          # one label per voxel: every case has its own shape
    default_batch_size = 1       # whole volumes of different shapes: one at a time, like the reference
    synthetic_n = 4
    # windows per forward call; >1 batches patches (faster on accelerators, the same windows)
    options = {"sw_batch_size": 1}

    # --- data -----------------------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> kits.KiTS19:
        from .model import covered

        ds = kits.KiTS19(Path(path))
        synthetic_needs_config(Path(path), model_path, MODEL_CONFIG)
        roi = roi_of(model_path)
        for c in ds.cases:  # the reference's preprocessing pads every volume so that windows tile it
            shape = kits.volume_shape(ds.aux[c])
            if not covered(shape, roi):
                raise KitError(f"{Path(path) / kits.INDEX}: case {c} has shape {shape}, which {roi} windows at "
                               f"overlap 0.5 do not tile; re-run the reference preprocessing.")
        return ds

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        f = Path(dataset_path) / kits.INDEX
        if not f.is_file():
            raise KitError(f"{f} not found; the KiTS19 preprocessed layout keeps its case index there.")
        return {"roi": list(roi_of(model_path))}  # the files themselves: by content, in the core

    def sample_work(self, dataset_path: Path) -> list[int]:
        """Voxels per case: the work of each sample, for partitions balanced by work (the core's
        partition function splits by count today; see README)."""
        ds = kits.KiTS19(Path(dataset_path))
        return [ds.voxels(i) for i in range(ds.size)]

    # --- model ----------------------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> Any:
        from .model import Unet3D, filters_of

        dtype = self.torch_dtype(data_type)
        ckpt = checkpoint_file(model_path)
        if not ckpt.is_file():
            raise KitError(f"checkpoint {ckpt} not found; put the MLPerf 3D-UNet PyTorch checkpoint there as "
                           f"{CHECKPOINT}.")
        obj = load_checkpoint(ckpt)
        sd = obj.get("best_model_state_dict", obj) if isinstance(obj, dict) else None
        try:
            net = Unet3D(filters_of(sd))
            net.load_state_dict(sd, strict=True)
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KitError(f"checkpoint {ckpt} is not an MLPerf 3D-UNet checkpoint "
                           f"(best_model_state_dict of Unet3D): {first[:300]}") from None
        net.eval().to(device=device, dtype=dtype)
        sw = int(options.get("sw_batch_size", self.options["sw_batch_size"]))
        if sw < 1:
            raise KitError(f"--option sw_batch_size={sw} must be at least 1")
        return SlidingWindowModel(net, roi_of(model_path), device, dtype, sw)

    def compile_model(self, model: Any, compile_fn) -> Any:
        # compile the network; the sliding window around it stays eager
        return _with_net(model, compile_fn(model.net))

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> Any:
        import torch

        return [torch.from_numpy(img).to(device=device, dtype=self.torch_dtype(data_type)) for _, img in samples]

    def forward(self, model: Any, inputs: Any) -> Any:
        import torch

        from .model import sliding_window

        with torch.inference_mode():
            return [sliding_window(model.net, x, model.roi, model.patch, model.sw_batch) for x in inputs]

    def postprocess(self, outputs: Any, n: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(o.cpu().numpy().reshape(-1), dtype=np.uint8) for o in outputs[:n]]

    # --- accuracy -------------------------------------------------------------------------
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        root = Path(dataset_path)
        cases, aux = kits.read_index(root)
        kidney, tumour = [], []
        # one case at a time: the full log is ~8 GB of volumes, never held together
        for qsl_idx, pred in pairs:
            if qsl_idx >= len(cases):
                raise KitError(f"qsl_idx {qsl_idx} has no case in {root / kits.INDEX} ({len(cases)} cases).")
            case = cases[qsl_idx]
            shape = kits.volume_shape(aux[case])
            if pred.size != int(np.prod(shape)):
                raise KitError(f"the response for qsl_idx {qsl_idx} ({case}) has {pred.size} voxels, its "
                               f"image_shape {tuple(aux[case]['image_shape'])} has {int(np.prod(shape))}; check the payload "
                               f"dtype (uint8, one label per voxel)")
            if pred.size and int(pred.max()) > 2:
                raise KitError(f"the response for qsl_idx {qsl_idx} ({case}) holds label {int(pred.max())}; "
                               f"KiTS19 labels are 0, 1, 2; check the payload dtype (uint8)")
            target = kits.load_segmentation(root, case)
            if target.shape != shape:
                raise KitError(f"{root / 'nifti' / case / 'segmentation.nii.gz'} has shape {target.shape}, "
                               f"the case's image_shape is {shape}")
            k, t = kits.dice(pred.reshape(shape), target)
            kidney.append(k)
            tumour.append(t)
        composite = [(k + t) / 2 for k, t in zip(kidney, tumour)]
        return {"DICE": float(np.mean(composite)), "kidney": float(np.mean(kidney)),
                "tumor": float(np.mean(tumour)), "cases": len(composite)}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        return ["Accuracy: mean = {:.5f}, kidney = {:.4f}, tumor = {:.4f}".format(
            float(metrics["DICE"]), float(metrics["kidney"]), float(metrics["tumor"]))]

    # --- synthetic ------------------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"DICE": 1.0}


def _with_net(model: SlidingWindowModel, net) -> SlidingWindowModel:
    m = SlidingWindowModel.__new__(SlidingWindowModel)
    m.__dict__.update(model.__dict__)
    m.net = net
    return m


BENCHMARK = UNet3DBenchmark()
