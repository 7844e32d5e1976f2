"""Unit tests for vision/unet3d (CPU, a few seconds): checkpoint names, Gaussian window and window
grid as the reference, DICE vs the reference's one-hot formula, NIfTI round trip, restricted
unpickler, streaming score memory."""
from __future__ import annotations

import json
import pickle
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from evalkit.errors import KitError  # noqa: E402
from evalkit.scoring import score_log  # noqa: E402
from vision.unet3d import kits  # noqa: E402
from vision.unet3d import model as um  # noqa: E402
from vision.unet3d.benchmark import BENCHMARK  # noqa: E402


def _reference_keys() -> list[str]:
    """Key names of best_model_state_dict, spelled out independently of model.py."""
    def pair(p):
        return [f"{p}.conv{c}.{i}.{s}" for c in (1, 2) for i, s in ((0, "weight"), (1, "weight"), (1, "bias"))]
    keys = pair("input_block")
    for i in range(4):
        keys += pair(f"downsample.{i}")
    keys += pair("bottleneck")
    for i in range(5):
        keys += [f"upsample.{i}.upsample_conv.0.weight", f"upsample.{i}.upsample_conv.0.bias"] + pair(f"upsample.{i}")
    return keys + ["output.conv.0.weight", "output.conv.0.bias"]


def test_real_architecture_names_and_shapes():
    sd = um.Unet3D().state_dict()
    assert sorted(sd) == sorted(_reference_keys())
    assert um.filters_of(sd) == (32, 64, 128, 256, 320)
    assert tuple(sd["upsample.0.upsample_conv.0.weight"].shape) == (320, 320, 2, 2, 2)
    assert tuple(sd["upsample.4.conv1.0.weight"].shape) == (32, 64, 3, 3, 3)
    assert tuple(sd["output.conv.0.weight"].shape) == (3, 32, 1, 1, 1)


def test_gaussian_patch_and_windows_as_reference():
    from scipy.signal.windows import gaussian

    g = um.gaussian_patch((64, 64, 64))
    assert g.dtype == np.float32 and g.shape == (64,) * 3 and float(g.max()) == 1.0
    g1 = gaussian(64, 8.0)  # sigma = 0.125 * n
    # cube root of the product of three 1-D windows, normalised to max 1
    want = np.cbrt(g1[5] * g1[32] * g1[50]) / np.cbrt(g1.max() ** 3)
    assert abs(float(g[5, 32, 50]) - want) < 1e-6
    # KiTS19 case shapes are padded so the grid tiles them (stride 64)
    starts = um.window_starts((128, 256, 320), (128, 128, 128))
    assert len(starts) == 1 * 3 * 4 and starts[0] == (0, 0, 0) and starts[-1] == (0, 128, 192)
    assert um.covered((128, 256, 320), (128,) * 3) and not um.covered((128, 250, 320), (128,) * 3)


def test_sliding_window_equals_a_direct_reference_loop():
    torch.manual_seed(0)
    net = um.Unet3D((2, 4, 4, 8, 8)).eval()
    roi = (64, 64, 64)
    img = torch.randn(1, 64, 96, 64)
    patch = torch.from_numpy(um.gaussian_patch(roi))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny 3-D convolutions: threads only add overhead
    try:
        _compare_sliding_window(net, img, roi, patch)
    finally:
        torch.set_num_threads(threads)


def _compare_sliding_window(net, img, roi, patch):
    with torch.inference_mode():
        got = um.sliding_window(net, img, roi, patch)
        got2 = um.sliding_window(net, img, roi, patch, sw_batch=2)
        # the reference loop, in numpy
        res = np.zeros((1, 3, 64, 96, 64), np.float32)
        norm = np.zeros_like(res)
        x = img[None]
        for i, j, k in um.window_starts((64, 96, 64), roi):
            out = net(x[..., i:i + 64, j:j + 64, k:k + 64]).numpy()
            res[..., i:i + 64, j:j + 64, k:k + 64] += out * patch.numpy()
            norm[..., i:i + 64, j:j + 64, k:k + 64] += patch.numpy()
        # inference_utils.finalize after from_tensor's .astype(float): the division in float64
        want = np.argmax(res.astype(np.float64) / norm.astype(np.float64), axis=1).astype(np.uint8)[0]
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)
    assert (got2.numpy() != want).mean() < 1e-3  # batched windows: the same up to last-bit ties


