"""DLRM-v2 (DLRM-DCNv2) on Criteo 1TB multi-hot day 23 (MLPerf `dlrm-v2`, checker dlrm-v2-99 / -99.9).

Follows the reference recommendation/dlrm_v2/pytorch: one QSL sample = one aggregated run of
user-item pairs (recommendation/dlrm_v2/criteo.py), the model = torchrec DLRM_DCN with the
reference sizes (recommendation/dlrm_v2/model.py, plain PyTorch), the payload = float32
[prediction, label] per pair as the reference SUT sends it, accuracy = ROC AUC over all pairs
(recommendation/dlrm_v2/auc.py, equal to sklearn's roc_auc_score) printed as accuracy-dlrm.py does.

Unlike accuracy-dlrm.py, which trusts the labels inside the log, the AUC here pairs each
prediction with the dataset's own label for that row: a log whose samples were swapped or
shifted cannot score well by carrying its labels along. Label mismatches are counted.

Checkpoint (our layout; recommendation/dlrm_v2/snapshot.py converts the published torchsnapshot to it):
  <model>/config.json        sizes: embedding_dim, num_embeddings_per_feature, dense_in_features,
                             dense_arch_layer_sizes, over_arch_layer_sizes, dcn_num_layers, dcn_low_rank_dim
  <model>/dense.pt           state dict of everything but the tables, torchrec parameter names
  <model>/embeddings/t_cat_<k>.npy   float32 (rows, embedding_dim) table of feature k = 0..25
Tables with more rows than the option mmap_rows stay memory-mapped on the host (the 40M-row
tables are 20 GB each); the others are copied to the device, or, with --devices_per_partition K,
split row-wise over the partition's K devices (the dense part runs on the first).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark, Dataset
from evalkit.errors import KitError

from . import criteo, holes
from .auc import roc_auc

CONFIG = "config.json"
DENSE_WEIGHTS = "dense.pt"
TABLE_DIR = "embeddings"
# The reference model (backend_pytorch_native.py, multihot-criteo) and its data
NUM_EMBEDDINGS = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209,
                  11938, 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]
MULTI_HOT_SIZES = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]
REFERENCE_CONFIG = {"embedding_dim": 128, "num_embeddings_per_feature": NUM_EMBEDDINGS, "dense_in_features": 13,
                    "dense_arch_layer_sizes": [512, 256, 128], "over_arch_layer_sizes": [1024, 1024, 512, 256, 1],
                    "dcn_num_layers": 3, "dcn_low_rank_dim": 512}
_CONFIG_KEYS = tuple(REFERENCE_CONFIG)

# synthetic set knobs
_SYN_PAIRS = 16           # pairs per sample (the quantile line holds this one value)
_SCALE_PAIRS = 270        # the scale variant's: the real 89,137,319 pairs / 330,067 samples, rounded down
_SYN_TABLE_ROWS = 48      # tables larger than this are cut down to it
_SYN_CONFIG = {"embedding_dim": 8, "dense_in_features": 13, "dense_arch_layer_sizes": [16, 8],
               "over_arch_layer_sizes": [32, 16, 1], "dcn_num_layers": 3, "dcn_low_rank_dim": 4}


def _devices(device: str) -> list[str]:
    """The partition's devices: one name, or K comma-separated ones (--devices_per_partition K)."""
    devs = [d.strip() for d in str(device).split(",")]
    if not all(devs):
        raise KitError(f"--device {device!r}: an empty device name in the list")
    return devs


def table_path(model_path: Path, k: int) -> Path:
    return Path(model_path) / TABLE_DIR / f"t_cat_{k}.npy"


