"""Reference PyTorch-profile ImageNet preprocessing, without torchvision.

Mirrors `pre_process_imagenet_pytorch` (Resize(256) bilinear, CenterCrop(224),
to_tensor, normalize) with PIL + numpy only. Note: the reference decodes with
cv2.imread and converts BGR->RGB before handing the array to PIL; here PIL
decodes, which can differ in rare JPEG corner cases (e.g. CMYK files).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

RESIZE = 256
CROP = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def resized_size(width: int, height: int, size: int = RESIZE) -> tuple[int, int]:
    """(w, h) after torchvision Resize(int): short side = size, long side truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """PIL crop box of torchvision center_crop (round-half-even of the offset, as it does)."""
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def crop_image(img: Image.Image) -> np.ndarray:
    """Resize + center crop: the uint8 CHW (3, 224, 224) image, what the sample store keeps
    (4x smaller than float32; normalised on the device by normalize())."""
    img = img.convert("RGB")
    size = resized_size(*img.size)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    img = img.crop(crop_box(*img.size))
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def normalize(x):
    """to_tensor + normalize on a uint8 [B, 3, H, W] torch tensor, on whatever device it is:
    float32 / 255, then (x - mean) / std, each op IEEE-rounded like the numpy float path."""
    import torch

    mean = torch.from_numpy(MEAN).to(x.device)
    std = torch.from_numpy(STD).to(x.device)
    return (x.to(torch.float32) / 255.0 - mean) / std


def preprocess_image(img: Image.Image) -> np.ndarray:
    # to_tensor: uint8 HWC -> float32 CHW / 255; then (x - mean) / std in float32
    x = crop_image(img).astype(np.float32) / np.float32(255.0)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x, dtype=np.float32)


def crop_file(path) -> np.ndarray:
    with Image.open(path) as img:
        return crop_image(img)


def preprocess_file(path) -> np.ndarray:
    with Image.open(path) as img:
        return preprocess_image(img)
