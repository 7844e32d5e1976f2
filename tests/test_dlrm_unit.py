"""DLRM-v2 specifics: AUC equal to sklearn (ties too), the reference's aggregation stream, the
npz members memory-mapped in place, the host (memory-mapped) table path equal to the device one,
the DCN-v2 arithmetic, and the one-line payload errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evalkit.errors import KitError
from evalkit.scoring import score
from recommendation.dlrm_v2 import criteo
from recommendation.dlrm_v2.auc import roc_auc
from recommendation.dlrm_v2.benchmark import BENCHMARK, CONFIG, DENSE_WEIGHTS, read_config, table_path
from recommendation.dlrm_v2.model import DLRMDCN

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("n, levels", [(7, 3), (1000, 5), (50_000, 2), (20_000, None)])
def test_auc_equals_sklearn_with_ties(n, levels):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 2, n).astype(np.float32)
    y[:2] = [0, 1]
    s = (rng.integers(0, levels, n).astype(np.float32) if levels else rng.random(n, dtype=np.float32))
    s[: n // 3] = s[0]  # one big tie group on top of the rest
    assert roc_auc(y, s) == pytest.approx(sklearn_metrics.roc_auc_score(y, s), abs=1e-12)


def test_auc_edges():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.1, 0.2])


def _reference_offsets(q, n_rows, seed=123):
    # the reference loop (multihot_criteo.py): one global-RNG draw per sample, the last one cut
    np.random.seed(seed)
    out, qo = [], 0
    while True:
        out.append(qo)
        qo = min(qo + q[np.random.randint(low=0, high=len(q))], n_rows)
        if qo >= n_rows:
            break
    out.append(qo)
    return np.array(out)


@pytest.mark.parametrize("n_rows", [1, 699, 100_003])
def test_aggregation_replays_the_reference_stream(n_rows):
    q = np.array([100, 100, 150, 200, 200, 300, 500, 700])
    assert np.array_equal(criteo.aggregation_offsets(q, n_rows), _reference_offsets(q, n_rows))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("dlrm")
    payloads = BENCHMARK.synthesize(out, 6, 0)
    return out, payloads


def test_layout_and_trace_file(synth, tmp_path):
    out, _ = synth
    day = criteo.CriteoDay23(out / "dataset")
    assert day.size == 6 and day.aggregation == criteo.QUANTILE
    assert [a.dtype for a in day.sparse] == [np.int32] * 26
    assert isinstance(day.sparse[20], np.memmap) and day.sparse[20].shape[1] == 100
    assert day.val_rows == day.dense.shape[0] // 2
    # the published trace file takes precedence and gives the same samples
    import shutil
    ds = shutil.copytree(out / "dataset", tmp_path / "ds")
    (ds / criteo.TRACE).write_text("".join(f"{s}, {e}, {e - s}\n" for s, e in zip(day.offsets[:-1], day.offsets[1:])))
    t = criteo.CriteoDay23(ds)
    assert t.aggregation == criteo.TRACE and np.array_equal(t.offsets, day.offsets)
    (ds / criteo.TRACE).write_text("0, 16, 16\n17, 32, 15\n")
    with pytest.raises(KitError, match="consecutive"):
        criteo.CriteoDay23(ds)


def test_host_tables_equal_device_tables(synth):
    out, payloads = synth
    ds = BENCHMARK.open_dataset(out / "dataset")
    net = BENCHMARK.load_model(out / "model", "cpu", "fp32", {"mmap_rows": 0})
    assert net.tables.on_host() == list(range(26))
    batch = BENCHMARK.make_batch([ds.load(i) for i in range(3)], "cpu", "fp32", {})
    got = BENCHMARK.postprocess(BENCHMARK.forward(net, batch), 3)
    for g, p in zip(got, payloads[:3]):
        np.testing.assert_allclose(g, p, rtol=0, atol=1e-6)


def test_forward_is_dcn_v2_arithmetic(synth):
    out, _ = synth
    cfg = read_config(out / "model")
    net = BENCHMARK.load_model(out / "model", "cpu", "fp32", {})
    sd = {k: v.double().numpy() for k, v in torch.load(out / "model" / DENSE_WEIGHTS).items()}
    tables = [np.load(table_path(out / "model", k)).astype(np.float64) for k in range(26)]
    dense, sparse, _ = BENCHMARK.open_dataset(out / "dataset").load(0)
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = dense.astype(np.float64)
    for i in range(len(cfg["dense_arch_layer_sizes"])):
        x = relu(x @ sd[f"dense_arch.model._mlp.{i}._linear.weight"].T + sd[f"dense_arch.model._mlp.{i}._linear.bias"])
    pooled = [tables[k][sparse[k]].sum(axis=1) for k in range(26)]
    x0 = np.concatenate([x] + pooled, axis=1)
    xl = x0
    for i in range(cfg["dcn_num_layers"]):
        xw = (xl @ sd[f"inter_arch.crossnet.V_kernels.{i}"].T) @ sd[f"inter_arch.crossnet.W_kernels.{i}"].T
        xl = x0 * (xw + sd[f"inter_arch.crossnet.bias.{i}"]) + xl
    for i in range(len(cfg["over_arch_layer_sizes"]) - 1):
        xl = relu(xl @ sd[f"over_arch.model.0._mlp.{i}._linear.weight"].T + sd[f"over_arch.model.0._mlp.{i}._linear.bias"])
    z = xl @ sd["over_arch.model.1.weight"].T + sd["over_arch.model.1.bias"]
    want = 1 / (1 + np.exp(-z.reshape(-1)))
    got = BENCHMARK.forward(net, BENCHMARK.make_batch([(dense, sparse, np.zeros(len(dense), np.float32))],
                                                     "cpu", "fp32", {}))[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_score_uses_dataset_labels_and_names_bad_payloads(synth):
    out, payloads = synth
    n = len(payloads)
    m = score(BENCHMARK, ((i, p.tobytes()) for i, p in enumerate(payloads)), out / "dataset", n)
    assert m["AUC"] == 100.0 and m["label_mismatch"] == 0 and m["total"] == n * 16
    # labels carried along with swapped predictions do not rescue the AUC
    m = score(BENCHMARK, ((i, payloads[(i + 1) % n].tobytes()) for i in range(n)), out / "dataset", n)
    assert m["AUC"] < 50 and m["label_mismatch"] > 0
    with pytest.raises(KitError, match="qsl_idx 2: the payload holds 16 float32 values"):
        score(BENCHMARK, ((i, p[: 16 if i == 2 else None].tobytes()) for i, p in enumerate(payloads)), out / "dataset", n)
    assert BENCHMARK.accuracy_lines(m)[0].startswith("AUC=")


def test_checkpoint_errors(synth, tmp_path):
    import shutil
    out, _ = synth
    mp = shutil.copytree(out / "model", tmp_path / "m")
    cfg = json.loads((mp / CONFIG).read_text())
    cfg["embedding_dim"] = 16
    (mp / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(KitError, match="dense.pt does not fit config.json"):
        BENCHMARK.load_model(mp, "cpu", "fp32", {})
    shutil.rmtree(mp)
    mp = shutil.copytree(out / "model", tmp_path / "m")
    table_path(mp, 7).unlink()
    with pytest.raises(KitError, match="t_cat_7.npy"):
        BENCHMARK.load_model(mp, "cpu", "fp32", {})


def test_model_state_names_follow_torchrec():
    cfg = dict(read_config.__globals__["REFERENCE_CONFIG"])
    cfg.update(embedding_dim=4, dense_arch_layer_sizes=[8, 4], over_arch_layer_sizes=[8, 4, 1], dcn_low_rank_dim=2)
    names = set(DLRMDCN(cfg).state_dict())
    assert {"dense_arch.model._mlp.1._linear.weight", "inter_arch.crossnet.V_kernels.2",
            "inter_arch.crossnet.W_kernels.0", "inter_arch.crossnet.bias.1",
            "over_arch.model.0._mlp.1._linear.bias", "over_arch.model.1.weight"} <= names


def test_row_wise_shards_over_devices_equal_one_device(synth):
    out, payloads = synth
    ds = BENCHMARK.open_dataset(out / "dataset")
    net = BENCHMARK.load_model(out / "model", "cpu,cpu,cpu", "fp32", {})
    assert net.tables.sharded() == list(range(26))
    assert net.tables.tables[0].bounds == [0, 16, 32, 48] and net.tables.tables[5].bounds == [0, 1, 2, 3]
    batch = BENCHMARK.make_batch([ds.load(i) for i in range(3)], "cpu,cpu,cpu", "fp32", {})
    got = BENCHMARK.postprocess(BENCHMARK.forward(net, batch), 3)
    for g, p in zip(got, payloads[:3]):
        np.testing.assert_allclose(g, p, rtol=0, atol=1e-6)


def _rewrite_npz(path, fn):
    with np.load(path) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    fn(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # uncompressed, as the published file


def test_corrupt_sparse_file_is_one_line_naming_it(synth, tmp_path):
    import shutil
    out, _ = synth
    ds = shutil.copytree(out / "dataset", tmp_path / "ds")
    data = (ds / criteo.SPARSE).read_bytes()
    for bad in (data[:len(data) // 2], b"", b"\x00" * len(data)):
        (ds / criteo.SPARSE).write_bytes(bad)
        with pytest.raises(KitError, match=rf"{criteo.SPARSE}.*(zip|empty)") as e:
            BENCHMARK.open_dataset(ds, out / "model")
        assert "\n" not in str(e.value)


def test_empty_set_is_one_line_naming_the_file(synth, tmp_path):
    import shutil
    out, _ = synth
    ds = shutil.copytree(out / "dataset", tmp_path / "ds")
    np.save(ds / criteo.DENSE, np.zeros((0, criteo.N_DENSE), np.float32))
    np.save(ds / criteo.LABELS, np.zeros((0, 1), np.float32))
    _rewrite_npz(ds / criteo.SPARSE, lambda a: a.update({k: v[:0] for k, v in a.items()}))
    with pytest.raises(KitError, match=rf"{criteo.DENSE} holds no rows"):
        BENCHMARK.open_dataset(ds, out / "model")


def test_out_of_range_sparse_index_is_found_before_the_model_loads(synth, tmp_path):
    """An index past its embedding table (sizes from the checkpoint's config.json) is found by
    check_available, which the core calls before the model loads: one line naming the file, the
    feature, the row and the sample's qsl_idx."""
    import shutil
    out, _ = synth
    ds = shutil.copytree(out / "dataset", tmp_path / "ds")
    rows = read_config(out / "model")["num_embeddings_per_feature"]
    day = criteo.CriteoDay23(ds)
    s, e = day.rows(4)

    def poke(a):
        a["7"][s + 1, 0] = rows[7]  # one past the table's last row
    _rewrite_npz(ds / criteo.SPARSE, poke)
    d = BENCHMARK.open_dataset(ds, out / "model")
    d.check_available(0, 4)
    with pytest.raises(KitError, match=rf"{criteo.SPARSE}:7\.npy row {s + 1} \(qsl_idx 4\) holds index {rows[7]}") as err:
        d.check_available(0, 6)
    assert "\n" not in str(err.value) and "config.json" in str(err.value)
    _rewrite_npz(ds / criteo.SPARSE, lambda a: a["3"].__setitem__((s, 0), -1))
    with pytest.raises(KitError, match=r"3\.npy row .* holds index -1"):
        BENCHMARK.open_dataset(ds, out / "model").check_available(0, 6)


# --- the published checkpoint: a torchsnapshot of DLRMTrain -----------------------------------------
_TABLE_KEY = "model.sparse_arch.embedding_bag_collection.embedding_bags.t_cat_{}.weight"


def _tensor_entry(location: str, a: np.ndarray, byte_range=None) -> dict:
    """torchsnapshot's TensorEntry as asdict() writes it (manifest.py)."""
    return {"type": "Tensor", "location": location, "serializer": "buffer_protocol", "dtype": "torch.float32",
            "shape": list(a.shape), "replicated": False, "byte_range": byte_range}


class _Slab:
    """batcher.py: small tensors packed into one file batched/<uuid>, each with its byte range."""

    def __init__(self, root, name):
        self.location, self.data = f"batched/{name}", bytearray()
        self.root = root

    def add(self, a: np.ndarray) -> dict:
        lo = len(self.data)
        self.data += np.ascontiguousarray(a, "<f4").tobytes()
        return _tensor_entry(self.location, a, [lo, len(self.data)])

    def close(self):
        (self.root / "batched").mkdir(exist_ok=True)
        (self.root / self.location).write_bytes(bytes(self.data))


def _write_reference_snapshot(model_dir, snap, world_size=3) -> None:
    """What Snapshot.take(path, app_state={"model": DistributedModelParallel(DLRMTrain(DLRM_DCN))})
    writes on `world_size` ranks, in torchsnapshot's on-disk format (not its code): .snapshot_metadata
    (JSON), every key of DLRMTrain's state dict with its `model.` prefix under the app key "model";
    dense tensors on every rank, rank 0's packed into a batched/ slab, the others' in per-rank files;
    tables as ShardedTensors: row-wise over the ranks (files under sharded/, or slabbed), one table
    column-wise, one table-wise on rank 1."""
    snap.mkdir(parents=True)
    dense = {k: v.numpy() for k, v in torch.load(model_dir / DENSE_WEIGHTS).items()}
    tables = [np.load(table_path(model_dir, k)) for k in range(26)]
    keys = [f"model.{k}" for k in dense] + [_TABLE_KEY.format(k) for k in range(26)]
    manifest = {}
    for r in range(world_size):
        manifest[f"{r}/model"] = {"type": "OrderedDict", "keys": keys}
        slab = _Slab(snap, f"{r:08d}-slab")
        for k, a in dense.items():
            path = f"{r}/model/model.{k}"
            if r == 0:
                manifest[path] = slab.add(a)
            else:
                (snap / path).parent.mkdir(parents=True, exist_ok=True)
                (snap / path).write_bytes(a.astype("<f4").tobytes())
                manifest[path] = _tensor_entry(path, a)
        for t, a in enumerate(tables):
            rows, dim = a.shape
            if t == 3:    # column-wise: column block r
                cuts = [(0, rows, dim * r // world_size, dim * (r + 1) // world_size)]
            elif t == 5:  # table-wise: all of it on rank 1
                cuts = [(0, rows, 0, dim)] if r == 1 else []
            else:         # row-wise
                cuts = [(rows * r // world_size, rows * (r + 1) // world_size, 0, dim)]
            shards = []
            for lo, hi, c0, c1 in cuts:
                if hi == lo or c1 == c0:
                    continue
                piece = np.ascontiguousarray(a[lo:hi, c0:c1])
                loc = f"sharded/model/{_TABLE_KEY.format(t)}_{lo}_{c0}"
                if t % 2:
                    entry = slab.add(piece)
                else:
                    (snap / loc).parent.mkdir(parents=True, exist_ok=True)
                    (snap / loc).write_bytes(piece.astype("<f4").tobytes())
                    entry = _tensor_entry(loc, piece)
                shards.append({"offsets": [lo, c0], "sizes": [hi - lo, c1 - c0], "tensor": entry})
            if shards:
                manifest[f"{r}/model/{_TABLE_KEY.format(t)}"] = {"type": "ShardedTensor", "shards": shards}
        slab.close()
    (snap / ".snapshot_metadata").write_text(json.dumps({"version": "0.1.0", "world_size": world_size,
                                                         "manifest": manifest}, indent=2))


def test_the_published_snapshot_converts_to_the_kit_layout(synth, tmp_path):
    """A DLRMTrain snapshot as the reference restores it -> config.json, dense.pt and the 26
    tables, equal to the model it was written from; evaluating the converted dir gives the
    synthetic set's payloads bit for bit. `python -m recommendation.dlrm_v2.snapshot` as pasted."""
    import subprocess
    import sys

    from conftest import ROOT, kit_env

    out, payloads = synth
    snap = tmp_path / "snapshot"
    _write_reference_snapshot(out / "model", snap)
    with pytest.raises(KitError, match="published torchsnapshot; convert it"):
        BENCHMARK.load_model(snap, "cpu", "fp32", {})
    conv = tmp_path / "converted"
    cmd = [sys.executable, "-m", "recommendation.dlrm_v2.snapshot", str(snap), str(conv)]
    cp = subprocess.run(cmd, cwd=ROOT, env=kit_env(), capture_output=True, text=True, timeout=300)
    # the default sizes are the reference model's: the tiny tables are refused, in one line
    assert cp.returncode == 2 and "reach row 48, the model has 40000000" in cp.stderr, cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1 and not conv.exists()
    rows = ",".join(map(str, read_config(out / "model")["num_embeddings_per_feature"]))
    cp = subprocess.run(cmd + ["--num_embeddings_per_feature", rows], cwd=ROOT, env=kit_env(), capture_output=True,
                        text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    assert read_config(conv) == read_config(out / "model")
    want = torch.load(out / "model" / DENSE_WEIGHTS)
    got = torch.load(conv / DENSE_WEIGHTS)
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)
    for k in range(26):
        assert np.array_equal(np.load(table_path(conv, k)), np.load(table_path(out / "model", k))), k
    ds = BENCHMARK.open_dataset(out / "dataset")
    net = BENCHMARK.load_model(conv, "cpu", "fp32", {})
    for i, p in enumerate(payloads):
        q = BENCHMARK.postprocess(BENCHMARK.forward(net, BENCHMARK.make_batch([ds.load(i)], "cpu", "fp32", {})), 1)
        assert np.array_equal(q[0], p), i


def test_a_damaged_snapshot_is_one_line(synth, tmp_path):
    from recommendation.dlrm_v2 import snapshot

    out, _ = synth
    snap = tmp_path / "snap"
    _write_reference_snapshot(out / "model", snap, world_size=3)
    meta = json.loads((snap / ".snapshot_metadata").read_text())
    rows = read_config(out / "model")["num_embeddings_per_feature"]

    def broken(name, edit):
        d = tmp_path / name
        import shutil
        shutil.copytree(snap, d)
        m = json.loads(json.dumps(meta))
        edit(d, m)
        (d / ".snapshot_metadata").write_text(json.dumps(m))
        with pytest.raises(KitError) as e:
            snapshot.convert(d, tmp_path / f"out-{name}", rows)
        assert "\n" not in str(e.value) and not (tmp_path / f"out-{name}").exists()
        return str(e.value)

    t0 = f"1/model/{_TABLE_KEY.format(0)}"
    shard_file = meta["manifest"][t0]["shards"][0]["tensor"]["location"]
    assert "not found" in broken("missing", lambda d, m: (d / shard_file).unlink())
    assert "do not tile" in broken("dropped", lambda d, m: m["manifest"].pop(t0))  # the middle rows
    assert "reach row 32, the model has 48" in broken("last", lambda d, m: m["manifest"].pop(t0.replace("1/", "2/")))

    def outside(d, m):
        m["manifest"][t0]["shards"][0]["tensor"]["location"] = "../../etc/passwd"
    assert "inside the snapshot dir" in broken("outside", outside)

    def pickled(d, m):
        m["manifest"][t0]["shards"][0]["tensor"]["serializer"] = "torch_save"
    assert "'buffer_protocol' tensors only" in broken("pickled", pickled)

    def unprefixed(d, m):
        m["manifest"] = {k.replace("/model.", "/"): v for k, v in m["manifest"].items()}
    assert "lacks the 'model.' prefix" in broken("unprefixed", unprefixed)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(KitError, match="not empty"):
        snapshot.convert(snap, tmp_path / "full", rows)


def test_holes_crc_of_zeros_and_the_npz_numpy_reads(tmp_path):
    """The scale variant's files: a zip member's CRC-32 over a header and L zeros, computed without
    the zeros, equals zlib's over the bytes; the hand-written ZIP64 .npz reads back with numpy, the
    zip module (CRC checked) and the kit's own memory map; a tiled .npy repeats its block."""
    import os
    import zipfile
    import zlib

    from recommendation.dlrm_v2 import criteo
    from recommendation.dlrm_v2.holes import crc32_zeros, write_npy, write_zero_npz

    for data in (b"", b"abc", os.urandom(97)):
        for length in (0, 1, 2, 3, 8, 255, 4096, 100_003):
            assert crc32_zeros(zlib.crc32(data), length) == zlib.crc32(data + bytes(length)), (data, length)
    f = tmp_path / "z.npz"
    write_zero_npz(f, [("0", np.int32, (1000, 3)), ("1", np.int32, (1000, 100))])
    with zipfile.ZipFile(f) as zf:
        assert zf.testzip() is None and zf.namelist() == ["0.npy", "1.npy"]
    z = np.load(f)
    assert z["1"].shape == (1000, 100) and z["1"].dtype == np.int32 and not z["1"].any()
    assert criteo.npz_member_memmap(f, "1.npy").shape == (1000, 100)
    block = np.arange(12, dtype=np.float32).reshape(4, 3)
    write_npy(tmp_path / "d.npy", (20, 3), np.float32, block, 10)
    a = np.load(tmp_path / "d.npy")
    assert a.shape == (20, 3) and (a[:8] == np.concatenate([block, block])).all()
    assert (a[8:10] == block[:2]).all() and not a[10:].any()