def _reference_finish(outs: np.ndarray, patch: np.ndarray, shape: tuple, roi: tuple) -> tuple[np.ndarray, np.ndarray]:
    """base_SUT.infer_single_query + inference_utils.finalize, dtype for dtype: float32 result and
    3-channel norm_map accumulated window by window (pytorch_SUT's to_tensor is .float()),
    from_tensor = .cpu().numpy().astype(float) (float64), image /= norm_map, np.argmax over the
    classes, uint8. Also returns what the same accumulations give when divided in float32."""
    res = np.zeros((1, 3) + shape, np.float32)
    norm = np.zeros_like(res)
    for w, (i, j, k) in enumerate(um.window_starts(shape, roi)):
        sl = (..., slice(i, i + roi[0]), slice(j, j + roi[1]), slice(k, k + roi[2]))
        res[sl] += outs[w:w + 1] * patch
        norm[sl] += patch
    image = res.astype(float)
    image /= norm.astype(float)
    ref = np.argmax(image, axis=1).astype(np.uint8)[0]
    return ref, np.argmax(res / norm, axis=1).astype(np.uint8)[0]


class _WindowOutputs(torch.nn.Module):
    """A stand-in network: returns the given per-window logits in the order it is called."""

    def __init__(self, outs: np.ndarray):
        super().__init__()
        self.outs, self.i = torch.from_numpy(outs), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        self.i += n
        return self.outs[self.i - n:self.i]


@pytest.mark.parametrize("sw_batch", [1, 3])
def test_finish_divides_in_float64_as_the_reference(sw_batch):
    """Crafted accumulations: kidney's logit is background's plus 0..2 float32 ulps in every window,
    so the float32 quotients of the two classes tie (argmax: background) at voxels where the float64
    quotients do not (argmax: kidney). The kit must give the reference's labels."""
    rng = np.random.default_rng(7)
    roi, shape = (4, 4, 4), (8, 8, 6)
    n_win = len(um.window_starts(shape, roi))
    bg = rng.uniform(1, 2, (n_win, 1) + roi).astype(np.float32)
    kidney = bg.copy()
    steps = rng.integers(0, 3, bg.shape)
    for s in range(2):
        kidney = np.where(steps > s, np.nextafter(kidney, np.float32(4)), kidney)
    outs = np.concatenate([bg, kidney, np.full_like(bg, -5.0)], axis=1)
    patch = rng.uniform(0.05, 1.0, roi).astype(np.float32)
    ref, f32 = _reference_finish(outs, patch, shape, roi)
    assert (f32 != ref).sum() >= 3, "the crafted case no longer separates float32 from float64 division"
    with torch.inference_mode():
        got = um.sliding_window(_WindowOutputs(outs), torch.zeros((1,) + shape), roi, torch.from_numpy(patch),
                                sw_batch)
    assert got.dtype == torch.uint8
    assert np.array_equal(got.numpy(), ref), f"{int((got.numpy() != ref).sum())} voxels differ from the reference"


