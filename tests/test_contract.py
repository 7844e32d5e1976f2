"""The contract every registered model passes: registering a model is opting in.

For each model of evalkit/registry.py, with real LoadGen on its synthetic set:
the set writes and proves itself (truth = reference, shift fails), 1 and 3 partitions
merge to byte-identical logs, the run PASSes on CPU fp32, accuracy.txt parses with the
submission checker's pattern for each of the model's checker names, an index shift
scores below the target, and a payload of the wrong dtype is a one-line error.
No per-model code here: a new model gets all of it by registering.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from evalkit import registry, targets
from evalkit.errors import KitError
from evalkit.rundir import MERGED

from conftest import SYNTH_N, one_line_error, rewrite_merged

# A dtype of another item size than the model's: its bytes cannot pass as the right payload.
WRONG_DTYPE = {1: "float32", 2: "float32", 4: "float16", 8: "int32"}


class Contract:
    def __init__(self, name: str, base: Path, synthetic, forked):
        self.name = name
        self.kit = forked.evalkit  # `python -m evalkit ARGS` in a forked child (tests/forkserver.py)
        self.bench = registry.get(name)
        self.n = min(self.bench.synthetic_n, SYNTH_N)
        self.synth = synthetic(name, self.n)  # shared with the model's own tests
        self.base = base

    def run(self, log: Path, *extra, warm=False):
        # batch 1 and one thread in both runs: the logs must be equal byte for byte
        return self.kit("run", self.name, "--dataset", self.synth / "dataset", "--model_path", self.synth / "model",
                       "--log_path", log, "--batch_size", 1, "--threads", 1, *extra, warm=warm)


@pytest.fixture(scope="module", params=registry.names())
def model(request, tmp_path_factory, synthetic, forked) -> Contract:
    c = Contract(request.param, tmp_path_factory.mktemp(f"contract_{request.param}"), synthetic, forked)
    c.one = c.run(c.base / "p1", warm=True)  # the server then holds what this model imports
    c.three = c.run(c.base / "p3", "--n_devices", 3, "--n_partitions", 3)
    return c


def _rewrite(src: Path, dst: Path, fn) -> None:
    """Copy run dir src to dst with each merged-log entry passed through fn (vouched for as gathered)."""
    shutil.copytree(src, dst)
    rewrite_merged(dst, fn)


def test_synthetic_set_proves_itself(model):
    marker = json.loads((model.synth / "dataset" / "SYNTHETIC.json").read_text())
    ref = model.bench.synthetic_reference()
    primary = next(iter(ref))
    assert marker["model"] == model.name and marker["n"] == model.n
    assert marker["reference"][primary] == pytest.approx(ref[primary])
    assert marker["index_shift"][primary] < 0.5 * ref[primary]


def test_single_run_passes_on_cpu_fp32(model):
    assert model.one.returncode == 0, model.one.stdout + model.one.stderr
    assert "RESULT: PASS" in model.one.stdout and "SYNTHETIC" in model.one.stdout
    acc = json.loads((model.base / "p1" / "accuracy.json").read_text())
    assert acc["verdict"] == "PASS" and acc["n_count"] == model.n


def test_three_partitions_merge_byte_identical(model):
    assert model.three.returncode == 0, model.three.stdout + model.three.stderr
    assert "RESULT: PASS" in model.three.stdout
    a, b = (model.base / "p1" / MERGED).read_bytes(), (model.base / "p3" / MERGED).read_bytes()
    assert a == b
    info = json.loads((model.base / "p3" / "gather.json").read_text())
    assert [p["partition"] for p in info["partitions"]] == [0, 1, 2]
    assert sum(p["entries"] for p in info["partitions"]) == model.n


def test_accuracy_txt_parses_for_every_checker_name(model, tmp_path):
    for target, checker in model.bench.checker_names.items():
        run_dir = tmp_path / target
        shutil.copytree(model.base / "p1", run_dir)
        cp = model.kit("check", run_dir, "--accuracy_target", target)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        text = (run_dir / "accuracy.txt").read_text()
        for metric in targets.get(checker).metrics():
            assert targets.parse_accuracy_txt(text, metric), (checker, metric, text)
        assert any(line.startswith("hash=") for line in text.splitlines())


def test_index_shift_scores_below_target(model, tmp_path):
    n = model.n
    _rewrite(model.base / "p1", tmp_path / "shifted",
             lambda e: {**e, "qsl_idx": (e["qsl_idx"] + 1) % n})
    cp = model.kit("check", tmp_path / "shifted")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    acc = json.loads((tmp_path / "shifted" / "accuracy.json").read_text())
    assert acc["verdict"] == "FAIL"
    primary = next(iter(model.bench.synthetic_reference()))
    assert not next(r for r in acc["rows"] if r["metric"] == primary)["pass"]


def test_device_store_path_gives_the_host_paths_payloads(model):
    """The sample store (what runs use: stored form, gathered by index, batch_from_store) answers
    exactly what make_batch over the loaded samples answers, on CPU in fp32."""
    import torch

    from evalkit.plan import resolve_options
    from evalkit.store import SampleStore

    b = model.bench
    torch.set_num_threads(1)
    options = resolve_options(b, {})
    ds = b.open_dataset(model.synth / "dataset", model.synth / "model")
    net = b.load_model(model.synth / "model", "cpu", "fp32", options)
    idx = list(range(min(3, model.n)))
    samples = [ds.load(i) for i in idx]
    store = SampleStore(b, "cpu", "fp32", options)
    store.load(list(zip(idx, samples)))
    for i in idx:  # batch 1, as the contract runs
        host = b.postprocess(b.forward(net, b.make_batch([samples[i]], "cpu", "fp32", options)), 1)[0]
        stored = b.postprocess(b.forward(net, store.batch([i])), 1)[0]
        assert host.dtype == stored.dtype and host.tobytes() == stored.tobytes(), (model.name, i)
    store.unload(idx)
    assert len(store) == 0 and store.used == 0


def test_wrong_payload_dtype_is_a_one_line_error(model, tmp_path):
    want = np.dtype(model.bench.payload_dtype)
    wrong = np.dtype(WRONG_DTYPE[want.itemsize])

    def recast(e):
        values = np.frombuffer(bytes.fromhex(e["data"]), want)
        return {**e, "data": values.astype(wrong).tobytes().hex().upper()}

    _rewrite(model.base / "p1", tmp_path / "wrong", recast)
    err = one_line_error(model.kit("check", tmp_path / "wrong"))
    assert "qsl_idx" in err and ("dtype" in err or "payload" in err), err


def test_batch_size_invariant_or_in_the_hash(model):
    """A model declares batch_invariant: then batch 1 and batch B answer the same bytes (CPU, fp32);
    otherwise the batch size is in its config hash, so partitions at other batch sizes never merge."""
    import dataclasses

    import torch

    from evalkit.plan import RunSpec, resolve, resolve_options

    b, B = model.bench, min(3, model.n)
    if not b.batch_invariant:
        req = RunSpec(model.name, dataset=model.synth / "dataset", model_path=model.synth / "model",
                      log_path=model.base / "unused")
        hashes = {resolve(dataclasses.replace(req, batch_size=bs)).config_hash for bs in (1, B)}
        assert len(hashes) == 2, f"{model.name}: batch size not in the config hash"
        return
    torch.set_num_threads(1)
    options = resolve_options(b, {})
    ds = b.open_dataset(model.synth / "dataset", model.synth / "model")
    net = b.load_model(model.synth / "model", "cpu", "fp32", options)
    samples = [ds.load(i) for i in range(B)]
    together = b.postprocess(b.forward(net, b.make_batch(samples, "cpu", "fp32", options)), B)
    for i, s in enumerate(samples):
        alone = b.postprocess(b.forward(net, b.make_batch([s], "cpu", "fp32", options)), 1)[0]
        assert alone.tobytes() == together[i].tobytes(), (
            f"{model.name}: sample {i} differs at batch {B} vs 1; make the model batch-invariant or declare "
            f"batch_invariant = False")


def _flip(f: Path) -> bytes:
    """Change one byte of f in place (the middle one; a byte added to an empty file); returns the old bytes."""
    old = f.read_bytes()
    data = bytearray(old or b"\0")
    data[len(data) // 2] ^= 1
    f.write_bytes(bytes(data))
    return old


def test_one_byte_of_any_file_changes_the_identity(model, tmp_path):
    """Identity contract: one byte of each file of the set (dataset and checkpoint) changed, in a copy:
    the run's config (what a partition records, what gather compares) names that file, or the run
    refuses before it starts. Nothing is identified by size or name alone."""
    from evalkit.errors import KitError
    from evalkit.identity import config_difference
    from evalkit.manifest import dataset_files
    from evalkit.plan import RunSpec, resolve

    copy = tmp_path / "set"
    shutil.copytree(model.synth, copy)

    def plan():
        return resolve(RunSpec(model.name, dataset=copy / "dataset", model_path=copy / "model",
                               log_path=tmp_path / "log", n_count=model.n, n_partitions=3, batch_size=1))
    base = plan()
    base_files = dataset_files(copy / "dataset")
    for f in sorted(p for p in copy.rglob("*") if p.is_file() and not p.name.startswith(".")):
        old = _flip(f)
        try:
            try:
                got = plan()
            except KitError:
                continue  # refused before anything runs: as good as named
            rel = f.relative_to(copy / f.parts[len(copy.parts)]).as_posix()
            assert got.config_hash != base.config_hash, f"{model.name}: one byte of {f} leaves the hash as it was"
            what = config_difference(got.config, base.config, dataset_files(copy / "dataset"), base_files)
            assert rel in what, (model.name, rel, what)
        finally:
            f.write_bytes(old)


def test_a_partition_on_changed_data_does_not_merge(model, tmp_path):
    """Identity contract, end to end: partition 1 of 3 run on a copy whose largest dataset file has one
    byte changed: gather with the original partitions 0 and 2 refuses and names the file (or the run
    itself refuses the file, in one line)."""
    data = tmp_path / "dataset"
    shutil.copytree(model.synth / "dataset", data)
    f = max((p for p in data.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    _flip(f)
    rel = f.relative_to(data).as_posix()
    cp = model.kit("run", model.name, "--dataset", data, "--model_path", model.synth / "model", "--log_path",
                 tmp_path / "other", "--batch_size", 1, "--threads", 1, "--n_count", model.n,
                 "--n_partitions", 3, "--partition_offset", 1)
    if cp.returncode != 0:
        assert f.name in one_line_error(cp)
        return
    mixed = tmp_path / "mixed"
    shutil.copytree(model.base / "p3", mixed)
    shutil.rmtree(mixed / "1")
    (mixed / MERGED).unlink()
    err = one_line_error(model.kit("gather", mixed, tmp_path / "other"))
    assert "partition 1" in err and f"dataset file {rel}" in err, err


def test_quantizer_path_rebuilds_the_same_model(model, tmp_path):
    """Every model that declares a built-in quantizer (Benchmark.default_quantizer) and an MLPerf list:
    calibrate on 2 samples in the model's input form, store the statistics as the run does
    (safetensors), rebuild from the stored file on a fresh load: the same sha256 (every partition
    evaluates one model), payloads of the declared dtype, batch 1 = batch 2 bytes when batch-invariant."""
    b = model.bench
    if not b.default_quantizer:  # CALIBRATE=true says so in the plan, before any model loads
        from evalkit.plan import RunSpec, resolve

        with mock.patch.object(type(b), "load_model", side_effect=AssertionError("a model loaded")), \
                pytest.raises(KitError, match=f"CALIBRATE=true: {re.escape(b.name)} has no built-in quantizer"):
            resolve(RunSpec(model.name, dataset=model.synth / "dataset", model_path=model.synth / "model",
                            log_path=tmp_path / "q", calibrate=True))
        return
    import torch

    from evalkit import calibration, quantize
    from evalkit.plan import resolve_options
    from evalkit.safeload import load_safetensors

    assert calibration.max_n(b) >= 1  # a quantizer without the model's MLPerf list would calibrate on nothing
    torch.set_num_threads(1)
    options, mp = resolve_options(b, {}), model.synth / "model"
    ds = b.open_dataset(model.synth / "dataset", mp, options)
    q = quantize.resolve_class(b.default_quantizer)({})
    run = {"device": "cpu", "data_type": "fp32", "options": options, "quantizer_options": {}}
    stats = q.calibrate(b, b.load_model(mp, "cpu", "fp32", options),
                        calibration.batches(b, ds, 2, 2, "cpu", "fp32", options), run)
    first = q.build(b, b.load_model(mp, "cpu", "fp32", options), stats, run)
    sha = quantize._save(stats, {"quantizer": q.name, "key": "contract"}, tmp_path)
    again = q.build(b, b.load_model(mp, "cpu", "fp32", options), load_safetensors(tmp_path / f"{sha}.safetensors", "x"), run)
    assert quantize.model_digest(b.quant_module(first)) == quantize.model_digest(b.quant_module(again)), model.name
    samples = [ds.load(i) for i in range(2)]
    together = b.postprocess(b.forward(again, b.make_batch(samples, "cpu", "fp32", options)), 2)
    assert all(p.dtype == np.dtype(b.payload_dtype) for p in together)
    if b.batch_invariant:
        alone = b.postprocess(b.forward(again, b.make_batch(samples[:1], "cpu", "fp32", options)), 1)[0]
        assert alone.tobytes() == together[0].tobytes(), f"{model.name}: quantized batch 1 != batch 2"
