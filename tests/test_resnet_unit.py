"""Unit tests for vision/resnet50 (CPU, < 60 s)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root, without needing a conftest

import torch  # noqa: E402

from evalkit.errors import KitError  # noqa: E402
from evalkit.scoring import score
from vision.resnet50 import preprocess as pp  # noqa: E402
from vision.resnet50.benchmark import BENCHMARK  # noqa: E402
from vision.resnet50.model import resnet50  # noqa: E402


def _torchvision_keys() -> list[str]:
    """torchvision resnet50 state-dict keys, spelled out independently of model.py."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for li, blocks in enumerate((3, 4, 6, 3), 1):
        for b in range(blocks):
            p = f"layer{li}.{b}"
            for j in (1, 2, 3):
                keys += [f"{p}.conv{j}.weight"] + [f"{p}.bn{j}.{s}" for s in bn]
            if b == 0:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{s}" for s in bn]
    return keys + ["fc.weight", "fc.bias"]


# --- model -------------------------------------------------------------------------
def test_state_dict_matches_torchvision():
    m = resnet50()
    sd = m.state_dict()
    assert list(sd.keys()) == _torchvision_keys()
    assert len(sd) == 320
    for k in ("layer4.2.bn3.num_batches_tracked", "layer1.0.downsample.1.running_var",
              "layer3.5.conv2.weight", "layer2.0.downsample.0.weight", "fc.weight"):
        assert k in sd
    assert sum(p.numel() for p in m.parameters()) == 25_557_032
    assert tuple(sd["fc.weight"].shape) == (1000, 2048)
    assert tuple(sd["layer4.0.downsample.0.weight"].shape) == (2048, 1024, 1, 1)
    # v1.5: the stride-2 is in the 3x3 conv
    assert m.layer2[0].conv1.stride == (1, 1) and m.layer2[0].conv2.stride == (2, 2)
    assert m.layer4[0].downsample[0].stride == (2, 2)


def test_init_and_forward_shape():
    torch.manual_seed(0)
    m = resnet50().eval()
    w = m.layer3[0].conv2.weight.detach()  # fan_out = 256 * 3 * 3
    assert abs(float(w.std()) - (2.0 / (256 * 9)) ** 0.5) < 0.1 * (2.0 / (256 * 9)) ** 0.5
    assert torch.all(m.layer1[0].bn3.weight == 1) and torch.all(m.layer1[0].bn3.bias == 0)
    with torch.no_grad():
        assert tuple(m(torch.zeros(1, 3, 64, 64)).shape) == (1, 1000)


def test_load_model_strict_roundtrip_and_errors(tmp_path):
    torch.save(resnet50().state_dict(), tmp_path / "resnet50.pth")
    m = BENCHMARK.load_model(tmp_path, "cpu", "bf16", {})
    assert not m.training and m.fc.weight.dtype == torch.bfloat16
    assert m.conv1.weight.is_contiguous()  # NCHW, the reference's layout, by default
    m = BENCHMARK.load_model(tmp_path / "resnet50.pth", "cpu", "fp32", {"channels_last": True})
    assert m.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(KitError, match="int8"):
        BENCHMARK.load_model(tmp_path, "cpu", "int8", {})
    with pytest.raises(KitError, match="nothere"):
        BENCHMARK.load_model(tmp_path / "nothere", "cpu", "fp32", {})
    sd = resnet50().state_dict()
    del sd["fc.bias"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(KitError, match="bad.pth"):
        BENCHMARK.load_model(tmp_path / "bad.pth", "cpu", "fp32", {})


# --- preprocessing ---------------------------------------------------------------------
def _reference(img: Image.Image, size, box) -> np.ndarray:
    x = np.asarray(img.convert("RGB").resize(size, Image.BILINEAR).crop(box), np.float32) / 255.0
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)