def read_config(model_path: Path) -> dict:
    f = Path(model_path) / CONFIG
    if not f.is_file():
        from .snapshot import is_snapshot
        if is_snapshot(model_path):
            raise KitError(f"{model_path} is the published torchsnapshot; convert it once to the kit's layout: "
                           f"python -m recommendation.dlrm_v2.snapshot {model_path} OUT_DIR, then --model_path OUT_DIR")
        raise KitError(f"{f} not found; a DLRM-v2 checkpoint dir holds {CONFIG}, {DENSE_WEIGHTS} and "
                       f"{TABLE_DIR}/t_cat_<k>.npy (see the README, DLRM-v2)")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"cannot read {f}: {e}") from None
    if not isinstance(cfg, dict):
        raise KitError(f"{f} is not a JSON object of the model's sizes")
    missing = [k for k in _CONFIG_KEYS if k not in cfg]
    if missing:
        raise KitError(f"{f} lacks {', '.join(missing)}")
    if len(cfg["num_embeddings_per_feature"]) != criteo.N_SPARSE:
        raise KitError(f"{f}: num_embeddings_per_feature has {len(cfg['num_embeddings_per_feature'])} entries, "
                       f"not {criteo.N_SPARSE}")
    return cfg


class CriteoSamples(Dataset):
    """Day 23 plus, when the checkpoint is known, its table sizes: every sparse index of the
    range is checked against them before the model loads (an index past a table would gather
    another row, or fault on a device)."""

    def __init__(self, root: Path, model_path: Path | None = None):
        self.day = criteo.CriteoDay23(root)
        self.size = self.day.size
        self.tables: list[int] | None = None
        if model_path is not None:
            self.config = Path(model_path) / CONFIG
            self.tables = [int(r) for r in read_config(model_path)["num_embeddings_per_feature"]]

    def load(self, index: int):
        return self.day.sample(index)

    def check_available(self, start: int, stop: int) -> None:
        # dense/labels/sparse headers were read when the dataset opened; the indices are read here
        if self.tables is not None:
            self.day.check_indices(start, stop, self.tables, self.config)


