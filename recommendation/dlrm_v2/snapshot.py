"""The published DLRM-v2 checkpoint (a torchsnapshot) -> the kit's checkpoint layout.

    python -m recommendation.dlrm_v2.snapshot SNAPSHOT_DIR OUT_DIR

The reference (recommendation/dlrm_v2/pytorch/python/backend_pytorch_native.py) restores the
published weights with `Snapshot(path).restore(app_state={"model": DistributedModelParallel(
DLRMTrain(DLRM_DCN(...)))})`: the snapshot holds the state dict of torchrec's DLRMTrain, whose
DLRM_DCN sits in its attribute `model`, so every parameter name carries a `model.` prefix
(`model.dense_arch.model._mlp.0._linear.weight`, `model.sparse_arch.embedding_bag_collection.
embedding_bags.t_cat_<k>.weight`, ...). torchsnapshot's on-disk format (pytorch/torchsnapshot,
manifest.py, flatten.py, io_preparer.py, batcher.py), the subset this reader takes:

  SNAPSHOT_DIR/.snapshot_metadata   {"version", "world_size", "manifest"}: JSON since torchsnapshot
                                    0.1.0 (YAML before; read when PyYAML is installed)
  manifest keys                     "<rank>/<app key>/<state-dict key>" (key with "%" and "/"
                                    percent-encoded); a container entry ("OrderedDict", "keys")
                                    for "<rank>/model" itself
  "Tensor" entry                    location (a file under SNAPSHOT_DIR), serializer, dtype
                                    ("torch.float32"), shape, replicated, byte_range ([start, end)
                                    inside the file, or null for the whole file): dense tensors,
                                    per rank (`<rank>/...`), `replicated/...` (listed by rank 0),
                                    or packed into `batched/<uuid>` slabs
  "ShardedTensor" entry             shards [{offsets, sizes, tensor: Tensor entry}] (each rank lists
                                    its own; the tables, files under `sharded/`)
  "ChunkedTensor" / "DTensor"       the same pieces under "chunks" / "shards"

Only "buffer_protocol" tensors (raw little-endian bytes) are read: nothing is unpickled (a
"torch_save" tensor or an "object" entry is refused). Each table is written piece by piece into a
memory-mapped `embeddings/t_cat_<k>.npy` (the pieces must tile it exactly); the dense tensors go
into `dense.pt` without the prefix, `config.json` is read off their shapes, and the result is
checked by loading it strictly into the kit's DLRM_DCN. OUT_DIR is built beside itself and
renamed into place when complete; an existing OUT_DIR is never overwritten.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from evalkit.errors import KitError

METADATA = ".snapshot_metadata"
APP_KEY = "model"      # app_state={"model": ...} in the reference's restore
PREFIX = "model."      # DLRMTrain.model = the DLRM_DCN
TABLE = re.compile(r"sparse_arch\.embedding_bag_collection\.embedding_bags\.t_cat_(\d+)\.weight")
_PIECES = {"ShardedTensor": "shards", "ChunkedTensor": "chunks", "DTensor": "shards"}
_CONTAINERS = ("dict", "OrderedDict", "list")


def is_snapshot(path: Path) -> bool:
    return (Path(path) / METADATA).is_file()


# --- the metadata ------------------------------------------------------------------------------
def read_metadata(root: Path) -> dict:
    f = Path(root) / METADATA
    try:
        text = f.read_text()
    except FileNotFoundError:
        raise KitError(f"{f} not found; SNAPSHOT_DIR must be the published DLRM-v2 torchsnapshot dir (it holds "
                       f"{METADATA}, batched/ and sharded/)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise KitError(f"cannot read {f} ({type(e).__name__}: {e})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        meta = _yaml(f, text)
    if not (isinstance(meta, dict) and isinstance(meta.get("manifest"), dict)
            and isinstance(meta.get("world_size"), int) and meta["world_size"] >= 1):
        raise KitError(f"{f} is not torchsnapshot metadata (a mapping with world_size and manifest)")
    return meta


def _yaml(f: Path, text: str) -> dict:
    """torchsnapshot before 0.1.0 wrote the same mapping as YAML (its loader: yaml's SafeLoader)."""
    try:
        import yaml
    except ImportError:
        raise KitError(f"{f} is not JSON; torchsnapshot before 0.1.0 wrote YAML: `pip install pyyaml` to read "
                       f"it") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KitError(f"{f} is neither JSON nor YAML ({first})") from None


def model_entries(meta: dict, source: Path) -> dict[str, dict]:
    """State-dict key of the DLRM_DCN (the `model.` prefix removed) -> its entry, ranks merged:
    a tensor from the lowest rank that lists it, a sharded tensor's shards from every rank."""
    out: dict[str, dict] = {}
    for path in sorted(meta["manifest"], key=_rank_order):
        entry = meta["manifest"][path]
        parts = str(path).split("/")
        if len(parts) < 2 or not parts[0].isdigit():
            raise KitError(f"{source}: manifest key {path!r} is not <rank>/<app key>/...")
        if unquote(parts[1]) != APP_KEY:
            continue  # another app key (optimizer, progress, rng state): not the model
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise KitError(f"{source}: manifest entry {path!r} has no type")
        if len(parts) == 2:
            if entry["type"] not in _CONTAINERS:
                raise KitError(f"{source}: {path!r} is a {entry['type']}, not the model's state dict")
            continue
        if len(parts) != 3:
            raise KitError(f"{source}: {path!r} nests below a state-dict key; not a DLRMTrain state dict")
        key = unquote(parts[2])
        if not key.startswith(PREFIX):
            raise KitError(f"{source}: state-dict key {key!r} lacks the {PREFIX!r} prefix of DLRMTrain; not the "
                           f"published DLRM-v2 snapshot")
        key = key[len(PREFIX):]
        kind = entry["type"]
        if kind == "Tensor":
            out.setdefault(key, entry)
        elif kind in _PIECES:
            pieces = entry.get(_PIECES[kind])
            if not isinstance(pieces, list):
                raise KitError(f"{source}: {path!r} ({kind}) has no {_PIECES[kind]} list")
            got = out.setdefault(key, {"type": kind, "pieces": [], "shape": entry.get("shape")})
            if got.get("type") != kind:
                raise KitError(f"{source}: {key!r} is a {got.get('type')} on one rank and a {kind} on another")
            got["pieces"].extend(pieces)
        else:
            raise KitError(f"{source}: {PREFIX}{key} is a {kind!r} entry; the kit reads tensors only (nothing "
                           f"stored as a pickled object)")
    if not out:
        raise KitError(f"{source}: the manifest holds no {APP_KEY!r} state dict; not the published DLRM-v2 "
                       f"snapshot")
    return out


def _rank_order(path: str):
    head = str(path).split("/", 1)[0]
    return (int(head) if head.isdigit() else -1, str(path))


# --- tensors -------------------------------------------------------------------------------------
def _ints(v, n: int | None, what: str, source: Path) -> list[int]:
    if not (isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
            and (n is None or len(v) == n)):
        count = f"{n} " if n is not None else ""
        raise KitError(f"{source}: {what} {v!r} is not a list of {count}non-negative integers")
    return v


def _file_of(root: Path, location, source: Path) -> Path:
    """A tensor's file: a relative path inside the snapshot dir, nothing outside it."""
    if not isinstance(location, str) or not location or location.startswith(("/", "\\")) \
            or any(p in ("", ".", "..") for p in location.replace("\\", "/").split("/")):
        raise KitError(f"{source}: tensor location {location!r} is not a path inside the snapshot dir")
    f = root / location
    if not f.resolve().is_relative_to(root.resolve()):
        raise KitError(f"{source}: tensor location {location!r} leads outside the snapshot dir")
    return f


def read_tensor(root: Path, entry: dict, key: str, source: Path) -> np.ndarray:
    """One "Tensor" entry as a float32 array of its shape (raw bytes, never unpickled)."""
    if not isinstance(entry, dict) or entry.get("type", "Tensor") != "Tensor":
        raise KitError(f"{source}: a piece of {key} is not a Tensor entry")
    if entry.get("serializer") != "buffer_protocol":
        raise KitError(f"{source}: {key} is stored with serializer {entry.get('serializer')!r}; the kit reads "
                       f"'buffer_protocol' tensors only (a 'torch_save' tensor is a pickle)")
    if entry.get("dtype") != "torch.float32":
        raise KitError(f"{source}: {key} is {entry.get('dtype')}; the DLRM-v2 checkpoint is torch.float32")
    shape = _ints(entry.get("shape"), None, f"the shape of {key}", source)
    need = 4 * math.prod(shape)
    f = _file_of(root, entry.get("location"), source)
    rng = entry.get("byte_range")
    start, end = (0, None) if rng is None else _ints(rng, 2, f"the byte_range of {key}", source)
    try:
        size = f.stat().st_size
        end = size if end is None else end
        if end - start != need or end > size:
            raise KitError(f"{f}: tensor {key} needs {need} bytes ({shape} float32), the manifest says bytes "
                           f"[{start}, {end}) and the file has {size}")
        with open(f, "rb") as fh:
            fh.seek(start)
            a = np.fromfile(fh, dtype="<f4", count=need // 4)
    except FileNotFoundError:
        raise KitError(f"{f} not found (tensor {key} of {source}); the snapshot is incomplete") from None
    except OSError as e:
        raise KitError(f"cannot read {f} (tensor {key}): {e.strerror or e}") from None
    if a.size * 4 != need:
        raise KitError(f"{f}: tensor {key} is cut short")
    return a.astype(np.float32, copy=False).reshape(shape)


def tensor_shape(entry: dict, key: str, source: Path) -> list[int]:
    if entry["type"] == "Tensor":
        return _ints(entry.get("shape"), None, f"the shape of {key}", source)
    if entry.get("shape") is not None:  # ChunkedTensor records the whole shape
        return _ints(entry["shape"], None, f"the shape of {key}", source)
    pieces = _pieces(entry, key, source)
    ndim = len(pieces[0][0])
    return [max(o[d] + s[d] for o, s, _ in pieces) for d in range(ndim)]


def _pieces(entry: dict, key: str, source: Path) -> list[tuple[list[int], list[int], dict]]:
    """(offsets, sizes, tensor entry) of a sharded/chunked tensor, identical duplicates dropped
    (a DTensor shard replicated over ranks is listed by each)."""
    seen: dict[tuple, tuple] = {}
    for p in entry["pieces"]:
        if not isinstance(p, dict):
            raise KitError(f"{source}: a piece of {key} is not a mapping")
        off = _ints(p.get("offsets"), None, f"the offsets of a piece of {key}", source)
        size = _ints(p.get("sizes"), len(off), f"the sizes of a piece of {key}", source)
        t = p.get("tensor")
        if not isinstance(t, dict) or t.get("shape") != size:
            raise KitError(f"{source}: a piece of {key} at {off} holds a tensor of shape "
                           f"{t.get('shape') if isinstance(t, dict) else None}, not its sizes {size}")
        seen.setdefault((tuple(off), tuple(size)), (off, size, t))  # a region stored twice: the first copy
    if not seen:
        raise KitError(f"{source}: {key} has no pieces")
    return list(seen.values())


def fill(root: Path, entry: dict, key: str, out: np.ndarray, source: Path) -> None:
    """Write tensor `key` into `out` (its full shape): a Tensor at once, pieces one at a time,
    after proving that they tile `out` exactly (in bounds, no overlap, nothing left out)."""
    shape = list(out.shape)
    if entry["type"] == "Tensor":
        out[...] = read_tensor(root, entry, key, source)
        return
    pieces = _pieces(entry, key, source)
    boxes = []
    for off, size, _ in pieces:
        if len(off) != len(shape) or any(o + s > n for o, s, n in zip(off, size, shape)):
            raise KitError(f"{source}: a piece of {key} at {off} of size {size} lies outside its shape {shape}")
        boxes.append((off, size))
    if sum(math.prod(s) for _, s in boxes) != math.prod(shape) or _overlap(boxes):
        raise KitError(f"{source}: the pieces of {key} do not tile its shape {shape} (a shard is missing or "
                       f"listed twice); the snapshot is incomplete")
    for off, size, t in sorted(pieces, key=lambda p: p[0]):
        region = tuple(slice(o, o + s) for o, s in zip(off, size))
        out[region] = read_tensor(root, t, f"{key}[{', '.join(f'{o}:{o + s}' for o, s in zip(off, size))}]",
                                  source)


def _overlap(boxes: list[tuple[list[int], list[int]]]) -> bool:
    order = sorted(boxes)
    for i, (a_off, a_size) in enumerate(order):
        for b_off, b_size in order[i + 1:]:
            if b_off[0] >= a_off[0] + a_size[0]:
                break  # sorted by the first offset: nothing later overlaps a
            if all(bo < ao + asz and ao < bo + bsz for ao, asz, bo, bsz in zip(a_off, a_size, b_off, b_size)):
                return True
    return False


# --- the conversion --------------------------------------------------------------------------
def _config(dense: dict[str, np.ndarray], tables: dict[int, list[int]], source: Path) -> dict:
    from . import criteo

    def layers(fmt: str) -> list[np.ndarray]:
        out, i = [], 0
        while fmt.format(i) in dense:
            out.append(dense[fmt.format(i)])
            i += 1
        return out

    ks = sorted(tables)
    if ks != list(range(criteo.N_SPARSE)):
        raise KitError(f"{source}: the snapshot holds tables t_cat_{{{','.join(map(str, ks))}}}; DLRM-v2 has "
                       f"t_cat_0..t_cat_{criteo.N_SPARSE - 1}")
    dims = {s[1] for s in tables.values() if len(s) == 2}
    if len(dims) != 1 or any(len(s) != 2 for s in tables.values()):
        raise KitError(f"{source}: the tables are not (rows, dim) of one dim: {[tables[k] for k in ks]}")
    dense_w = layers("dense_arch.model._mlp.{}._linear.weight")
    over_w = layers("over_arch.model.0._mlp.{}._linear.weight")
    v = layers("inter_arch.crossnet.V_kernels.{}")
    if not dense_w or not over_w or not v or "over_arch.model.1.weight" not in dense:
        raise KitError(f"{source}: the dense part lacks dense_arch / inter_arch.crossnet / over_arch tensors of "
                       f"torchrec's DLRM_DCN")
    return {"embedding_dim": int(dims.pop()),
            "num_embeddings_per_feature": [int(tables[k][0]) for k in ks],
            "dense_in_features": int(dense_w[0].shape[1]),
            "dense_arch_layer_sizes": [int(w.shape[0]) for w in dense_w],
            "over_arch_layer_sizes": [int(w.shape[0]) for w in over_w]
                                     + [int(dense["over_arch.model.1.weight"].shape[0])],
            "dcn_num_layers": len(v),
            "dcn_low_rank_dim": int(v[0].shape[0])}


def convert(snapshot_dir: Path, out_dir: Path, num_embeddings: list[int] | None = None, log=print) -> dict:
    """Write the kit's layout (config.json, dense.pt, embeddings/t_cat_<k>.npy) for the snapshot
    into out_dir; returns the config. A sharded tensor's manifest entry does not record its full
    shape (torchsnapshot takes the furthest shard's end), so the tables' rows are checked against
    `num_embeddings` (default: the reference model's num_embeddings_per_feature): a snapshot that
    lost its last shard cannot pass for a smaller table."""
    import torch

    from .benchmark import CONFIG, DENSE_WEIGHTS, NUM_EMBEDDINGS, TABLE_DIR
    from .model import DLRMDCN

    rows = list(NUM_EMBEDDINGS if num_embeddings is None else num_embeddings)
    root, out_dir = Path(snapshot_dir), Path(out_dir)
    source = root / METADATA
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise KitError(f"OUT_DIR {out_dir} exists and is not empty; give a new directory")
    entries = model_entries(read_metadata(root), source)
    tables = {int(m.group(1)): e for k, e in entries.items() if (m := TABLE.fullmatch(k))}
    dense_entries = {k: e for k, e in entries.items() if not TABLE.fullmatch(k)}
    dense = {}
    for k, e in dense_entries.items():
        a = np.empty(tensor_shape(e, k, source), np.float32)
        fill(root, e, k, a, source)
        dense[k] = a
    shapes = {k: tensor_shape(e, f"t_cat_{k}", source) for k, e in tables.items()}
    for k, shape in sorted(shapes.items()):
        if k < len(rows) and len(shape) == 2 and shape[0] != rows[k]:
            raise KitError(f"{source}: the shards of t_cat_{k} reach row {shape[0]}, the model has {rows[k]} "
                           f"(num_embeddings_per_feature); a shard is missing, or give the sizes with "
                           f"--num_embeddings_per_feature")
    cfg = _config(dense, shapes, source)
    model = DLRMDCN(cfg)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in dense.items()}, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise KitError(f"{source}: the dense tensors do not make torchrec's DLRM_DCN ({first})") from None

    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / TABLE_DIR).mkdir(parents=True)
    try:
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=1) + "\n")
        torch.save(model.state_dict(), tmp / DENSE_WEIGHTS)
        for k in sorted(tables):
            f = tmp / TABLE_DIR / f"t_cat_{k}.npy"
            mm = np.lib.format.open_memmap(f, mode="w+", dtype=np.float32, shape=tuple(shapes[k]))
            fill(root, tables[k], f"{PREFIX}sparse_arch.embedding_bag_collection.embedding_bags.t_cat_{k}.weight",
                 mm, source)
            mm.flush()
            del mm
            log(f"t_cat_{k}: {shapes[k][0]} x {shapes[k][1]}")
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recommendation.dlrm_v2.snapshot",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("snapshot_dir", type=Path, help="the published torchsnapshot dir (.snapshot_metadata, "
                                                     "batched/, sharded/)")
    ap.add_argument("out_dir", type=Path, help="a new dir for the kit's layout (config.json, dense.pt, embeddings/)")
    ap.add_argument("--num_embeddings_per_feature", type=_int_list, default=None,
                    help="rows of the 26 tables, comma-separated (default: the reference's, 40000000,39060,...)")
    a = ap.parse_args(argv)
    try:
        cfg = convert(a.snapshot_dir, a.out_dir, a.num_embeddings_per_feature)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: writing {a.out_dir}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"{a.out_dir}: DLRM-v2 checkpoint, {len(cfg['num_embeddings_per_feature'])} tables of dim "
          f"{cfg['embedding_dim']}; evaluate with --model_path {a.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
