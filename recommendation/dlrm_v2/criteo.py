"""Criteo 1TB multi-hot, day 23, as the reference loader (python/multihot_criteo.py) reads it.

Files in the dataset dir:
  day_23_dense.npy              float32 (rows, 13), used as stored (already log-transformed)
  day_23_sparse_multi_hot.npz   26 members "<k>.npy", int32 (rows, multi-hot size of feature k),
                                stored uncompressed so each member is memory-mapped in place
  day_23_labels.npy             (rows,) or (rows, 1), 0/1
  dlrm_trace_of_aggregated_samples.txt   the published trace ("start, end, count" per sample), or
  dist_quantile.txt             the reference's tools/dist_quantile.txt (one comma-separated line)

Validation = the first half of day 23: rows [0, ceil(rows / 2)). One MLPerf sample is a run of
consecutive rows (user-item pairs). With the trace file its lines are the samples; without it
the reference's scheme is replayed: a legacy numpy RandomState seeded 123 (main.py
--numpy-rand-seed) draws, sample after sample, an index into the quantile line and that many
rows are taken, the last sample cut at the end of the validation half (330,067 samples).
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from evalkit.errors import KitError

DENSE = "day_23_dense.npy"
SPARSE = "day_23_sparse_multi_hot.npz"
LABELS = "day_23_labels.npy"
TRACE = "dlrm_trace_of_aggregated_samples.txt"
QUANTILE = "dist_quantile.txt"
N_DENSE = 13
N_SPARSE = 26
SEED = 123  # reference main.py --numpy-rand-seed default
CHECK_CHUNK_BYTES = 16 << 20  # sparse index check: memory-mapped rows read per step


def aggregation_offsets(quantile: np.ndarray, n_rows: int, seed: int = SEED) -> np.ndarray:
    """Sample boundaries (len = samples + 1) by the reference's quantile scheme.

    The reference draws one np.random.randint(0, len(quantile)) per sample from the global
    legacy generator; a RandomState drawing in blocks gives the same stream (tested), so the
    330k draws cost milliseconds."""
    q = np.asarray(quantile, dtype=np.int64)
    if q.ndim != 1 or q.size == 0 or (q <= 0).any():
        raise ValueError("the quantile line must hold positive sample counts")
    rs = np.random.RandomState(seed)
    sizes: list[np.ndarray] = []
    total = 0
    block = max(1024, int(n_rows // max(1, q.min())) // 8)
    while total < n_rows:
        s = q[rs.randint(low=0, high=q.size, size=block)]
        sizes.append(s)
        total += int(s.sum())
    cum = np.cumsum(np.concatenate(sizes))
    k = int(np.searchsorted(cum, n_rows))  # first sample that reaches the end
    ends = np.minimum(cum[:k + 1], n_rows)
    return np.concatenate(([0], ends)).astype(np.int64)


def _read_quantile(f: Path) -> np.ndarray:
    try:
        line = f.read_text().splitlines()[0]
        q = np.array([int(x) for x in line.replace(",", " ").split()], dtype=np.int64)
    except (OSError, IndexError, ValueError) as e:
        raise KitError(f"{f}: not one line of comma-separated sample counts ({e})") from None
    if q.size == 0 or (q <= 0).any():
        raise KitError(f"{f}: the quantile line must hold positive sample counts")
    return q


def _read_trace(f: Path, n_rows: int) -> np.ndarray:
    starts, ends = [], []
    try:
        lines = f.read_text().splitlines()
    except OSError as e:
        raise KitError(f"cannot read {f}: {e.strerror}") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            s, e, c = (int(x) for x in line.split(","))
        except ValueError:
            raise KitError(f"{f} line {no}: expected 'start, end, count', got {line!r}") from None
        if c != e - s or c <= 0 or (ends and s != ends[-1]) or (not ends and s != 0):
            raise KitError(f"{f} line {no}: samples must be consecutive row ranges from 0 ({line!r})")
        starts.append(s)
        ends.append(e)
    if not ends:
        raise KitError(f"{f} is empty")
    if ends[-1] > n_rows:
        raise KitError(f"{f} ends at row {ends[-1]}, past the {n_rows} validation rows of the dataset")
    return np.array([0] + ends, dtype=np.int64)


def npz_member_memmap(path: Path, member: str) -> np.memmap:
    """Memory-map one uncompressed .npy member of an .npz in place (no copy, no extraction)."""
    try:
        return _npz_member_memmap(path, member)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        what = "is empty" if Path(path).is_file() and Path(path).stat().st_size == 0 else \
            f"is not a readable uncompressed .npz ({type(e).__name__}: {first})"
        raise KitError(f"{path} {what}; re-download the multi-hot file (0.npy..25.npy, written by np.savez)") from None


def _npz_member_memmap(path: Path, member: str) -> np.memmap:
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise KitError(f"{path} has no member {member}; the multi-hot file holds 0.npy..25.npy") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise KitError(f"{path}:{member} is compressed; write it with np.savez (not savez_compressed) "
                           f"so it can be memory-mapped")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
        if head[:4] != b"PK\x03\x04":
            raise KitError(f"{path}:{member}: bad zip local header")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + name_len + extra_len
        fh.seek(start)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        offset = fh.tell()
    if dtype != np.int32:
        raise KitError(f"{path}:{member} is {dtype}; the reference asserts int32 multi-hot indices")
    if len(shape) != 2:
        raise KitError(f"{path}:{member} has shape {shape}; expected (rows, multi-hot size)")
    if offset + int(np.prod(shape)) * dtype.itemsize > start + info.file_size:
        raise KitError(f"{path}:{member}: its header announces {shape} int32, more than the member holds")
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def _load_npy(f: Path) -> np.ndarray:
    try:
        return np.load(f, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        what = "is empty" if f.stat().st_size == 0 else f"is not a readable .npy ({type(e).__name__}: {first})"
        raise KitError(f"{f} {what}; re-download it") from None


class CriteoDay23:
    """Memory-mapped day 23 with the sample boundaries; nothing is read until a sample is."""

    def __init__(self, root: Path):
        self.root = root = Path(root)
        if not root.is_dir():
            raise KitError(f"Criteo dataset directory {root} does not exist; put {DENSE}, {SPARSE}, {LABELS} "
                           f"and {QUANTILE} (or {TRACE}) there or pass the right --dataset.")
        for name in (DENSE, SPARSE, LABELS):
            if not (root / name).is_file():
                raise KitError(f"{root / name} not found; the Criteo multi-hot dir must hold {DENSE}, {SPARSE} "
                               f"and {LABELS}.")
        self.dense = _load_npy(root / DENSE)
        self.labels = _load_npy(root / LABELS)
        if self.dense.ndim != 2 or self.dense.shape[1] != N_DENSE:
            raise KitError(f"{root / DENSE} has shape {self.dense.shape}; expected (rows, {N_DENSE})")
        if self.dense.dtype != np.float32:
            raise KitError(f"{root / DENSE} is {self.dense.dtype}; the published dense features are float32")
        rows = self.dense.shape[0]
        if rows == 0:
            raise KitError(f"{root / DENSE} holds no rows; the Criteo day 23 set is empty")
        if self.labels.shape[0] != rows or self.labels.size != rows:
            raise KitError(f"{root / LABELS} has shape {self.labels.shape}; expected ({rows},) like {DENSE}")
        self.sparse = [npz_member_memmap(root / SPARSE, f"{k}.npy") for k in range(N_SPARSE)]
        for k, a in enumerate(self.sparse):
            if a.shape[0] != rows:
                raise KitError(f"{root / SPARSE}:{k}.npy has {a.shape[0]} rows, {DENSE} has {rows}")
        self.multi_hot_sizes = [int(a.shape[1]) for a in self.sparse]
        self.val_rows = rows // 2 + rows % 2  # the reference's first half of day 23
        if (root / TRACE).is_file():
            self.offsets = _read_trace(root / TRACE, self.val_rows)
            self.aggregation = TRACE
        elif (root / QUANTILE).is_file():
            self.offsets = aggregation_offsets(_read_quantile(root / QUANTILE), self.val_rows)
            self.aggregation = QUANTILE
        else:
            raise KitError(f"neither {root / TRACE} nor {root / QUANTILE} exists; copy the reference's "
                           f"tools/{QUANTILE} (or its published trace file) into the dataset dir.")
        self.size = len(self.offsets) - 1

    def rows(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.size:
            raise KitError(f"sample {index} is outside the {self.size} aggregated samples of {self.root}")
        return int(self.offsets[index]), int(self.offsets[index + 1])

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample(self, index: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        s, e = self.rows(index)
        dense = np.array(self.dense[s:e], dtype=np.float32)
        sparse = [np.array(a[s:e]) for a in self.sparse]
        return dense, sparse, self.label_rows(s, e)

    def check_indices(self, start: int, stop: int, table_rows: list[int], source: Path) -> None:
        """KitError naming the first sparse index of samples [start, stop) outside its embedding
        table (table_rows: the checkpoint's num_embeddings_per_feature, read from `source`): the
        file, feature, row and qsl_idx. Vectorised over chunks of the memory-mapped members."""
        r0, r1 = int(self.offsets[start]), int(self.offsets[stop])
        for k, a in enumerate(self.sparse):
            limit = int(table_rows[k])
            step = max(1, CHECK_CHUNK_BYTES // (4 * max(1, a.shape[1])))
            for c0 in range(r0, r1, step):
                block = np.asarray(a[c0:min(r1, c0 + step)])
                if block.size and (int(block.min()) < 0 or int(block.max()) >= limit):
                    bad = (block < 0) | (block >= limit)
                    row = int(np.flatnonzero(bad.any(axis=1))[0])
                    value = int(block[row][bad[row]][0])
                    r = c0 + row
                    q = int(np.searchsorted(self.offsets, r, side="right")) - 1
                    raise KitError(f"{self.root / SPARSE}:{k}.npy row {r} (qsl_idx {q}) holds index {value}, "
                                   f"outside embedding table {k} (0..{limit - 1} per {source}); the multi-hot "
                                   f"file and the checkpoint do not belong together")

    def label_rows(self, s: int, e: int) -> np.ndarray:
        return np.asarray(self.labels[s:e], dtype=np.float32).reshape(-1)

    def fingerprint(self) -> dict:
        """Facts beyond the files' contents (those: every file by sha256, in the core)."""
        out = {"aggregation": self.aggregation, "rows": int(self.dense.shape[0])}
        out["multi_hot_sizes"] = self.multi_hot_sizes
        return out