class DLRMv2(Benchmark):
    name = "dlrm"
    mlperf_name = "dlrm-v2"
    checker_names = {"99": "dlrm-v2-99", "99.9": "dlrm-v2-99.9"}
    default_accuracy_target = "99"
    dataset_size = 330067
    performance_sample_count = 204800
    payload_dtype = "float32"     # [prediction, label] per pair; pairs per sample vary (100..700)
    default_batch_size = 16       # aggregated samples per forward (~270 pairs each)
    batch_invariant = False       # float sums over the batch's pairs: bytes differ at <= 6e-8 (batch size in the hash)
    synthetic_n = 12
    multi_device = True           # --devices_per_partition K: tables row-wise sharded over K devices
    # mmap_rows: tables with more rows stay memory-mapped on the host (rows are gathered per batch)
    options = {"mmap_rows": 1_000_000}

    # --- data -----------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> CriteoSamples:
        return CriteoSamples(Path(path), model_path)

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        return criteo.CriteoDay23(Path(dataset_path)).fingerprint()

    # --- model ----------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> Any:
        import torch

        from .model import DLRMDCN, RowShards, Tables

        dtype = self.torch_dtype(data_type)
        devices = _devices(device)
        cfg = read_config(model_path)
        f = Path(model_path) / DENSE_WEIGHTS
        if not f.is_file():
            raise KitError(f"{f} not found; the DLRM-v2 checkpoint dir must hold the dense weights there")
        from evalkit.safeload import load_torch  # the core's one reader of pickles and checkpoints

        state = load_torch(f, "DLRM-v2 dense weights")
        model = DLRMDCN(cfg)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise KitError(f"{f} does not fit {CONFIG} ({first})") from None
        model.eval().to(device=devices[0], dtype=dtype)
        limit = int(options.get("mmap_rows", self.options["mmap_rows"]))
        dim = int(cfg["embedding_dim"])
        tables = []
        for k, rows in enumerate(cfg["num_embeddings_per_feature"]):
            p = table_path(model_path, k)
            try:
                mm = np.load(p, mmap_mode="r")
            except FileNotFoundError:
                raise KitError(f"embedding table {p} (feature {k}) not found") from None
            except (OSError, ValueError, EOFError) as e:
                what = "is empty" if p.stat().st_size == 0 else f"cannot be memory-mapped ({type(e).__name__}: {e})"
                raise KitError(f"embedding table {p} {what}") from None
            if mm.shape != (int(rows), dim) or mm.dtype != np.float32:
                raise KitError(f"embedding table {p} is {mm.dtype} {mm.shape}; {CONFIG} says float32 ({rows}, {dim})")
            if rows > limit:
                tables.append(mm)
            elif len(devices) > 1:
                tables.append(RowShards(mm, [torch.device(d) for d in devices], dtype))
            else:
                tables.append(torch.from_numpy(np.array(mm)).to(device=devices[0], dtype=dtype))
        model.tables = Tables(tables, torch.device(devices[0]), dtype)
        return model

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> Any:
        import torch

        dense = np.concatenate([s[0] for s in samples])
        sparse = [np.concatenate([s[1][k] for s in samples]) for k in range(criteo.N_SPARSE)]
        return {"dense": torch.from_numpy(dense).to(device=_devices(device)[0], dtype=self.torch_dtype(data_type)),
                "sparse": sparse,
                "labels": np.concatenate([s[2] for s in samples]),
                "counts": [len(s[2]) for s in samples]}

    def forward(self, model: Any, inputs: Any) -> Any:
        import torch

        with torch.inference_mode():
            probs = model(inputs["dense"], inputs["sparse"])
        return probs.float().cpu().numpy(), inputs["labels"], inputs["counts"]

    def postprocess(self, outputs: Any, n: int) -> list[np.ndarray]:
        probs, labels, counts = outputs
        pairs = np.stack([probs, labels], axis=1).astype(np.float32)
        bounds = np.cumsum([0] + list(counts))
        return [np.ascontiguousarray(pairs[bounds[i]:bounds[i + 1]]).reshape(-1) for i in range(n)]

    # --- accuracy -------------------------------------------------------------
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        day = criteo.CriteoDay23(Path(dataset_path))
        offsets = day.offsets
        preds: list[np.ndarray] = []
        truth: list[np.ndarray] = []
        mismatch = queries = 0
        for q, arr in pairs:
            if q >= day.size:
                raise KitError(f"qsl_idx {q} has no sample in {day.root} ({day.size} aggregated samples)")
            s, e = int(offsets[q]), int(offsets[q + 1])
            if arr.size != 2 * (e - s):
                raise KitError(f"qsl_idx {q}: the payload holds {arr.size} float32 values, sample {q} has "
                               f"{e - s} pairs ({2 * (e - s)} values); check the payload dtype (float32 "
                               f"[prediction, label] pairs)")
            p = arr[0::2]
            if not np.isfinite(p).all():
                raise KitError(f"qsl_idx {q}: the payload holds a non-finite prediction")
            t = day.label_rows(s, e)
            mismatch += int((arr[1::2] != t).sum())
            preds.append(p)
            truth.append(t.astype(np.uint8))  # 89M pairs on the real set: a byte per label
            queries += 1
        p = np.concatenate(preds)
        t = np.concatenate(truth)
        try:
            auc = roc_auc(t, p)
        except ValueError as e:
            raise KitError(f"AUC of the {t.size} scored pairs: {e}") from None
        good = int((np.round(p) == t).sum())  # accuracy-dlrm.py: round(prediction) == label
        return {"AUC": 100.0 * auc, "accuracy": 100.0 * good / t.size, "good": good, "total": int(t.size),
                "queries": queries, "label_mismatch": mismatch}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        lines = ["AUC={:.3f}%, accuracy={:.3f}%, good={}, total={}, queries={}".format(
            float(metrics["AUC"]), float(metrics["accuracy"]), int(metrics["good"]), int(metrics["total"]),
            int(metrics["queries"]))]
        if int(metrics.get("label_mismatch", 0)):
            lines.append(f"note: {int(metrics['label_mismatch'])} payload labels differ from the dataset's; "
                         f"the AUC uses the dataset's")
        return lines

    # --- synthetic ------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        """n samples of _SYN_PAIRS pairs, every one computed. Above evalkit.synth.DISTINCT_MAX the
        scale variant: DISTINCT_MAX samples of _SCALE_PAIRS pairs (the real mean) computed and
        repeated in the files' rows, multi-hot indices all 0, what is zero a hole (holes.py), so
        --n 330067 has the real sample count and 89M pairs; the dense values tell rows apart."""
        import torch

        from evalkit.synth import distinct, one_thread, tile

        from .model import DLRMDCN, Tables

        m = distinct(n)
        scale = m < n
        pairs = _SCALE_PAIRS if scale else _SYN_PAIRS
        out = Path(out)
        ds_dir, model_dir = out / "dataset", out / "model"
        (model_dir / TABLE_DIR).mkdir(parents=True, exist_ok=True)
        ds_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, 17])
        cfg = dict(_SYN_CONFIG, num_embeddings_per_feature=[min(r, _SYN_TABLE_ROWS) for r in NUM_EMBEDDINGS])
        dim = cfg["embedding_dim"]

        # 1. tiny random model; tables N(0, 1/2), cross kernels small so three layers stay tame
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DLRMDCN(cfg)
            with torch.no_grad():
                for p in list(model.inter_arch.crossnet.W_kernels) + list(model.inter_arch.crossnet.V_kernels):
                    torch.nn.init.normal_(p, std=0.5 / np.sqrt(p.shape[1]))
        tables = [rng.normal(0, 0.5, (r, dim)).astype(np.float32) for r in cfg["num_embeddings_per_feature"]]
        model.tables = Tables([torch.from_numpy(t) for t in tables], torch.device("cpu"), torch.float32)
        model.eval()

        # 2. day 23 rows: the first half is the validation set, n samples of `pairs` pairs (the scale
        #    variant: the m computed samples' rows, repeated; their indices all 0; the other half 0)
        n_val = m * pairs  # computed validation rows
        rows = 2 * n * pairs
        computed = n_val if scale else rows
        dense = np.log1p(rng.exponential(3.0, (computed, criteo.N_DENSE))).astype(np.float32)
        sparse = [np.zeros((computed, h), np.int32) if scale else rng.integers(0, r, (rows, h), dtype=np.int32)
                  for r, h in zip(cfg["num_embeddings_per_feature"], MULTI_HOT_SIZES)]

        def logits(sl):
            with torch.no_grad():
                x = model.inter_arch(model.dense_arch(torch.from_numpy(dense[sl])),
                                     torch.stack([model.tables.pool(k, s[sl]) for k, s in enumerate(sparse)], 1))
                return model.over_arch(x).reshape(-1)

        # 3. standardise the logit (last Linear) so probabilities spread over (0, 1) without saturating
        with torch.no_grad():
            z = logits(slice(0, n_val))
            mu, sd = z.mean(), z.std() + 1e-6
            last = model.over_arch.model[1]
            last.weight.div_(sd)
            last.bias.sub_(mu).div_(sd)
            prob = torch.sigmoid(logits(slice(0, n_val))).numpy()
        # 4. within each sample, rows ascending by prediction in even samples and descending in odd
        #    ones: with labels = prediction above the median, a log shifted by one sample pairs high
        #    predictions with negatives, so its AUC falls far below 50 %
        order = np.arange(computed)
        for i in range(m):
            s = slice(i * pairs, (i + 1) * pairs)
            o = np.argsort(prob[s], kind="stable")
            order[s] = i * pairs + (o if i % 2 == 0 else o[::-1])
        dense = dense[order]
        if not scale:  # the scale variant's indices are all 0: nothing to reorder
            sparse = [s[order] for s in sparse]
        # labels of the validation half are set in step 6 from the saved model's own output; the
        # other half (never scored) draws random ones here, where the rng has always drawn them
        # (the scale variant's are 0)
        if scale:
            labels = np.zeros(n_val, np.float32)
            holes.write_npy(ds_dir / criteo.DENSE, (rows, criteo.N_DENSE), np.float32, dense, n * pairs)
            holes.write_npy(ds_dir / criteo.LABELS, (rows, 1), np.float32)
            holes.write_zero_npz(ds_dir / criteo.SPARSE, [(str(k), np.int32, (rows, h))
                                                          for k, h in enumerate(MULTI_HOT_SIZES)])
        else:
            labels = np.where(np.arange(rows) < n_val, 0, rng.integers(0, 2, rows) > 0).astype(np.float32)
            np.save(ds_dir / criteo.DENSE, dense)
            np.save(ds_dir / criteo.LABELS, labels.reshape(-1, 1))  # (rows, 1), as the reference slices it
            np.savez(ds_dir / criteo.SPARSE, **{str(k): s for k, s in enumerate(sparse)})
        # the reference's quantile scheme with a one-value line: every sample has `pairs` pairs
        (ds_dir / criteo.QUANTILE).write_text(", ".join([str(pairs)] * 4) + "\n")

        (model_dir / CONFIG).write_text(json.dumps(cfg, indent=1) + "\n")
        model.tables = None
        torch.save(model.state_dict(), model_dir / DENSE_WEIGHTS)
        for k, t in enumerate(tables):
            np.save(table_path(model_dir, k), t)
        del model

        # 5. ground truth = the saved model's fp32 output, one sample per batch, via the real path
        ds = self.open_dataset(ds_dir)
        if ds.size != n:
            raise KitError(f"synthetic dlrm: the aggregation gives {ds.size} samples, not {n}")
        net = self.load_model(model_dir, "cpu", "fp32", self.options)
        payloads = []
        with one_thread():  # batch-1 kernels of a tiny model: extra threads only contend (75x here)
            for i in range(m):
                outputs = self.forward(net, self.make_batch([ds.load(i)], "cpu", "fp32", self.options))
                payloads.append(self.postprocess(outputs, 1)[0])
        del ds
        # 6. labels = prediction above a cut at the widest gap near the median. The cut is taken on
        #    the payloads themselves (not on the batched forward of step 3), so no batch-size
        #    rounding can put a prediction on the wrong side of it, at any n.
        pred = np.concatenate([p[0::2] for p in payloads])
        srt = np.sort(pred)
        lo, hi = int(n_val * 0.4), int(n_val * 0.6)
        j = lo + int(np.argmax(np.diff(srt[lo:hi + 1])))
        if srt[j + 1] == srt[j]:  # one value across the middle: the widest gap anywhere
            j = int(np.argmax(np.diff(srt)))
            if srt[j + 1] == srt[j]:
                raise KitError(f"synthetic dlrm: the model predicts one value for every pair (seed {seed}); "
                               f"try another seed")
        thr = (np.float64(srt[j]) + np.float64(srt[j + 1])) / 2
        labels[:n_val] = pred > thr
        tmp = ds_dir / (criteo.LABELS + ".tmp.npy")
        if scale:
            holes.write_npy(tmp, (rows, 1), np.float32, labels.reshape(-1, 1), n * pairs)
        else:
            np.save(tmp, labels.reshape(-1, 1))
        os.replace(tmp, ds_dir / criteo.LABELS)  # a new file: the memory map read above stays valid
        for i, p in enumerate(payloads):
            p[1::2] = labels[i * pairs:(i + 1) * pairs]
        return tile(payloads, n)

    def synthetic_reference(self) -> dict[str, float]:
        return {"AUC": 100.0}


BENCHMARK = DLRMv2()