def _reference_dice(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """accuracy_kits.get_dice_score, literally: one-hot float64, background dropped."""
    def one_hot(a):
        return np.transpose(np.eye(3)[a.reshape(-1)].reshape(list(a.shape) + [3]), (0, 4, 1, 2, 3)).astype(np.float64)
    p, t = one_hot(pred[None])[:, 1:], one_hot(target[None])[:, 1:]
    inter = np.sum(t * p, axis=(2, 3, 4))
    return ((2.0 * inter + 1e-6) / (np.sum(t, axis=(2, 3, 4)) + np.sum(p, axis=(2, 3, 4)) + 1e-6))[0]


@pytest.mark.parametrize("seed", range(4))
def test_dice_equals_reference(seed):
    rng = np.random.default_rng(seed)
    pred = rng.choice(3, size=(20, 24, 16), p=[0.8, 0.15, 0.05]).astype(np.uint8)
    target = np.where(rng.random(pred.shape) < 0.7, pred, rng.choice(3, size=pred.shape)).astype(np.uint8)
    if seed == 3:
        pred[pred == 2] = 0
        target[target == 2] = 0  # tumour absent in both: DICE 1 through the smoothing, as the reference
    k, t = kits.dice(pred, target)
    ref = _reference_dice(pred, target)
    assert k == ref[0] and t == ref[1]


def test_nifti_roundtrip_is_exact(tmp_path):
    """The reference writes predictions as NIfTI and reads them back; for uint8 labels that is
    the identity, so the kit compares the payload directly."""
    import nibabel as nib

    lab = np.random.default_rng(0).integers(0, 3, (8, 9, 10)).astype(np.uint8)
    nib.save(nib.Nifti1Image(lab, affine=np.diag([1.6, 1.2, 1.2, 1])), str(tmp_path / "p.nii.gz"))
    back = nib.load(str(tmp_path / "p.nii.gz")).get_fdata().astype(np.uint8)
    assert np.array_equal(back, lab)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler(tmp_path):
    ok = {"file_list": ["case_00000"], "cases": {"case_00000": {"image_shape": (1, 2, 2, 2),
                                                                   "reshaped_affine": np.eye(4)}}}
    with open(tmp_path / kits.INDEX, "wb") as f:
        pickle.dump(ok, f)
    cases, aux = kits.read_index(tmp_path)
    assert cases == ["case_00000"] and np.array_equal(aux["case_00000"]["reshaped_affine"], np.eye(4))
    with open(tmp_path / "case_00000.pkl", "wb") as f:
        pickle.dump([_Evil(), None], f)
    with pytest.raises(KitError, match="case_00000.pkl.*builtins.print"):
        kits.load_pickle(tmp_path / "case_00000.pkl")
    bad = dict(ok, file_list=["../../etc/x"])
    with open(tmp_path / kits.INDEX, "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(KitError, match="not a plain file name"):
        kits.read_index(tmp_path)


def test_score_streams_a_large_log(tmp_path):
    """Scoring holds one case at a time: peak Python memory stays near a few volumes, not the log."""
    import nibabel as nib

    import shutil

    shape, n = (1, 48, 48, 48), 24
    ds = tmp_path / "ds"
    cases = [f"case_{i:05d}" for i in range(n)]
    rng = np.random.default_rng(0)
    vol = rng.choice(3, size=shape[1:], p=[0.8, 0.15, 0.05]).astype(np.uint8)
    (ds / "nifti").mkdir(parents=True)
    nib.save(nib.Nifti1Image(vol, affine=np.eye(4)), str(ds / "seg.nii.gz"))
    for c in cases:
        (ds / "nifti" / c).mkdir()
        shutil.copy(ds / "seg.nii.gz", ds / "nifti" / c / "segmentation.nii.gz")
    with open(ds / kits.INDEX, "wb") as f:
        pickle.dump({"file_list": cases, "cases": {c: {"image_shape": shape} for c in cases}}, f)
    log = tmp_path / "mlperf_log_accuracy.json"
    hexdata = vol.reshape(-1).tobytes().hex().upper()
    with open(log, "w") as f:
        f.write("[\n" + ",\n".join('{ "seq_id" : %d, "qsl_idx" : %d, "data" : "%s" }' % (i, i, hexdata)
                                  for i in range(n)) + "\n]\n")
    vox = int(np.prod(shape))
    tracemalloc.start()
    m = score_log(BENCHMARK, log, ds, n)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert m["DICE"] == 1.0 and m["cases"] == n
    assert log.stat().st_size > 2 * n * vox  # the log: 2 hex chars per voxel and case
    # one case in flight (its log line, bytes, float32 ground truth, masks): ~14 bytes a voxel,
    # whatever the number of cases; the whole log would be 48 here
    assert peak < 20 * vox, f"peak {peak} bytes for {vox}-voxel cases"


def test_score_rejects_wrong_sizes_and_labels(tmp_path):
    shape = (1, 4, 4, 4)
    with open(tmp_path / kits.INDEX, "wb") as f:
        pickle.dump({"file_list": ["case_00000"], "cases": {"case_00000": {"image_shape": shape}}}, f)
    with pytest.raises(KitError, match="qsl_idx 0 .*63 voxels"):
        BENCHMARK.score([(0, np.zeros(63, np.uint8))], tmp_path, 1)
    with pytest.raises(KitError, match="qsl_idx 0 .*label 7"):
        BENCHMARK.score([(0, np.full(64, 7, np.uint8))], tmp_path, 1)
    assert BENCHMARK.accuracy_lines({"DICE": 0.86170, "kidney": 0.9347, "tumor": 0.7887}) == \
        ["Accuracy: mean = 0.86170, kidney = 0.9347, tumor = 0.7887"]


def test_checkpoint_format_and_errors(tmp_path):
    torch.manual_seed(0)
    sd = um.Unet3D((2, 4, 4, 8, 8)).state_dict()
    torch.save({"best_model_state_dict": sd, "epoch": 1}, tmp_path / "3dunet_kits19_pytorch_checkpoint.pth")
    (tmp_path / "model_config.json").write_text(json.dumps({"roi": 64}))
    m = BENCHMARK.load_model(tmp_path, "cpu", "bf16", {"sw_batch_size": 2})
    assert m.roi == (64, 64, 64) and m.sw_batch == 2 and m.net.output.conv[0].weight.dtype == torch.bfloat16
    del sd["output.conv.0.bias"]
    torch.save({"best_model_state_dict": sd}, tmp_path / "bad.pth")
    with pytest.raises(KitError, match="bad.pth"):
        BENCHMARK.load_model(tmp_path / "bad.pth", "cpu", "fp32", {})


# --- the published checkpoint: MLPerf Training's CheckpointCallback dict ----------------------------
def _training_checkpoint(path: Path, metrics_extra: dict | None = None) -> dict:
    """What image_segmentation/pytorch (MLPerf Training 3D-UNet) saves at the end of fit:
    runtime/callbacks.py CheckpointCallback, torch.save({**last_state, **best_state, "seed": seed}),
    best_state = best_model_state_dict + best_optimizer_state_dict + the evaluate() metrics, whose
    dice scores are numpy float32 scalars (scores.cpu().numpy()[i]) and eval_loss a float; the
    default optimizer is SGD with nesterov momentum (runtime/training.py). Returns the state dict."""
    import copy

    torch.manual_seed(0)
    net = um.Unet3D((2, 4, 4, 8, 8))
    opt = torch.optim.SGD(net.parameters(), lr=0.8, momentum=0.9, nesterov=True, weight_decay=0.0)
    for p in net.parameters():  # one step, so the optimizer state holds its momentum buffers
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    scores = torch.tensor([0.9, 0.87, 0.71]).numpy()
    metrics = {"epoch": 42, "L1 dice": scores[-2], "L2 dice": scores[-1],
               "mean_dice": (scores[-1] + scores[-2]) / 2, "eval_loss": 0.25, **(metrics_extra or {})}
    assert type(metrics["mean_dice"]) is np.float32
    sd = net.state_dict()
    last = {"last_model_state_dict": sd, "last_optimizer_state_dict": opt.state_dict()}
    best = {"best_model_state_dict": copy.deepcopy(sd), "best_optimizer_state_dict": copy.deepcopy(opt.state_dict()),
            **metrics}
    torch.save({**last, **best, "seed": 1}, path)
    return sd


def _respell(src: Path, dst: Path, old: bytes, new: bytes) -> None:
    """Copy a torch zip with data.pkl's `old` replaced by `new` (GLOBAL names are newline-ended)."""
    import zipfile

    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = zi.read(info)
            if info.filename.endswith("/data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zo.writestr(info, data)


def test_the_training_callbacks_checkpoint_loads(tmp_path):
    """numpy scalars next to best_model_state_dict: torch's weights-only load refuses
    numpy._core.multiarray.scalar; the kit's 3D-UNet reader allows exactly it, numpy 1.x's spelling
    numpy.core.multiarray.scalar and numpy.dtype, and loads the best weights."""
    ckpt = tmp_path / "3dunet_kits19_pytorch_checkpoint.pth"
    sd = _training_checkpoint(ckpt)
    (tmp_path / "model_config.json").write_text(json.dumps({"roi": 64}))
    m = BENCHMARK.load_model(tmp_path, "cpu", "fp32", {})
    for k, v in m.net.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # as numpy 1.x (the published file's era) spells the scalar's module
    old = tmp_path / "numpy1"
    old.mkdir()
    (old / "model_config.json").write_text(json.dumps({"roi": 64}))
    _respell(ckpt, old / ckpt.name, b"numpy._core.multiarray\nscalar\n", b"numpy.core.multiarray\nscalar\n")
    m = BENCHMARK.load_model(old, "cpu", "fp32", {})
    assert torch.equal(m.net.output.conv[0].weight, sd["output.conv.0.weight"])


class _Touch:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_the_checkpoint_reader_allows_nothing_else(tmp_path):
    """Beside the metrics: a reduce to os.system, a numpy array (its _reconstruct is not listed for
    this reader) and the audit's dotted name are each refused in one line naming the file."""
    marker = tmp_path / "ran"
    cases = {"os.system": {"hostile": _Touch(marker)},
             "numpy._core.multiarray._reconstruct": {"extra": np.zeros(3, np.float32)}}
    for name, extra in cases.items():
        d = tmp_path / name
        d.mkdir()
        _training_checkpoint(d / "3dunet_kits19_pytorch_checkpoint.pth", extra)
        with pytest.raises(KitError) as e:
            BENCHMARK.load_model(d, "cpu", "fp32", {})
        msg = str(e.value)
        assert "\n" not in msg and "3dunet_kits19_pytorch_checkpoint.pth" in msg, msg
        assert "refusing to unpickle" in msg and name.split(".")[-1] in msg, msg
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    _training_checkpoint(tmp_path / "plain.pth")
    _respell(tmp_path / "plain.pth", dotted / "3dunet_kits19_pytorch_checkpoint.pth",
             b"numpy._core.multiarray\nscalar\n", b"numpy\n_core.multiarray.scalar\n")
    with pytest.raises(KitError, match=r"refusing to unpickle numpy\._core\.multiarray\.scalar"):
        BENCHMARK.load_model(dotted, "cpu", "fp32", {})
    assert not marker.exists()


def _tiny_kits(root: Path, n: int = 3, shape=(1, 4, 4, 4)) -> list[str]:
    """A KiTS19 preprocessed layout of n cases with their ground truth (tiny volumes)."""
    import nibabel as nib

    cases = [f"case_{i:05d}" for i in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / kits.INDEX, "wb") as f:
        pickle.dump({"file_list": cases, "cases": {c: {"image_shape": shape} for c in cases}}, f)
    for c in cases:
        with open(root / f"{c}.pkl", "wb") as f:
            pickle.dump([np.zeros(shape, np.float32), np.zeros(shape, np.uint8)], f)
        (root / "nifti" / c).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros(shape[1:], np.uint8), affine=np.eye(4)),
                 str(root / "nifti" / c / "segmentation.nii.gz"))
    return cases


@pytest.mark.parametrize("how", ["delete", "empty", "truncate"])
def test_ground_truth_is_checked_before_the_model_loads(tmp_path, how):
    """The ground truth (nifti/<case>/segmentation.nii.gz) is needed only to score, after the whole
    run: check_available (before the model loads) finds it missing, empty or truncated already,
    naming the file and its qsl_idx."""
    cases = _tiny_kits(tmp_path)
    ds = kits.KiTS19(tmp_path)
    ds.check_available(0, 3)
    gt = tmp_path / "nifti" / cases[1] / "segmentation.nii.gz"
    data = gt.read_bytes()
    if how == "delete":
        gt.unlink()
    else:
        gt.write_bytes(b"" if how == "empty" else data[:len(data) // 2])
    ds.check_available(0, 1)
    with pytest.raises(KitError, match=r"case_00001/segmentation\.nii\.gz \(qsl_idx 1\)"):
        ds.check_available(0, 3)


@pytest.mark.parametrize("how", ["delete", "empty", "truncate", "garbage"])
def test_case_pickle_is_checked_without_unpickling(tmp_path, how):
    cases = _tiny_kits(tmp_path)
    p = tmp_path / f"{cases[2]}.pkl"
    data = p.read_bytes()
    if how == "delete":
        p.unlink()
    else:
        p.write_bytes({"empty": b"", "truncate": data[:len(data) // 2],
                       "garbage": bytes(range(256)) * (len(data) // 256 + 1)}[how])
    ds = kits.KiTS19(tmp_path)
    ds.check_available(0, 2)
    with pytest.raises(KitError, match=r"case_00002\.pkl \(qsl_idx 2\)"):
        ds.check_available(0, 3)
