"""FID as the reference computes it (pytorch-fid's FID Inception v3), in plain PyTorch.

The reference `tools/fid` builds torchvision's Inception3, swaps in the FID blocks and
loads `pt_inception-2015-12-05-6726825d.pth`. torchvision does not import in the kit's
envs, so the same graph is written here with the same module names: the published state
dict loads strictly. Channel counts are read from the state dict (real file: the full
2048-d net; the synthetic set ships a narrower one in the same format).

The scorer runs this network in float64: FID is a difference of large traces, and fp32
activations (whose last bits depend on thread count and kernel choice) move it in the sixth
digit; in float64 the same merged log scores the same on any machine, partitioning or thread
count, which is what lets a synthetic run match its reference on both sides of the bounds.
The reference's fp32 activations differ from these by about 1e-6 relative.

Statistics are accumulated batch by batch (Chan's parallel mean/covariance update in
float64), so scoring 5,000 images never holds more than one batch of activations.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_SIZE = 299  # the reference resizes every image to 299x299 (bilinear, no antialias)


def _torch():
    import torch

    return torch


def build_inception(div: int = 1):
    """The FID Inception v3 up to the final average pool; every width is the real one // div."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    def c(x: int) -> int:
        return max(1, x // div)

    class BasicConv2d(nn.Module):
        def __init__(self, cin, cout, **kw):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
            self.bn = nn.BatchNorm2d(cout, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)), inplace=True)

    def avg3(x):
        # TensorFlow's pooling ignores the zero padding (the FID patch of blocks A, C, E_1)
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    class InceptionA(nn.Module):
        def __init__(self, cin, pool):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, c(64), kernel_size=1)
            self.branch5x5_1 = BasicConv2d(cin, c(48), kernel_size=1)
            self.branch5x5_2 = BasicConv2d(c(48), c(64), kernel_size=5, padding=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, c(64), kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(c(64), c(96), kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(c(96), c(96), kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(cin, pool, kernel_size=1)
            self.out = c(64) * 2 + c(96) + pool

        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg3(x))], 1)

    class InceptionB(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3 = BasicConv2d(cin, c(384), kernel_size=3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(cin, c(64), kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(c(64), c(96), kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(c(96), c(96), kernel_size=3, stride=2)
            self.out = c(384) + c(96) + cin

        def forward(self, x):
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionC(nn.Module):
        def __init__(self, cin, c7):
            super().__init__()
            self.branch1x1 = BasicConv2d(cin, c(192), kernel_size=1)
            self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, c(192), kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, c(192), kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = BasicConv2d(cin, c(192), kernel_size=1)
            self.out = c(192) * 4

        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for k in range(1, 6):
                d = getattr(self, f"branch7x7dbl_{k}")(d)
            return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(avg3(x))], 1)

    class InceptionD(nn.Module):
        def __init__(self, cin):
            super().__init__()
            self.branch3x3_1 = BasicConv2d(cin, c(192), kernel_size=1)
            self.branch3x3_2 = BasicConv2d(c(192), c(320), kernel_size=3, stride=2)
            self.branch7x7x3_1 = BasicConv2d(cin, c(192), kernel_size=1)
            self.branch7x7x3_2 = BasicConv2d(c(192), c(192), kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(c(192), c(192), kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(c(192), c(192), kernel_size=3, stride=2)
            self.out = c(320) + c(192) + cin

        def forward(self, x):
            b3 = self.branch3x3_2(self.branch3x3_1(x))
            b7 = x
            for k in range(1, 5):
                b7 = getattr(self, f"branch7x7x3_{k}")(b7)
            return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)

    class InceptionE(nn.Module):
        def __init__(self, cin, max_pool: bool):
            super().__init__()
            self.max_pool = max_pool  # FID's Mixed_7c pools with max (an artefact of the TF graph)
            self.branch1x1 = BasicConv2d(cin, c(320), kernel_size=1)
            self.branch3x3_1 = BasicConv2d(cin, c(384), kernel_size=1)
            self.branch3x3_2a = BasicConv2d(c(384), c(384), kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = BasicConv2d(c(384), c(384), kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(cin, c(448), kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(c(448), c(384), kernel_size=3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(c(384), c(384), kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(c(384), c(384), kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = BasicConv2d(cin, c(192), kernel_size=1)
            self.out = c(320) + 4 * c(384) + c(192)

        def forward(self, x):
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else avg3(x)
            return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)

    class FIDInceptionV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, c(32), kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(c(32), c(32), kernel_size=3)
            self.Conv2d_2b_3x3 = BasicConv2d(c(32), c(64), kernel_size=3, padding=1)
            self.Conv2d_3b_1x1 = BasicConv2d(c(64), c(80), kernel_size=1)
            self.Conv2d_4a_3x3 = BasicConv2d(c(80), c(192), kernel_size=3)
            self.Mixed_5b = InceptionA(c(192), c(32))
            self.Mixed_5c = InceptionA(self.Mixed_5b.out, c(64))
            self.Mixed_5d = InceptionA(self.Mixed_5c.out, c(64))
            self.Mixed_6a = InceptionB(self.Mixed_5d.out)
            self.Mixed_6b = InceptionC(self.Mixed_6a.out, c(128))
            self.Mixed_6c = InceptionC(self.Mixed_6b.out, c(160))
            self.Mixed_6d = InceptionC(self.Mixed_6c.out, c(160))
            self.Mixed_6e = InceptionC(self.Mixed_6d.out, c(192))
            self.Mixed_7a = InceptionD(self.Mixed_6e.out)
            self.Mixed_7b = InceptionE(self.Mixed_7a.out, max_pool=False)
            self.Mixed_7c = InceptionE(self.Mixed_7b.out, max_pool=True)
            self.dims = self.Mixed_7c.out
            # The published file carries the 1008-class head; FID never uses it.
            self.fc = nn.Linear(self.dims, 1008)

        def forward(self, x):
            """x: (N, 3, H, W) in [0, 1] -> (N, dims) pool features, as the reference's block 3."""
            x = F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)
            x = 2 * x - 1
            x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
                x = getattr(self, f"Mixed_{name}")(x)
            return torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)

    return FIDInceptionV3()


def torch_file_problem(path: Path) -> str | None:
    """What is wrong with a torch checkpoint file, cheaply, or None. The zip format (torch >= 1.6)
    is checked by its directory at the end (every member inside the file): a truncated or foreign
    file fails that. The legacy format is read in full by the core's safe loader."""
    import zipfile

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "not found"
    if size == 0:
        return "is empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    if info.header_offset + info.compress_size > size:
                        return f"is truncated (member {info.filename} runs past its end)"
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            return f"is not a readable torch file ({e})"
        return None
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x80\x02":
            return "is not a torch checkpoint (neither its zip format nor the legacy pickle one)"
    from evalkit.safeload import load_torch  # the core's one reader of pickles and checkpoints

    try:
        load_torch(path, "FID Inception weights")
    except KitError as e:
        return f"cannot be read ({e})"
    return None


def load_inception(path: Path, device: str = "cpu"):
    """The FID Inception from its published state dict file; KitError naming the file."""
    from evalkit.safeload import load_torch  # the core's one reader of pickles and checkpoints

    path = Path(path)
    if not path.is_file():
        raise KitError(f"FID Inception weights {path} not found; put {INCEPTION_FILE} (pytorch-fid's FID "
                       f"weights) there; the kit never downloads them.")
    state = load_torch(path, "FID Inception weights")
    # Widths come from the file: the first divisor whose signature layers match builds the net.
    sig = {"Conv2d_1a_3x3.conv.weight": 32, "Conv2d_4a_3x3.conv.weight": 192,
           "Mixed_7c.branch1x1.conv.weight": 320, "Mixed_7c.branch3x3dbl_1.conv.weight": 448}
    try:
        outs = {k: int(state[k].shape[0]) for k in sig}
    except (KeyError, TypeError, AttributeError, IndexError):
        raise KitError(f"{path} is not an FID Inception v3 state dict (no {', '.join(sig)}); "
                       f"use {INCEPTION_FILE}.") from None
    div = next((d for d in (1, 2, 4, 8, 16, 32, 64, 128, 256)
                if all(max(1, w // d) == outs[k] for k, w in sig.items())), None)
    if div is None:
        raise KitError(f"{path}: layer widths {outs} are not those of an FID Inception v3; use {INCEPTION_FILE}.")
    net = build_inception(div)
    # The published file has no BN num_batches_tracked entries; torch fills them in.
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a size mismatch
        raise KitError(f"{path} does not match the FID Inception v3 layout "
                       f"({str(e).strip().splitlines()[-1].strip()}); use {INCEPTION_FILE}.") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KitError(f"{path} does not match the FID Inception v3 layout (missing {missing[:3]}, "
                       f"unexpected {list(unexpected)[:3]}); use {INCEPTION_FILE}.")
    return net.eval().to(device)


def image_batch(images: list[np.ndarray], device: str, dtype=None):
    """uint8 HWC RGB images -> (N, 3, 299, 299) in [0, 1] (float32 unless `dtype`), resized one at
    a time so a batch of 1024x1024 images never exists as float (the resize is per image anyway)."""
    torch = _torch()
    F = torch.nn.functional
    out = []
    for img in images:
        # a copy: the payload is a read-only view of the log's bytes
        x = torch.from_numpy(np.array(img)).to(device).permute(2, 0, 1)[None].to(dtype or torch.float32).div_(255)
        out.append(F.interpolate(x, size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False))
    return torch.cat(out)


class RunningStats:
    """Mean and covariance (ddof=1, as np.cov) of activation rows, one batch at a time."""

    def __init__(self, dims: int):
        self.n = 0
        self.mean = np.zeros(dims, dtype=np.float64)
        self.m2 = np.zeros((dims, dims), dtype=np.float64)

    def update(self, acts: np.ndarray) -> None:
        acts = np.asarray(acts, dtype=np.float64)
        k = acts.shape[0]
        if not k:
            return
        bmean = acts.mean(axis=0)
        centred = acts - bmean
        bm2 = centred.T @ centred
        delta = bmean - self.mean
        n = self.n + k
        # Chan et al.: merge two (count, mean, M2) summaries without losing precision.
        self.m2 += bm2 + np.outer(delta, delta) * (self.n * k / n)
        self.mean += delta * (k / n)
        self.n = n

    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise KitError(f"FID needs at least 2 images, the log has {self.n}")
        return self.m2 / (self.n - 1)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """pytorch-fid's calculate_frechet_distance (same sqrtm, same singular fallback)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise KitError(f"FID statistics have {mu1.shape[0]} dims, the Inception network gives {mu2.shape[0]}; "
                       f"the statistics file and the Inception weights do not belong together")
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise KitError(f"FID: the covariance product has an imaginary square root "
                           f"(max {np.max(np.abs(covmean.imag)):.3g}); too few images for the feature size?")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def read_statistics(path: Path) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise KitError(f"FID statistics {path} not found; put the reference val2014.npz (mu, sigma) there.")
    try:
        with np.load(path, allow_pickle=False) as f:
            mu, sigma = f["mu"][:], f["sigma"][:]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        what = "it is empty" if path.stat().st_size == 0 else f"{type(e).__name__}: {first}"
        raise KitError(f"cannot read FID statistics {path} ({what}); it must be an .npz with arrays 'mu' and "
                       f"'sigma'.") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise KitError(f"{path}: mu {mu.shape} / sigma {sigma.shape} are not a mean vector and its covariance")
    if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
        raise KitError(f"{path}: mu {mu.dtype} / sigma {sigma.dtype} are not floating point statistics")
    return mu.astype(np.float64), sigma.astype(np.float64)
