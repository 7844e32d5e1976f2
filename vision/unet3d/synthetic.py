"""Synthetic KiTS19 preprocessed set: smooth CT-like volumes with bright blobs, a tiny random
Unet3D with the real key names in the real checkpoint format, and ground-truth segmentations =
the model's own fp32 sliding-window output (so truth scores DICE 1.0).

A random Unet3D labels voxels about evenly (or all one class). The generator standardises the
three output logits over calibration volumes and biases them so that about 80 % of the voxels are
background, 15 % kidney and 5 % tumour, like a real scan; different cases then have their
kidney/tumour in different places and an index shift scores far below 1.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

from . import kits
from .benchmark import CHECKPOINT, MODEL_CONFIG

_FILTERS = (2, 4, 4, 8, 8)
_ROI = 64             # the smallest patch whose bottleneck keeps 2^3 voxels for instance norm
_SHAPE = (64, 64, 64)    # one 64^3 window per case (test time); tests/test_unet3d_unit.py covers overlapping windows
_SHARES = (0.80, 0.15, 0.05)  # background, kidney, tumour
_CALIB = 1


def _volume(rng) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    v = gaussian_filter(rng.normal(size=_SHAPE), sigma=3.0)
    v = (v - v.mean()) / (v.std() + 1e-6)
    zz, yy, xx = np.mgrid[0:_SHAPE[0], 0:_SHAPE[1], 0:_SHAPE[2]].astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):  # organ-like blobs, one brighter core each
        c = rng.uniform(0.2, 0.8, 3) * np.array(_SHAPE)
        r = rng.uniform(4, 10, 3)
        d = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2
        v += 2.0 * (d <= 1) + 1.5 * (d <= 0.3)
    return v.astype(np.float32)[None]


def _share_bias(z: "torch.Tensor", shares=_SHARES):  # noqa: F821
    """Biases (b0, 0, b2) for standardised logits z (3, V): argmax shares close to `shares`."""
    import torch

    def frac(b0, b2, c):
        zz = z + torch.tensor([b0, 0.0, b2])[:, None]
        return float((zz.argmax(0) == c).float().mean())

    lo, hi = -10.0, 10.0  # background share grows with b0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if frac(mid, 0.0, 0) < shares[0] else (lo, mid)
    b0 = (lo + hi) / 2
    lo, hi = -10.0, 10.0  # tumour share grows with b2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if frac(b0, mid, 2) < shares[2] else (lo, mid)
    return b0, (lo + hi) / 2


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only add overhead
    try:
        return _write(bench, out, n, seed)
    finally:
        torch.set_num_threads(threads)


def _write(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import nibabel as nib
    import torch

    from .model import Unet3D, gaussian_patch, sliding_window

    ds, md = out / "dataset", out / "model"
    ds.mkdir(parents=True, exist_ok=True)
    md.mkdir(parents=True, exist_ok=True)
    roi = (_ROI,) * 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Unet3D(_FILTERS).eval()
    # calibrate the output layer: the result is a weighted mean of window logits, so a bias on
    # the output conv shifts the final scores by exactly that bias
    patch = torch.from_numpy(gaussian_patch(roi))
    conv = net.output.conv[0]
    with torch.no_grad():
        feats = []
        hook = conv.register_forward_hook(lambda m, i, o: feats.append(o.detach()))
        for k in range(_CALIB):
            sliding_window(net, torch.from_numpy(_volume(np.random.default_rng([seed, 1, k]))), roi, patch)
        hook.remove()
        z = torch.cat([f.reshape(f.shape[0], 3, -1).permute(1, 0, 2).reshape(3, -1) for f in feats], dim=1)
        mu, sd = z.mean(1), z.std(1) + 1e-6
        conv.weight.div_(sd.view(-1, 1, 1, 1, 1))
        conv.bias.copy_((conv.bias - mu) / sd)
        zs = (z - mu[:, None]) / sd[:, None]
        b0, b2 = _share_bias(zs)
        conv.bias.add_(torch.tensor([b0, 0.0, b2]))
    torch.save({"best_model_state_dict": net.state_dict(), "epoch": 0}, md / CHECKPOINT)
    (md / MODEL_CONFIG).write_text(json.dumps({"roi": _ROI}) + "\n")
    del net

    model = bench.load_model(md, "cpu", "fp32", {})
    cases, aux, payloads = [], {}, []
    affine = np.diag([1.6, 1.2, 1.2, 1.0])  # TARGET_SPACING of the reference preprocessing
    for i in range(n):
        case = f"case_{i:05d}"
        image = _volume(np.random.default_rng([seed, 2, i]))
        label = bench.forward(model, bench.make_batch([(i, image)], "cpu", "fp32", {}))[0].numpy()
        with open(ds / f"{case}.pkl", "wb") as f:
            pickle.dump([image, label[None].astype(np.uint8)], f)
        (ds / "nifti" / case).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image[0], affine=affine), str(ds / "nifti" / case / "imaging.nii.gz"))
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine=affine),
                 str(ds / "nifti" / case / "segmentation.nii.gz"))
        cases.append(case)
        aux[case] = {"image_shape": image.shape, "reshaped_affine": affine, "original_affine": affine,
                     "spacing": np.array([1.6, 1.2, 1.2])}
        payloads.append(bench.postprocess([torch.from_numpy(label)], 1)[0])
    shares = np.bincount(np.concatenate(payloads), minlength=3) / sum(p.size for p in payloads)
    if shares[1] < 0.02 or shares[2] < 0.005:
        raise KitError(f"synthetic 3d-unet: label shares {shares.round(3).tolist()} (seed {seed}) leave kidney or "
                       f"tumour nearly empty; try another seed.")
    with open(ds / kits.INDEX, "wb") as f:
        pickle.dump({"file_list": cases, "cases": aux}, f)
    return payloads
