"""The one place that unpickles: every pickle and torch checkpoint the kit reads comes through here.

Unpickling runs code: a pickle names callables by (module, name) and the reader calls them. So:

- `load_pickle(path, allow)` reads a pickle with an Unpickler whose find_class hands out only the
  exact (module, name) pairs of `allow` (an AllowList below), and each pair maps to an object
  chosen here, never to whatever the module happens to hold: no dotted names (protocol 4's
  attribute walk, `torch.os.system` looked up from `torch.nn.modules.module`, is how a prefix
  allow-list was beaten), no module-wide or prefix wildcards, no fallback to a general
  unpickler; persistent ids are refused unless the caller gives a persistent_load.
- `load_torch(path, what)` reads a state dict with torch.load(weights_only=True), torch's own
  restricted unpickler, and turns every failure into one line naming the file.
- `load_torch_model(path, allow, what)` reads a whole pickled model (torch.save(model), as the
  reference RetinaNet checkpoint is) from the torch zip with the core Unpickler: tensors from the
  zip's data/ records, model classes as do-nothing stand-ins (StandIn) for an exact list of names.

A refusal is one line: `<file>: refusing to unpickle <module>.<name> (not in the <what>
allow-list); ...`. Nothing here imports numpy, pandas or torch until a list that needs them is used.
"""
from __future__ import annotations

import importlib
import io
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from evalkit.errors import KitError

Pair = tuple[str, str]

# Python 2 spellings that protocol 0-2 pickles carry (fix_imports): the same entries, nothing more.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class AllowList:
    """Exact (module, name) pairs, each with how to get the object it stands for; `what` names the
    list in refusals. Lists combine with `|` (the left one's `what` unless renamed with .named)."""

    def __init__(self, what: str, entries: Mapping[Pair, Callable[[], Any]]):
        for module, name in entries:
            if "." in name or not module or not name:
                raise ValueError(f"allow-list {what}: {module}.{name} is not an exact (module, name) pair")
        self.what = what
        self._entries = dict(entries)
        self._resolved: dict[Pair, Any] = {}

    def __or__(self, other: "AllowList") -> "AllowList":
        return AllowList(self.what, {**self._entries, **other._entries})

    def named(self, what: str) -> "AllowList":
        return AllowList(what, self._entries)

    def __contains__(self, pair: Pair) -> bool:
        return pair in self._entries

    def __iter__(self):
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(self, pair: Pair) -> Any:
        if pair not in self._resolved:
            self._resolved[pair] = self._entries[pair]()
        return self._resolved[pair]


def _attr(name: str, *modules: str) -> Callable[[], Any]:
    """The object `name` of the first of `modules` that imports (numpy 2 moved numpy.core to
    numpy._core; the real object is the same either way). `name` has no dots: no attribute walk."""
    assert "." not in name

    def get():
        for m in modules:
            try:
                mod = importlib.import_module(m)
            except ImportError:
                continue
            if name in vars(mod):
                return vars(mod)[name]
        raise pickle.UnpicklingError(f"{name} is in none of {', '.join(modules)}")
    return get


def _const(obj: Any) -> Callable[[], Any]:
    return lambda: obj


