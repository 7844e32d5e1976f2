"""MLPerf 3D-UNet (KiTS19) in plain PyTorch, and the reference's sliding-window inference.

Module names follow the reference's pytorch_checkpoint_SUT.py (the MLPerf-Training model), so
`3dunet_kits19_pytorch_checkpoint.pth["best_model_state_dict"]` loads with strict=True:
input_block.conv{1,2}.{0: Conv3d, 1: InstanceNorm3d(affine)}, downsample.N.*, bottleneck.*,
upsample.N.upsample_conv.0 (ConvTranspose3d with bias), upsample.N.conv{1,2}.*, output.conv.0.
The filter counts are read from the state dict (real: 32, 64, 128, 256, 320).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

FILTERS = (32, 64, 128, 256, 320)
ROI = (128, 128, 128)
OVERLAP = 0.5
N_CLASS = 3


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # conv without bias (instance norm follows), norm, ReLU: conv_block_factory of the reference
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.InstanceNorm3d(cout, affine=True), nn.ReLU())


class _Pair(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _block(cin, cout, stride)
        self.conv2 = _block(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class UpsampleBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.upsample_conv = nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, stride=2, padding=0, bias=True),
                                           nn.Identity(), nn.Identity())
        self.conv1 = _block(2 * cout, cout)
        self.conv2 = _block(cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.upsample_conv(x), skip), dim=1)
        return self.conv2(self.conv1(x))


class OutputLayer(nn.Module):
    def __init__(self, cin: int, n_class: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(cin, n_class, 1, bias=True), nn.Identity(), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Unet3D(nn.Module):
    def __init__(self, filters: tuple = FILTERS, in_channels: int = 1, n_class: int = N_CLASS):
        super().__init__()
        f = list(filters)
        self.input_block = _Pair(in_channels, f[0], 1)
        self.downsample = nn.ModuleList(_Pair(i, o, 2) for i, o in zip(f[:-1], f[1:]))
        self.bottleneck = _Pair(f[-1], f[-1], 2)
        ups = [UpsampleBlock(f[-1], f[-1])] + [UpsampleBlock(i, o) for i, o in zip(reversed(f[1:]), reversed(f[:-1]))]
        self.upsample = nn.ModuleList(ups)
        self.output = OutputLayer(f[0], n_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_block(x)
        skips = [x]
        for d in self.downsample:
            x = d(x)
            skips.append(x)
        x = self.bottleneck(x)
        for up, skip in zip(self.upsample, reversed(skips)):
            x = up(x, skip)
        return self.output(x)


def filters_of(sd: dict) -> tuple:
    """Filter counts a state dict describes; KeyError when it is not a 3D-UNet."""
    n_down = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("downsample."))
    return (int(sd["input_block.conv1.0.weight"].shape[0]),) + tuple(
        int(sd[f"downsample.{i}.conv1.0.weight"].shape[0]) for i in range(n_down))


# --- sliding window, as base_SUT.py / inference_utils.py ---------------------------------------
def gaussian_patch(roi: tuple) -> np.ndarray:
    """inference_utils.gaussian_kernel(n, 0.125 * n): outer product of 1-D windows, cube root,
    normalised to max 1 (scipy.signal.windows.gaussian: scipy.signal.gaussian moved there)."""
    from scipy.signal.windows import gaussian

    n = roi[0]
    g1 = gaussian(n, 0.125 * n)
    g3 = np.outer(np.outer(g1, g1), g1).reshape(n, n, n)
    g3 = np.cbrt(g3)
    g3 /= g3.max()
    return g3.astype(np.float32)


def window_starts(shape: tuple, roi: tuple, overlap: float = OVERLAP) -> list[tuple[int, int, int]]:
    """get_slice_for_sliding_window: strides int(roi * (1 - overlap)), (shape - roi) // stride + 1 each."""
    strides = [int(roi[i] * (1 - overlap)) for i in range(3)]
    size = [(shape[i] - roi[i]) // strides[i] + 1 for i in range(3)]
    return [(i, j, k) for i in range(0, strides[0] * size[0], strides[0])
            for j in range(0, strides[1] * size[1], strides[1])
            for k in range(0, strides[2] * size[2], strides[2])]


def covered(shape: tuple, roi: tuple, overlap: float = OVERLAP) -> bool:
    """Whether the windows reach every voxel (the reference's preprocessing pads volumes so)."""
    strides = [int(roi[i] * (1 - overlap)) for i in range(3)]
    return all(s >= r and (s - r) % st == 0 for s, r, st in zip(shape, roi, strides))


def sliding_window(model: nn.Module, image: torch.Tensor, roi: tuple, patch: torch.Tensor,
                   sw_batch: int = 1) -> torch.Tensor:
    """(1, D, H, W) preprocessed volume -> (D, H, W) uint8 labels: windows accumulated with the
    Gaussian importance patch in float32, then `finalize` (float64 division, argmax over classes)."""
    d, h, w = image.shape[-3:]
    dev = image.device
    result = torch.zeros((1, N_CLASS, d, h, w), dtype=torch.float32, device=dev)
    norm = torch.zeros((1, 1, d, h, w), dtype=torch.float32, device=dev)
    starts = window_starts((d, h, w), roi)
    x = image[None]
    for b in range(0, len(starts), sw_batch):
        chunk = starts[b:b + sw_batch]
        inp = torch.cat([x[..., i:i + roi[0], j:j + roi[1], k:k + roi[2]] for i, j, k in chunk])
        out = model(inp).float()
        for n, (i, j, k) in enumerate(chunk):  # same order as the reference's loop
            sl = (..., slice(i, i + roi[0]), slice(j, j + roi[1]), slice(k, k + roi[2]))
            result[sl] += out[n:n + 1] * patch
            norm[sl] += patch
    return finalize(result, norm)


def finalize(result: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """inference_utils.finalize as the reference SUT reaches it: the float32 accumulations come back
    through from_tensor (`.numpy().astype(float)`: float64), the division `image /= norm_map` is in
    float64, then argmax over the classes (the first maximum on ties), as uint8. Dividing in float32
    instead can round the top two classes to a tie where float64 keeps them apart, and the tie
    goes to the lower label. Runs where the accumulations are (float64 division is IEEE on CPU and
    CUDA, as numpy's); MPS has no float64, so there it finishes on the host."""
    if result.device.type == "mps":
        result, norm = result.cpu(), norm.cpu()
    image = result.to(torch.float64)
    image /= norm.to(torch.float64)
    return torch.argmax(image, dim=1)[0].to(torch.uint8)