@pytest.mark.parametrize("wh,size,box", [
    ((301, 200), (385, 256), (80, 16, 304, 240)),     # wide: int(256*301/200)=385; round(80.5)=80 (half-even)
    ((200, 333), (256, 426), (16, 101, 240, 325)),    # tall: int(256*333/200)=426; round(101.0)=101
    ((256, 300), (256, 300), (16, 38, 240, 262)),     # short side already 256: no resize
])
def test_preprocess_arithmetic(wh, size, box):
    assert pp.resized_size(*wh) == size
    assert pp.crop_box(*size) == box
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    out = pp.preprocess_image(img)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, _reference(img, size, box), rtol=0, atol=1e-6)


def test_preprocess_converts_grayscale():
    img = Image.fromarray(np.full((240, 260), 128, np.uint8), mode="L")
    out = pp.preprocess_image(img)
    assert out.shape == (3, 224, 224)
    np.testing.assert_allclose(out[:, 0, 0], (128 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), atol=1e-5)


# --- accuracy ------------------------------------------------------------------------------
def _f32(label: int) -> bytes:
    return np.array([label], np.float32).tobytes()


@pytest.fixture
def small_map(tmp_path):
    (tmp_path / "val_map.txt").write_text("a.JPEG 5\nb.JPEG 7\nc.JPEG 9\nd.JPEG 1\n")
    return tmp_path


def test_accuracy_first_occurrence_and_partial(small_map):
    entries = [(0, _f32(5)), (0, _f32(6)),   # right first: counts as good
               (1, _f32(8)), (1, _f32(7)),   # wrong first: counts as bad
               (2, _f32(9))]                 # idx 3 absent: partial log scored on what it has
    m = score(BENCHMARK, entries, small_map, 4)
    assert m == {"acc": pytest.approx(200 / 3), "good": 2, "total": 3}
    assert type(m["acc"]) is float and type(m["good"]) is int
    assert BENCHMARK.accuracy_lines(m) == ["accuracy=66.667%, good=2, total=3"]


def test_accuracy_rejects_bad_payloads(small_map):
    with pytest.raises(KitError, match="qsl_idx 1"):
        score(BENCHMARK, [(0, _f32(5)), (1, b"\x00\x00\x80")], small_map, 4)
    with pytest.raises(KitError):
        score(BENCHMARK, [(0, b"")], small_map, 4)
    with pytest.raises(KitError, match="qsl_idx 3"):
        score(BENCHMARK, [(3, _f32(1))], small_map, 3)


def test_val_map_errors(tmp_path):
    with pytest.raises(KitError, match="nope"):
        BENCHMARK.open_dataset(tmp_path / "nope")
    with pytest.raises(KitError, match="val_map.txt"):
        BENCHMARK.open_dataset(tmp_path)
    (tmp_path / "val_map.txt").write_text("a.JPEG 5\nb.JPEG x\n")
    with pytest.raises(KitError, match="line 2"):
        BENCHMARK.open_dataset(tmp_path)


# --- synthetic data ---------------------------------------------------------------------------
N_SYN = 16


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    payloads = BENCHMARK.synthesize(out, N_SYN, seed=0)
    return out, payloads


def test_synthesize_layout_and_diversity(synth):
    out, payloads = synth
    lines = (out / "dataset" / "val_map.txt").read_text().splitlines()
    assert len(lines) == N_SYN and len(payloads) == N_SYN
    assert lines[0].split()[0] == "ILSVRC2012_val_00000001.JPEG"
    sizes = set()
    for line in lines:
        with Image.open(out / "dataset" / line.split()[0]) as im:
            assert im.format == "JPEG" and 180 <= min(im.size) and max(im.size) <= 320
            sizes.add(im.size)
    assert len(sizes) > 1
    assert (out / "model" / "resnet50.pth").stat().st_size > 90e6  # full-size ResNet50
    labels = [int(p[0]) for p in payloads]
    assert all(p.dtype == np.float32 and p.shape == (1,) for p in payloads)
    assert [int(l.split()[1]) for l in lines] == labels
    assert len(set(labels)) >= N_SYN // 2
    assert sum(labels[i] == labels[i + 1] for i in range(N_SYN - 1)) / (N_SYN - 1) <= 0.2


