"""ResNet50 v1.5 on ImageNet 2012 val (MLPerf `resnet50`, checker `resnet`).

Follows the reference `imagenet_pytorch` profile: torchvision 1000-class
weights, PIL preprocessing, argmax with offset 0, label sent as one float32
(the reference vision SUT casts every result to float32).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark, Dataset
from evalkit.errors import KitError

from vision.image_files import image_problem

from .preprocess import crop_file, normalize, preprocess_file

VAL_MAP = "val_map.txt"
CHECKPOINT = "resnet50.pth"
NUM_CLASSES = 1000

# synthetic data knobs
_CALIB_IMAGES = 16        # BN/fc calibration set, drawn independently of n so the model depends on seed only
# (top1 - top2) / std(logits) of every evaluated image: a clear call, so that what changes logits without a bug
# (int8 quantization: 0.07 std here; bf16 rounding, batch size, kernels) keeps its label; an index shift still fails
_MIN_REL_MARGIN = 0.3
# residual branches scaled by this after their BN statistics (as zero_init_residual does, partly): a random
# ResNet with full-gain branches maps every image near one shared feature, and its int8 rounding error is as
# large as the logit spread (0.85 std of the logits; 4 of 24 labels kept). Measured with the fc below:
# gain 1.0 -> 0.64 std, 0.3 -> 0.07 std (bench/bench_quant.py, docs/quantization.md)
_RESIDUAL_GAIN = 0.3
_MAX_ATTEMPTS = 100


def _read_val_map(root: Path) -> tuple[list[str], np.ndarray]:
    """Parse <root>/val_map.txt -> (relative image paths, int64 labels); KitError on any problem."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"ImageNet dataset directory {root} does not exist; prepare the ImageNet 2012 "
                       f"validation set there (val_map.txt + images) or pass the right path.")
    vm = root / VAL_MAP
    if not vm.is_file():
        raise KitError(f"{vm} not found; the ImageNet dataset directory must contain val_map.txt "
                       f"('<image path> <label>' per line) next to the images.")
    try:
        text = vm.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise KitError(f"cannot read {vm}: {e}; check the file.") from None
    if text and not text.endswith("\n"):  # a file cut short keeps a valid-looking last line (label cut)
        raise KitError(f"{vm} does not end with a line break: it is truncated; re-download val_map.txt (if the "
                       f"file is whole, add the final line break).")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines only; a blank line inside shifts indices
        lines.pop()
    names: list[str] = []
    labels: list[int] = []
    for lineno, line in enumerate(lines, 1):
        cols = line.split()
        label = None
        if len(cols) == 2:
            try:
                label = int(cols[1])
            except ValueError:
                pass
        if label is None or not 0 <= label < NUM_CLASSES:
            raise KitError(f"{vm} line {lineno} is malformed: expected '<image path> <label 0..999>', "
                           f"got {line!r}; fix or re-download val_map.txt.")
        if cols[0].startswith("/") or ".." in cols[0].split("/"):
            raise KitError(f"{vm} line {lineno}: image {cols[0]!r} is not a path inside the dataset dir "
                           f"(absolute or with '..'); refusing to read outside {root}.")
        names.append(cols[0])
        labels.append(label)
    if not names:
        raise KitError(f"{vm} is empty; re-download val_map.txt.")
    return names, np.asarray(labels, dtype=np.int64)


class ImageNetDataset(Dataset):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.names, self.labels = _read_val_map(self.root)
        self.size = len(self.names)
        self.index_file = self.root / VAL_MAP

    def path(self, index: int) -> Path:
        if not 0 <= index < self.size:
            raise KitError(f"sample index {index} is outside the dataset {self.root} (size {self.size}).")
        return self.root / self.names[index]

    def load(self, index: int) -> np.ndarray:
        """The uint8 CHW crop; normalised on the model's device (ResNet50.make_batch)."""
        p = self.path(index)
        try:
            return crop_file(p)
        except FileNotFoundError:
            raise KitError(f"image {p} (qsl_idx {index}) is missing; restore it, never skip it "
                           f"(a skip shifts every later index).") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise KitError(f"image {p} (qsl_idx {index}) is unreadable ({type(e).__name__}: {e}); "
                           f"replace the file.") from None

    def check_available(self, start: int, stop: int) -> None:
        # both ends of every file (vision/image_files.py): missing, empty, foreign or truncated
        # images fail here, before the model loads
        for i in range(start, stop):
            p = self.root / self.names[i]
            problem = image_problem(p)
            if problem is not None:
                hint = ("restore it before running (a skip would shift every later index)"
                        if problem == "is missing" else "replace it with the ImageNet original")
                raise KitError(f"image {p} (qsl_idx {i}) {problem}; {hint}.")


def _checkpoint_path(model_path: Path) -> Path:
    p = Path(model_path)
    return p / CHECKPOINT if p.is_dir() else p