# --- builtins: plain data constructors only ----------------------------------------------------
def _latin1_encode(text, encoding="latin1", errors="strict"):
    """What protocol 0-2 pickles call `_codecs.encode` for: a bytes literal spelled as latin-1
    text. Only that codec: `codecs.encode` with any codec name would look codecs up by name."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(f"_codecs.encode is read only as (str, 'latin1'), got codec {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args):
    """Protocol 0-2 spell b'' as `bytes()`; nothing else goes through it (bytes(n) allocates n)."""
    if args:
        raise pickle.UnpicklingError("builtins.bytes is read only with no arguments (b'')")
    return b""


BUILTINS = AllowList("builtins", {
    ("builtins", "set"): _const(set),               # protocol <4 spell sets as set([...])
    ("builtins", "frozenset"): _const(frozenset),   # same for frozensets
    ("builtins", "complex"): _const(complex),       # every protocol: complex(re, im)
    ("builtins", "slice"): _const(slice),           # pandas block placements: slice(start, stop, step)
    ("builtins", "bytes"): _const(_empty_bytes),    # protocol <3: b'' (numpy's empty arrays)
    ("_codecs", "encode"): _const(_latin1_encode),  # protocol <3: every other bytes literal
})

# --- numpy arrays and scalars: what numpy 1.x and 2.x write, checked with pickletools ---------
_NP_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")  # numpy 2 name first
_NP_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")
NUMPY = BUILTINS.named("numpy array") | AllowList("numpy array", {
    ("numpy", "ndarray"): _attr("ndarray", "numpy"),         # the class _reconstruct builds
    ("numpy", "dtype"): _attr("dtype", "numpy"),             # dtype(spec, align, copy) + setstate
    # protocol 0-4 arrays: _reconstruct(ndarray, (0,), b'b') then ndarray.__setstate__(raw bytes / items)
    ("numpy.core.multiarray", "_reconstruct"): _attr("_reconstruct", *_NP_MULTIARRAY),   # numpy 1.x
    ("numpy._core.multiarray", "_reconstruct"): _attr("_reconstruct", *_NP_MULTIARRAY),  # numpy 2.x
    # numpy scalars (np.float64(1.5), np.int64 in object columns): scalar(dtype, raw bytes)
    ("numpy.core.multiarray", "scalar"): _attr("scalar", *_NP_MULTIARRAY),
    ("numpy._core.multiarray", "scalar"): _attr("scalar", *_NP_MULTIARRAY),
    # protocol 5 contiguous arrays: _frombuffer(buffer, dtype, shape, order)
    ("numpy.core.numeric", "_frombuffer"): _attr("_frombuffer", *_NP_NUMERIC),
    ("numpy._core.numeric", "_frombuffer"): _attr("_frombuffer", *_NP_NUMERIC),
})

# KiTS19 (3D-UNet) preprocessed pickles: [image, label] arrays and the index of dicts/tuples/arrays.
KITS19 = NUMPY.named("KiTS19 pickle") | AllowList("KiTS19 pickle", {
    ("collections", "OrderedDict"): _attr("OrderedDict", "collections"),
})


# --- pandas DataFrames (Llama-2 OpenOrca, Mixtral 15k) -----------------------------------------
def _block_manager():
    """pandas' BlockManager as both pickle forms call it: pandas >= 1.4 REDUCE it with (blocks,
    axes); pandas <= 1.3 NEWOBJ it with no arguments, then __setstate__ the '0.14.1' state (the
    same special case pandas' own compat reader makes)."""
    from pandas.core.internals.managers import BlockManager

    class _BlockManagerPickle:
        def __new__(cls, *args):
            if args:
                return BlockManager(*args)
            return BlockManager.__new__(BlockManager, (), [], False)
    return _BlockManagerPickle


_PD_FRAME = ("pandas", "pandas.core.frame")
_PD_INDEX = ("pandas", "pandas.core.indexes.base")
_PD_RANGE = ("pandas", "pandas.core.indexes.range")
PANDAS_FRAME = NUMPY.named("pandas DataFrame") | AllowList("pandas DataFrame", {
    # the frame: NEWOBJ DataFrame then __setstate__({'_mgr': ..., '_typ': 'dataframe', ...})
    ("pandas", "DataFrame"): _attr("DataFrame", *_PD_FRAME),             # pandas 3.x (__module__ 'pandas')
    ("pandas.core.frame", "DataFrame"): _attr("DataFrame", *_PD_FRAME),  # pandas 1.x/2.x
    # its block manager: BlockManager(blocks, axes) (>= 1.4) or empty + '0.14.1' state (<= 1.3)
    ("pandas.core.internals.managers", "BlockManager"): _block_manager,
    # each block: _unpickle_block(values, placement, ndim) (>= 1.4); 1.3 wrote new_block with the
    # same arguments, which pandas' own compat reader maps to _unpickle_block too
    ("pandas._libs.internals", "_unpickle_block"): _attr("_unpickle_block", "pandas._libs.internals"),
    ("pandas.core.internals.blocks", "new_block"): _attr("_unpickle_block", "pandas._libs.internals"),
    # the axes: _new_Index(cls, {'data': ndarray, 'name': ...}) / RangeIndex {'start', 'stop', 'step'}
    ("pandas.core.indexes.base", "_new_Index"): _attr("_new_Index", "pandas.core.indexes.base"),
    ("pandas", "Index"): _attr("Index", *_PD_INDEX),                       # pandas 3.x
    ("pandas.core.indexes.base", "Index"): _attr("Index", *_PD_INDEX),     # pandas 1.x/2.x
    ("pandas", "RangeIndex"): _attr("RangeIndex", *_PD_RANGE),             # pandas 3.x
    ("pandas.core.indexes.range", "RangeIndex"): _attr("RangeIndex", *_PD_RANGE),  # pandas 1.x/2.x
    # pandas 1.x integer/float indexes (a sampled frame keeps its old row numbers): Index since 2.0
    ("pandas.core.indexes.numeric", "Int64Index"): _attr("Index", *_PD_INDEX),
    ("pandas.core.indexes.numeric", "UInt64Index"): _attr("Index", *_PD_INDEX),
    ("pandas.core.indexes.numeric", "Float64Index"): _attr("Index", *_PD_INDEX),
})
# Not listed, so refused: pandas 3's default `str` columns (ArrowStringArray rebuilt by pyarrow.lib
# from raw buffers), categoricals, datetimes, Series. The published tables have object columns.


# --- torch checkpoints -------------------------------------------------------------------------
class StandIn:
    """Stands in for a class of a pickled model: keeps the attributes it is given, runs nothing,
    imports nothing. Subclassed once per allowed (module, name) so the type keeps its name."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = state[0] or {}
        if isinstance(state, dict):
            for k, v in state.items():
                if isinstance(k, str):
                    self.__dict__[k] = v

    def __repr__(self):
        return f"<stand-in {type(self).__name__}>"


def stand_ins(what: str, pairs: Iterable[Pair]) -> AllowList:
    """An AllowList whose every pair is its own StandIn subclass (no real class is imported)."""
    return AllowList(what, {(m, n): _const(type(n, (StandIn,), {"__module__": "evalkit.safeload.stand_in",
                                                                "__qualname__": f"{m}.{n}"}))
                            for m, n in pairs})


class _StorageType:
    """What `torch.FloatStorage` etc. resolve to: a dtype tag for persistent_load, not torch's class."""

    def __init__(self, dtype: str):
        self.dtype = dtype


_STORAGES = {  # torch.save names each storage by its legacy typed class (torch 1.6 .. 2.x)
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
}


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2, read as data: a strided view of a storage this reader
    made, bounds-checked by torch (as_strided refuses a view past the storage's end)."""
    import torch

    if not isinstance(storage, torch.Tensor) or storage.ndim != 1:
        raise pickle.UnpicklingError("a tensor's storage is not one of the file's data/ records")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    return storage.as_strided(size, stride, int(storage_offset))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): the tensor (a state dict holds tensors)."""
    import torch

    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a parameter's data is not a tensor")
    return data


TORCH_TENSORS = AllowList("torch tensor", {
    ("collections", "OrderedDict"): _attr("OrderedDict", "collections"),  # state dicts, module dicts
    ("builtins", "set"): _const(set),              # Module._non_persistent_buffers_set (protocol 2)
    ("torch._utils", "_rebuild_tensor_v2"): _const(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _const(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _const(_rebuild_parameter),
    **{("torch", n): _const(_StorageType(d)) for n, d in _STORAGES.items()},
})


# The MLPerf 3D-UNet checkpoint (3dunet_kits19_pytorch_checkpoint.pth) is what MLPerf Training's
# CheckpointCallback saves: tensors and optimizer state, plus the evaluation metrics beside
# best_model_state_dict, whose dice scores are numpy float32 scalars: scalar(dtype, raw bytes), under
# numpy 1.x's module name (files written before numpy 2) or numpy 2.x's, the raw bytes spelled as
# latin-1 text (torch.save writes protocol 2). Only for that file's reader (vision/unet3d, through
# load_torch_model); nothing else of numpy: no arrays, no _reconstruct.
UNET3D_CHECKPOINT = TORCH_TENSORS.named("3D-UNet checkpoint") | AllowList("3D-UNet checkpoint", {
    ("_codecs", "encode"): _const(_latin1_encode),  # the scalar's bytes (latin-1 only, as BUILTINS)
    ("numpy", "dtype"): _attr("dtype", "numpy"),
    ("numpy.core.multiarray", "scalar"): _attr("scalar", *_NP_MULTIARRAY),    # numpy 1.x
    ("numpy._core.multiarray", "scalar"): _attr("scalar", *_NP_MULTIARRAY),   # numpy 2.x
})


# --- the unpickler -------------------------------------------------------------------------------
def _shown(s: Any) -> str:
    s = str(s)
    return s if s.isprintable() and len(s) <= 120 else repr(s[:120])


class Refused(pickle.UnpicklingError):
    """A name (or persistent id) the allow-list does not hold."""

    @classmethod
    def name(cls, module: str, name: str, what: str) -> "Refused":
        return cls(f"refusing to unpickle {_shown(module)}.{_shown(name)} (not in the {what} allow-list)")

    @classmethod
    def persistent_id(cls, pid: Any, what: str) -> "Refused":
        return cls(f"refusing to unpickle persistent id {_shown(repr(pid))[:80]} (not in the {what} allow-list)")


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, allow: AllowList, persistent_load=None):
        super().__init__(file)
        self._allow = allow
        # assigned, not a method: the C Unpickler's setter is what makes it take effect
        self.persistent_load = persistent_load or self._no_persistent_ids

    def find_class(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise Refused.name(repr(module), repr(name), self._allow.what)
        pair = (_PY2_MODULES.get(module, module), name)
        if "." in name or pair not in self._allow:
            raise Refused.name(module, name, self._allow.what)
        return self._allow.resolve(pair)

    def _no_persistent_ids(self, pid):
        raise Refused.persistent_id(pid, self._allow.what)


def _refusal(path, e: Refused, advice: str) -> KitError:
    return KitError(f"{path}: {e}; {advice}")


_ADVICE = "a pickle runs what it names when read, so the kit builds only listed types: replace the file with the published one"


def _load(file, allow: AllowList, source: str, persistent_load=None) -> Any:
    try:
        return _Unpickler(file, allow, persistent_load).load()
    except Refused as e:
        raise _refusal(source, e, _ADVICE) from None
    except KitError:
        raise
    except Exception as e:  # noqa: BLE001 - a listed constructor can raise any type
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise KitError(f"cannot read {source} ({type(e).__name__}{': ' + first if first else ''}); it is not a "
                       f"{allow.what} the kit reads: replace the file with the published one") from None


def loads(data: bytes, allow: AllowList, *, source: str, persistent_load=None) -> Any:
    """Unpickle bytes read from `source` (named in errors) with `allow`; one-line KitError otherwise."""
    return _load(io.BytesIO(data), allow, str(source), persistent_load)


def load_pickle(path: Path, allow: AllowList, *, persistent_load=None) -> Any:
    """The object a pickle file holds, built only from `allow`'s exact (module, name) pairs."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise KitError(f"{path} not found") from None
    except OSError as e:
        raise KitError(f"cannot read {path} ({e.strerror or type(e).__name__})") from None
    with f:
        return _load(f, allow, str(path), persistent_load)


# --- torch -------------------------------------------------------------------------------------
_TORCH_ADVICE = re.compile(r"weights_only|Weights only load failed|add_safe_globals|safe_globals|"
                           r"torch\.serialization|Check the documentation|pytorch\.org|trusted source")


def _torch_refusal(path: Path, what: str, e: Exception) -> KitError:
    """torch's error as one line: a refused global in the kit's words, else its first line that is
    not torch's advice (never its suggestion to load with weights_only=False)."""
    msg = str(e)
    m = re.search(r"GLOBAL ([A-Za-z0-9_.]+)", msg)
    if m:
        name = m.group(1).rstrip(".")
        name = name if "." in name else f"builtins.{name}"  # torch spells builtins.exec as exec
        return KitError(f"{path}: refusing to unpickle {name} (not in the {what} allow-list: "
                        f"torch's weights-only types); {_ADVICE}")
    lines = [l.strip() for l in msg.splitlines() if l.strip() and not _TORCH_ADVICE.search(l)]
    first = lines[0][:300] if lines else ""
    return KitError(f"cannot load {what} {path} ({type(e).__name__}{': ' + first if first else ''}); "
                    f"replace it with the published file")


def load_torch(path: Path, what: str) -> Any:
    """torch.load(path, weights_only=True) on CPU: tensors, containers and torch's listed types only.
    Every failure is one KitError line naming the file."""
    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():  # its notes on a file's pickle protocol: the error says enough
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.serialization")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KitError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise KitError(f"{what} {path} is a directory, not a checkpoint file") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise _torch_refusal(path, what, e) from None


def load_safetensors(path: Path, what: str) -> dict:
    """A safetensors file (a JSON header + raw tensor bytes: nothing in it is code) as {name: tensor}
    on CPU; a bad file is one KitError line naming it."""
    path = Path(path)
    try:
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise KitError(f"{what} {path} not found") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError on a bad header
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise KitError(f"cannot read {what} {path} ({type(e).__name__}: {first}); it is not a whole "
                       f"safetensors file") from None


def _zip_prefix(z: zipfile.ZipFile, path: Path) -> str:
    tops = {n.split("/", 1)[0] for n in z.namelist() if n.count("/") >= 1 and n.endswith("/data.pkl")
            and n.count("/") == 1}
    if len(tops) != 1:
        raise KitError(f"{path} is not a torch checkpoint (a zip with one <name>/data.pkl)")
    return tops.pop()


def load_torch_model(path: Path, allow: AllowList, what: str) -> Any:
    """A whole pickled model (torch.save(model), zip format) read with the core Unpickler: `allow`
    (TORCH_TENSORS plus stand-ins for the model's classes) and tensors from the zip's data/ records.
    Returns the stand-in tree; the caller walks it for weights."""
    import torch

    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise KitError(f"{what} {path} not found") from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise KitError(f"cannot load {what} {path} ({type(e).__name__}: {e}); replace it with the published "
                       f"file") from None
    with z:
        prefix = _zip_prefix(z, path)
        names = set(z.namelist())
        if f"{prefix}/byteorder" in names and z.read(f"{prefix}/byteorder").strip() not in (b"little",):
            raise KitError(f"{path}: big-endian tensor data; the kit reads little-endian checkpoints only")
        storages: dict[str, Any] = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                    and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                    and re.fullmatch(r"[0-9]{1,12}", pid[2]) and isinstance(pid[4], int) and pid[4] >= 0):
                raise Refused.persistent_id(pid, allow.what)
            kind, key, numel = pid[1], pid[2], pid[4]
            if kind.dtype not in _STORAGES.values():  # a tag whose dtype the file itself rewrote
                raise Refused.persistent_id(pid, allow.what)
            if key not in storages:
                rec = f"{prefix}/data/{key}"
                if rec not in names:
                    raise pickle.UnpicklingError(f"storage record {rec} is missing")
                dtype = getattr(torch, kind.dtype)
                raw = z.read(rec)
                need = numel * torch.empty(0, dtype=dtype).element_size()
                if len(raw) < need:
                    raise pickle.UnpicklingError(f"storage record {rec} holds {len(raw)} bytes, {need} needed")
                storages[key] = (torch.frombuffer(bytearray(raw[:need]), dtype=dtype) if need
                                 else torch.empty(0, dtype=dtype))
            return storages[key]

        return loads(z.read(f"{prefix}/data.pkl"), allow, source=str(path), persistent_load=persistent_load)