def test_synthetic_repredict_batch4(synth):
    out, payloads = synth
    ds = BENCHMARK.open_dataset(out / "dataset")
    ds.check_available(0, ds.size)
    model = BENCHMARK.load_model(out / "model", "cpu", "fp32", {})
    preds = []
    for s in range(0, ds.size, 4):
        batch = BENCHMARK.make_batch([ds.load(i) for i in range(s, min(s + 4, ds.size))], "cpu", "fp32", {})
        preds += BENCHMARK.postprocess(BENCHMARK.forward(model, batch), len(batch))
    assert [int(p[0]) for p in preds] == ds.labels.tolist()
    entries = [(i, p.tobytes()) for i, p in enumerate(preds)]
    m = score(BENCHMARK, entries, out / "dataset", ds.size)
    assert m["acc"] == BENCHMARK.synthetic_reference()["acc"] and m["total"] == N_SYN
    assert BENCHMARK.fingerprint(out / "dataset", out / "model") == {}  # val_map.txt: by content, in the core


def test_synthetic_index_shift_fails(synth):
    out, payloads = synth
    shifted = [(i, payloads[(i + 1) % N_SYN].tobytes()) for i in range(N_SYN)]
    assert score(BENCHMARK, shifted, out / "dataset", N_SYN)["acc"] < 20.0


def test_missing_image_is_an_error(synth, tmp_path):
    out, _ = synth
    ds_dir = tmp_path / "ds"
    shutil.copytree(out / "dataset", ds_dir)
    (ds_dir / "ILSVRC2012_val_00000005.JPEG").unlink()
    ds = BENCHMARK.open_dataset(ds_dir)
    assert ds.size == N_SYN  # never skipped
    ds.check_available(0, 4)
    with pytest.raises(KitError, match=r"ILSVRC2012_val_00000005\.JPEG \(qsl_idx 4\) is missing"):
        ds.check_available(2, N_SYN)
    with pytest.raises(KitError, match=r"ILSVRC2012_val_00000005\.JPEG \(qsl_idx 4\) is missing"):
        ds.load(4)
    (ds_dir / "ILSVRC2012_val_00000006.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(KitError, match=r"ILSVRC2012_val_00000006\.JPEG \(qsl_idx 5\) is not a JPEG"):
        ds.check_available(5, N_SYN)
    with pytest.raises(KitError, match=r"ILSVRC2012_val_00000006\.JPEG.*unreadable"):
        ds.load(5)


def test_truncated_or_empty_image_is_found_before_the_model_loads(synth, tmp_path):
    """check_available (the core calls it before the model loads) reads both ends of each image:
    a truncated or empty JPEG is refused there, naming the file and its qsl_idx; trailing bytes
    after a whole image are not an error."""
    out, _ = synth
    ds_dir = shutil.copytree(out / "dataset", tmp_path / "ds")
    f = ds_dir / "ILSVRC2012_val_00000003.JPEG"
    whole = f.read_bytes()
    f.write_bytes(whole + b"\0" * 5000)  # padding after EOI: still the same image
    ds = BENCHMARK.open_dataset(ds_dir)
    ds.check_available(0, N_SYN)
    f.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(KitError, match=r"ILSVRC2012_val_00000003\.JPEG \(qsl_idx 2\) is truncated"):
        ds.check_available(0, N_SYN)
    f.write_bytes(b"")
    with pytest.raises(KitError, match=r"ILSVRC2012_val_00000003\.JPEG \(qsl_idx 2\) is empty"):
        ds.check_available(0, N_SYN)


def test_uint8_crops_normalised_by_torch_equal_the_float_path(synth):
    """The device path (uint8 stored, normalised where the model runs) is bit-identical to the
    reference float32 numpy preprocessing on CPU."""
    import torch

    from vision.resnet50.preprocess import crop_file, normalize, preprocess_file

    out, _ = synth
    for f in sorted((out / "dataset").glob("*.JPEG"))[:4]:
        want = preprocess_file(f)
        got = normalize(torch.from_numpy(crop_file(f))[None])[0].numpy()
        assert got.dtype == np.float32 and np.array_equal(got, want), f