def _synthetic_image(rng: np.random.Generator):
    """A random RGB picture with structure: gradient + soft blobs + stripes + noise, 180-320 px a side."""
    from PIL import Image

    w, h = (int(v) for v in rng.integers(180, 321, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= h
    xx /= w
    a = rng.uniform(0, 2 * np.pi)
    t = np.cos(a) * xx + np.sin(a) * yy
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    img = c0 + (c1 - c0) * t[..., None]
    for _ in range(int(rng.integers(2, 7))):
        cy, cx = rng.uniform(0, 1, 2)
        s = rng.uniform(0.05, 0.3)
        col = rng.uniform(0, 255, 3).astype(np.float32)
        m = (rng.uniform(0.5, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)))[..., None]
        img = img * (1 - m) + col * m
    f, b = rng.uniform(2, 30), rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * f * (np.cos(b) * xx + np.sin(b) * yy) + rng.uniform(0, 2 * np.pi))
    img += stripes[..., None] * rng.uniform(0, 40, 3).astype(np.float32)
    img += rng.normal(0, rng.uniform(2, 12), img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


class ResNet50(Benchmark):
    name = "resnet"
    mlperf_name = "resnet50"
    checker_names = {"99": "resnet"}
    default_accuracy_target = "99"
    dataset_size = 50000
    performance_sample_count = 1024
    payload_dtype = "float32"
    payload_size = 1              # the label, as the reference vision SUT sends it
    default_batch_size = 32
    cuda_batch_size = 256         # one H100/H200: the model is compute bound from here on
    # NCHW by default, the reference's layout (bit-identical logits on CPU in fp32); NHWC is the speed
    # option for GPUs and bf16: logits differ in the last bits (3.8e-4 max on the synthetic net, same top-1)
    options = {"channels_last": False}
    default_quantizer = "int8-static"   # CALIBRATE=true: torchao PT2E static int8 (docs/quantization.md)

    # --- data -----------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> ImageNetDataset:
        return ImageNetDataset(Path(path))

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        vm = Path(dataset_path) / VAL_MAP
        if not vm.is_file():
            raise KitError(f"{vm} not found; the ImageNet dataset directory must contain val_map.txt.")
        ckpt = _checkpoint_path(model_path)
        if not ckpt.is_file():
            raise KitError(f"checkpoint {ckpt} not found; put the torchvision ResNet50 state dict there "
                           f"as {CHECKPOINT}.")
        return {}  # val_map.txt, the images and the checkpoint: by content, in the core

    def sample_key(self, dataset: ImageNetDataset, index: int) -> str:
        """An image by its file's sha256 (cached per machine): the leak check never decodes 50,000 JPEGs."""
        from evalkit.identity import file_sha256

        return file_sha256(dataset.path(index))

    # --- model ----------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> Any:
        import torch

        from .model import resnet50

        dtype = self.torch_dtype(data_type)
        ckpt = _checkpoint_path(model_path)
        if not ckpt.is_file():
            raise KitError(f"checkpoint {ckpt} not found; put the torchvision ResNet50 state dict "
                           f"(e.g. resnet50-0676ba61.pth) there as {CHECKPOINT}.")
        from evalkit.safeload import load_torch  # the core's one reader of pickles and checkpoints

        state = load_torch(ckpt, "ResNet50 checkpoint")
        model = resnet50()
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KitError(f"checkpoint {ckpt} is not a torchvision resnet50 state dict ({first}); "
                           f"use the torchvision weights file.") from None
        model.eval()
        model.to(device=device, dtype=dtype)
        if options.get("channels_last", self.options["channels_last"]):
            model.to(memory_format=torch.channels_last)
        return model

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> Any:
        import torch

        x = torch.from_numpy(np.stack([np.asarray(s) for s in samples]))
        if x.dtype == torch.uint8:  # dataset crops: normalised on the device
            return self.batch_from_store(x.to(device), device, data_type, options)
        return self._finish(x.to(device=device, dtype=torch.float32), data_type, options)  # float images

    def store_sample(self, sample: Any) -> Any:
        import torch
        return torch.from_numpy(np.ascontiguousarray(sample, dtype=np.uint8))

    def batch_from_store(self, x: Any, device: str, data_type: str, options: dict) -> Any:
        return self._finish(normalize(x), data_type, options)

    def _finish(self, x, data_type: str, options: dict):
        import torch

        x = x.to(dtype=self.torch_dtype(data_type))
        if options.get("channels_last", self.options["channels_last"]):
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def postprocess(self, outputs: Any, n: int) -> list[np.ndarray]:
        import torch

        logits = torch.as_tensor(outputs)[:n]
        # offset 0: torchvision's 1000 classes are already 0..999
        labels = logits.argmax(dim=1).cpu().numpy()
        return [np.array([lab], dtype=np.float32) for lab in labels]

    # --- accuracy -------------------------------------------------------------
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        _, labels = _read_val_map(Path(dataset_path))
        vm = Path(dataset_path) / VAL_MAP
        good = total = 0
        for qsl_idx, payload in pairs:
            if qsl_idx >= len(labels):
                raise KitError(f"qsl_idx {qsl_idx} has no line in {vm} ({len(labels)} lines).")
            value = float(payload[0])
            if not np.isfinite(value):
                raise KitError(f"response for qsl_idx {qsl_idx} is {value}, not a class label.")
            total += 1
            good += int(value) == int(labels[qsl_idx])  # offset 0, like accuracy-imagenet.py
        return {"acc": 100.0 * good / total, "good": good, "total": total}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        return ["accuracy={:.3f}%, good={}, total={}".format(
            float(metrics["acc"]), int(metrics["good"]), int(metrics["total"]))]

    # --- synthetic ------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        import torch

        from .model import resnet50

        out = Path(out)
        ds_dir, model_dir = out / "dataset", out / "model"
        ds_dir.mkdir(parents=True, exist_ok=True)
        model_dir.mkdir(parents=True, exist_ok=True)

        def jpeg_roundtrip(img) -> np.ndarray:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            buf.seek(0)
            return preprocess_file(buf)

        # 1. random network (seeded without disturbing the caller's RNG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = resnet50()
        calib = np.stack([jpeg_roundtrip(_synthetic_image(np.random.default_rng([seed, 1, k])))
                          for k in range(_CALIB_IMAGES)])
        xc = torch.from_numpy(calib)
        with torch.no_grad():
            # 2. BN running stats = exact statistics of the synthetic inputs (momentum=None: cumulative)
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
            model.train()
            model(xc)
            model.eval()
            for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
                for block in layer:
                    block.bn3.weight.mul_(_RESIDUAL_GAIN)
            # 3. fc reads the directions in which the calibration images' features differ (their principal
            #    components, whitened) through a seeded random 1000 x k map: labels spread over the classes
            #    (a random fc puts every image of a random net in one or two classes: a shared mean feature
            #    dominates), and rounding noise, spread over all 2048 features, hardly reaches the logits
            feats = []
            hook = model.avgpool.register_forward_hook(lambda mod, i, o: feats.append(torch.flatten(o, 1)))
            model(xc)
            hook.remove()
            f = feats[0].double()
            mu = f.mean(0)
            _, sv, vh = torch.linalg.svd(f - mu, full_matrices=False)
            k = _CALIB_IMAGES - 1  # the rank of the centred calibration features
            whiten = vh[:k] / sv[:k, None] * (_CALIB_IMAGES - 1) ** 0.5
            mix = torch.randn(NUM_CLASSES, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            model.fc.weight.copy_(mix @ whiten)
            model.fc.bias.copy_(-(mix @ (whiten @ mu)))
        torch.save(model.state_dict(), model_dir / CHECKPOINT)
        del model

        # 4. ground truth = the saved model's own fp32 batch-1 prediction via the real load path
        from evalkit.synth import distinct, link_copy, one_thread

        net = self.load_model(model_dir, "cpu", "fp32", {})
        names, labels, payloads = [], [], []
        m = distinct(n)  # images drawn and classified; beyond them the set repeats them (scale variant)
        with one_thread():  # batch-1 forwards; labels keep a margin, so the thread count cannot flip one
            for i in range(m):
                name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
                for attempt in range(_MAX_ATTEMPTS):
                    img = _synthetic_image(np.random.default_rng([seed, 2, i, attempt]))
                    img.save(ds_dir / name, "JPEG", quality=90)
                    x = preprocess_file(ds_dir / name)
                    y = self.forward(net, self.make_batch([x], "cpu", "fp32", {})).float()
                    top2 = y[0].topk(2).values
                    if float(top2[0] - top2[1]) >= _MIN_REL_MARGIN * float(y[0].std()):
                        break
                else:
                    raise KitError(f"could not draw a synthetic image {i} with a clear top-1 class in "
                                   f"{_MAX_ATTEMPTS} tries (seed {seed}); try another seed.")
                payload = self.postprocess(y, 1)[0]
                names.append(name)
                labels.append(int(payload[0]))
                payloads.append(payload)
        for i in range(m, n):  # image i is a copy of image i % m under its own name (a hard link where allowed)
            name = f"ILSVRC2012_val_{i + 1:08d}.JPEG"
            link_copy(ds_dir / names[i % m], ds_dir / name)
            names.append(name)
            labels.append(labels[i % m])
            payloads.append(payloads[i % m])

        same = sum(labels[i] == labels[i + 1] for i in range(n - 1)) / max(n - 1, 1)
        distinct = len(set(labels))
        if same > 0.2 or distinct < min(n, 10) // 2:
            raise KitError(f"the synthetic labels are not diverse enough ({distinct} distinct of {n}, "
                           f"{same:.0%} equal neighbours; seed {seed}); an index shift would go unnoticed. "
                           f"Try another seed or a larger n.")
        (ds_dir / VAL_MAP).write_text("".join(f"{nm} {lab}\n" for nm, lab in zip(names, labels)))
        return payloads

    def synthetic_reference(self) -> dict[str, float]:
        return {"acc": 100.0}


BENCHMARK = ResNet50()
