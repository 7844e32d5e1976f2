"""Nothing read runs code: a corpus of hostile pickles (made here, never committed) against the
core's one reader (evalkit.safeload) and every reader built on it, in-process, and one hostile file
per pickle/torch file of every registered model's synthetic layout through `evalkit run`.

Each payload, if it ran, would create a marker file; the corpus is first shown to be live (plain
pickle / torch.load(weights_only=False) in a subprocess does create every marker), then every kit
reader must refuse it in one line naming the file, with no marker created."""
from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SYNTH_N, evalkit, kit_env, modules_installed, one_line_error
from evalkit import registry, safeload
from evalkit.errors import KitError

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")


# --- the corpus --------------------------------------------------------------------------------
class _Call:
    """Pickles as `func(*args)`: the pickler names func by its module and qualified name."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _str_op(s: str, protocol: int) -> bytes:
    if protocol == 0:
        return b"V" + s.encode("raw_unicode_escape") + b"\n"
    b = s.encode()
    return (b"\x8c" + bytes([len(b)]) + b) if protocol >= 4 and len(b) < 256 else (b"X" + struct.pack("<I", len(b)) + b)


def _global_op(module: str, name: str, protocol: int, stack: bool | None = None) -> bytes:
    """GLOBAL or (protocol 4+) STACK_GLOBAL; from protocol 4 on, either makes a plain find_class
    walk a dotted name attribute by attribute."""
    if protocol >= 4 if stack is None else stack:
        return _str_op(module, protocol) + _str_op(name, protocol) + pickle.STACK_GLOBAL
    return pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n"


def _proto(protocol: int) -> bytes:
    return pickle.PROTO + bytes([protocol]) if protocol >= 2 else b""


def crafted_call(module: str, name: str, arg: str, protocol: int, stack: bool | None = None) -> bytes:
    """`module.name(arg)` spelled by hand, so any (module, name), dotted ones too, can be named."""
    return (_proto(protocol) + _global_op(module, name, protocol, stack) + pickle.MARK + _str_op(arg, protocol)
            + pickle.TUPLE + pickle.REDUCE + pickle.STOP)


def dotted_exploit(marker: Path) -> bytes:
    """The audit's RetinaNet exploit: protocol 4, GLOBAL torch.nn.modules.module / torch.os.system
    (a module-prefix allow-list passes it; find_class then walks torch -> os -> system)."""
    return crafted_call("torch.nn.modules.module", "torch.os.system", _shell(marker), 4, stack=False)


def getattr_chain(cmd: str, protocol: int = 4) -> bytes:
    """getattr(__import__('os'), 'system')(cmd): three allowed-looking builtins make a shell call."""
    p = protocol
    return (_proto(p) + _global_op("builtins", "getattr", p)
            + pickle.MARK + _global_op("builtins", "__import__", p) + pickle.MARK + _str_op("os", p)
            + pickle.TUPLE + pickle.REDUCE + _str_op("system", p) + pickle.TUPLE + pickle.REDUCE
            + pickle.MARK + _str_op(cmd, p) + pickle.TUPLE + pickle.REDUCE + pickle.STOP)


def _shell(marker: Path) -> str:
    return f"touch {marker}"


def _py(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def corpus(tmp: Path) -> list[tuple[str, bytes, Path]]:
    """(case id, pickle bytes, marker the payload would create). Markers live in tmp."""
    out = []

    def add(case, make):
        marker = tmp / f"marker-{len(out)}-{re.sub(r'[^A-Za-z0-9]+', '_', case)}"
        out.append((case, make(marker), marker))

    # dotted names: protocol 4+ find_class walks attributes (the RetinaNet audit finding)
    add("dotted torch.nn.modules.module/torch.os.system GLOBAL p4", dotted_exploit)
    for p in (4, 5):
        add(f"dotted torch.nn.modules.module/torch.os.system STACK_GLOBAL p{p}",
            lambda m, p=p: crafted_call("torch.nn.modules.module", "torch.os.system", _shell(m), p))
    # a module the lists do name (numpy.ndarray, pandas.DataFrame), walked to os.system
    add("dotted numpy/_pytesttester.os.system", lambda m: crafted_call("numpy", "_pytesttester.os.system", _shell(m), 4))
    add("dotted pandas/_testing.os.system", lambda m: crafted_call("pandas", "_testing.os.system", _shell(m), 5))
    add("builtins getattr(__import__('os'), 'system')", lambda m: getattr_chain(_shell(m)))
    # __reduce__ to code-running callables, every protocol
    for p in (0, 2, 4, 5):
        add(f"reduce os.system p{p}", lambda m, p=p: pickle.dumps(_Call(os.system, _shell(m)), protocol=p))
        add(f"reduce subprocess.Popen p{p}",
            lambda m, p=p: pickle.dumps(_Call(subprocess.Popen, ["touch", str(m)]), protocol=p))
        add(f"reduce builtins.eval p{p}", lambda m, p=p: pickle.dumps(_Call(eval, _py(m)), protocol=p))
        add(f"reduce builtins.exec p{p}", lambda m, p=p: pickle.dumps(_Call(exec, _py(m)), protocol=p))
        add(f"explicit os.system p{p}", lambda m, p=p: crafted_call("os", "system", _shell(m), p))
        add(f"explicit posix.system p{p}", lambda m, p=p: crafted_call("posix", "system", _shell(m), p))
    add("reduce builtins.__import__ (module whose import touches the marker)",
        lambda m: pickle.dumps(_Call(__import__, _import_bomb(m)), protocol=2))
    # hidden inside data the readers do build
    add("nested in list/dict", lambda m: pickle.dumps([1, {"k": (2, _Call(os.system, _shell(m)))}], protocol=4))
    add("in a numpy object array", lambda m: pickle.dumps(np.array([1, _Call(os.system, _shell(m))], dtype=object), protocol=2))
    add("in a DataFrame object column", lambda m: pickle.dumps(_frame(extra=_Call(os.system, _shell(m))), protocol=5))
    add("in a KiTS19 case pickle", lambda m: pickle.dumps(
        [np.zeros((1, 2, 2, 2), np.float32), np.array([_Call(os.system, _shell(m))], dtype=object)], protocol=4))
    add("persistent id", lambda m: _persistent_pickle())
    return out


_BOMBS: list[Path] = []


def _import_bomb(marker: Path) -> str:
    """A module on the test's sys.path whose import creates the marker."""
    name = f"safeload_bomb_{uuid.uuid4().hex[:12]}"
    d = marker.parent / "bombs"
    d.mkdir(exist_ok=True)
    (d / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    _BOMBS.append(d)
    return name


def _persistent_pickle() -> bytes:
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "outside" if obj == "ref" else None
    b = io.BytesIO()
    P(b, protocol=2).dump(["ref"])
    return b.getvalue()


def _frame(extra=None, n: int = 3):
    """A frame as the published OpenOrca/Mixtral pickles hold: object columns (str, list, ndarray),
    an int column, a float column; `extra` goes into one cell."""
    df = pd.DataFrame({"id": pd.Series([f"s.{i}" for i in range(n)], dtype=object),
                       "tok_input": pd.Series([[1, 2, i] for i in range(n)], dtype=object),
                       "arr": pd.Series([np.arange(i + 1) for i in range(n)], dtype=object),
                       "tok_input_length": np.arange(n, dtype=np.int64) + 3, "f": np.linspace(0, 1, n)})
    df.columns = pd.Index(list(df.columns), dtype=object)
    if extra is not None:
        df.at[1, "id"] = extra
    return df


def _torch_zip(tmp: Path, data_pkl: bytes, name: str) -> Path:
    """A real torch.save zip whose data.pkl is replaced: the pickle a checkpoint hides."""
    src = tmp / f"{name}.src"
    torch.save({"w": torch.zeros(2)}, src)
    dst = tmp / name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else zin.read(info))
    src.unlink()
    return dst


def torch_corpus(tmp: Path) -> list[tuple[str, Path, Path, bool]]:
    """(case id, checkpoint file, marker, torch names it): hostile pickles inside torch zip
    checkpoints. torch's weights-only loader names a refused GLOBAL (protocol 2, what torch.save
    writes); STACK_GLOBAL (protocol 4+) and foreign persistent ids it rejects as unreadable."""
    out = []
    for case, data, marker in corpus(tmp):
        if case.startswith(("dotted torch.nn.modules.module/torch.os.system STACK", "builtins getattr",
                            "persistent id")):
            out.append((f"torch zip: {case}", _torch_zip(tmp, data, f"ck{len(out)}.pth"), marker, False))
        elif case in ("dotted torch.nn.modules.module/torch.os.system GLOBAL p4", "reduce os.system p2",
                      "explicit posix.system p2", "reduce builtins.exec p2", "reduce subprocess.Popen p2"):
            out.append((f"torch zip: {case}", _torch_zip(tmp, data, f"ck{len(out)}.pth"), marker, True))
    m = tmp / "marker-torch-save"
    torch.save({"w": torch.zeros(2), "x": _Call(os.system, _shell(m))}, tmp / "saved.pth")  # torch.save itself
    out.append(("torch.save of a dict with a payload", tmp / "saved.pth", m, True))
    return out


# --- the corpus is live: a plain reader runs every payload ---------------------------------------
def test_corpus_is_live_under_plain_pickle(tmp_path):
    """Without the kit, each payload runs: plain pickle.loads / torch.load(weights_only=False)
    create every marker (so the refusals below are refusals of working exploits)."""
    cases = corpus(tmp_path)
    tcases = torch_corpus(tmp_path)
    files = []
    for i, (case, data, marker) in enumerate(cases):
        if case == "persistent id":
            continue  # no payload: a plain reader just fails on it
        f = tmp_path / f"c{i}.pkl"
        f.write_bytes(data)
        files.append((str(f), str(marker), "pickle"))
    files += [(str(f), str(m), "torch") for case, f, m, _ in tcases if "persistent" not in case]
    script = textwrap.dedent("""
        import json, pickle, sys, time, os
        import torch
        sys.path[:0] = json.loads(sys.argv[2])
        for f, marker, kind in json.loads(sys.argv[1]):
            try:
                if kind == "pickle":
                    pickle.loads(open(f, "rb").read())
                else:
                    torch.load(f, weights_only=False)
            except Exception:
                pass
        deadline = time.time() + 10  # Popen runs touch asynchronously
        while time.time() < deadline and not all(os.path.exists(m) for _, m, _ in json.loads(sys.argv[1])):
            time.sleep(0.05)
    """)
    import json

    subprocess.run([sys.executable, "-c", script, json.dumps(files), json.dumps([str(d) for d in set(_BOMBS)])],
                   env=kit_env(), cwd=tmp_path, check=True, timeout=300, capture_output=True)
    dead = [f for f, m, _ in files if not Path(m).exists()]
    assert not dead, f"payloads that did not run under a plain reader: {dead}"


# --- the core reader, in-process: the whole corpus -----------------------------------------------
def _assert_refused(e: KitError, f: Path, marker: Path, refusing: bool = True):
    msg = str(e)
    assert "\n" not in msg, msg
    assert str(f) in msg, msg
    assert "weights_only=False" not in msg and "add_safe_globals" not in msg, msg
    if refusing:
        assert re.search(r"refusing to unpickle .+ \(not in the .+ allow-list", msg), msg
    assert not marker.exists(), f"{marker} was created: the payload ran"


@pytest.fixture
def corpus_files(tmp_path, monkeypatch):
    cases = corpus(tmp_path)
    for d in set(_BOMBS):
        monkeypatch.syspath_prepend(str(d))
    out = []
    for i, (case, data, marker) in enumerate(cases):
        f = tmp_path / f"case_{i:05d}.pkl"
        f.write_bytes(data)
        out.append((case, f, marker))
    return out


@pytest.mark.parametrize("allow", ["NUMPY", "KITS19", "PANDAS_FRAME", "TORCH_TENSORS"])
def test_core_reader_refuses_the_corpus(corpus_files, allow):
    for case, f, marker in corpus_files:
        with pytest.raises(KitError) as e:
            safeload.load_pickle(f, getattr(safeload, allow))
        _assert_refused(e.value, f, marker)


def test_model_pickle_readers_refuse_the_corpus(corpus_files, tmp_path, monkeypatch):
    """KiTS19 (3D-UNet) pickles and the Llama-2/Mixtral tables, through their own readers."""
    from language import frames
    from vision.unet3d import kits

    monkeypatch.setattr(frames, "TRUSTED_ROOT", tmp_path)  # the data-dir fence open: the loader alone
    for case, f, marker in corpus_files:
        with pytest.raises(KitError) as e:
            kits.load_pickle(f)
        _assert_refused(e.value, f, marker)
        table = tmp_path / "table" / f.stem
        table.mkdir(parents=True)
        shutil.copy(f, table / "t.pkl")
        with pytest.raises(KitError) as e:
            frames.open_table(table, "t.pkl", ("id",))
        _assert_refused(e.value, table / "t.pkl", marker)


def test_torch_readers_refuse_the_corpus(tmp_path, monkeypatch):
    """Every torch checkpoint reader: the core's two, RetinaNet's, SDXL's latents and FID weights."""
    from text_to_image.sdxl import benchmark as sdxl
    from text_to_image.sdxl import fid
    from vision.retinanet import checkpoint

    for d in set(_BOMBS):
        monkeypatch.syspath_prepend(str(d))
    for case, f, marker, torch_names_it in torch_corpus(tmp_path):
        with pytest.raises(KitError) as e:
            safeload.load_torch(f, "test checkpoint")
        _assert_refused(e.value, f, marker, refusing=torch_names_it)
        for reader in (lambda f: safeload.load_torch_model(f, checkpoint.ALLOW, checkpoint.WHAT),
                       checkpoint.load_state_dict):
            with pytest.raises(KitError) as e:
                reader(f)
            _assert_refused(e.value, f, marker, refusing="persistent id" not in case or reader is not
                            checkpoint.load_state_dict)
        lat = tmp_path / "lat" / f.stem / sdxl.LATENTS
        lat.parent.mkdir(parents=True)
        shutil.copy(f, lat)
        with pytest.raises(KitError) as e:
            sdxl.load_latents(lat.parent.parent)
        _assert_refused(e.value, lat, marker, refusing=torch_names_it)
        with pytest.raises(KitError) as e:
            fid.load_inception(f)
        _assert_refused(e.value, f, marker, refusing=torch_names_it)


def test_dotted_names_are_refused_even_when_the_first_part_is_listed(tmp_path):
    for module, name in (("collections", "OrderedDict.fromkeys"), ("numpy", "ndarray.__reduce__"),
                         ("builtins", "set.__init__"), ("torch.nn.modules.conv", "Conv2d.__init__")):
        f = tmp_path / "d.pkl"
        f.write_bytes(crafted_call(module, name, "x", 4))
        allow = safeload.KITS19 | safeload.stand_ins("x", [("torch.nn.modules.conv", "Conv2d")])
        with pytest.raises(KitError, match=re.escape(f"refusing to unpickle {module}.{name} (not in the")):
            safeload.load_pickle(f, allow)
    with pytest.raises(ValueError):
        safeload.AllowList("x", {("builtins", "a.b"): lambda: None})


# --- what the readers must still read ------------------------------------------------------------
def test_numpy_arrays_and_scalars_every_protocol(tmp_path):
    objs = {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "strided": np.arange(16.0).reshape(4, 4)[:, ::2],
            "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "u8": np.arange(3, dtype=np.uint8),
            "object": np.array(["a", [1, 2], None], dtype=object), "record": np.zeros(2, "i4,f8"),
            "empty": np.zeros((0, 3)), "0d": np.array(3.0), "c64": np.ones(2, np.complex64),
            "dt64": np.array(["2020-01-01"], dtype="datetime64[D]"), "scalar": np.float64(1.5), "i64": np.int64(3),
            "bytes": b"ab", "empty bytes": b"", "set": {1, 2}, "frozenset": frozenset([3]), "complex": 1 + 2j,
            "slice": slice(1, 5, 2)}
    for p in range(pickle.HIGHEST_PROTOCOL + 1):
        for k, v in objs.items():
            f = tmp_path / "a.pkl"
            f.write_bytes(pickle.dumps(v, protocol=p))
            got = safeload.load_pickle(f, safeload.NUMPY)
            if isinstance(v, np.ndarray):
                assert got.dtype == v.dtype and got.shape == v.shape, (p, k)
                assert v.dtype == object or np.array_equal(got, v), (p, k)
            else:
                assert got == v and type(got) is type(v), (p, k)


def test_codec_and_bytes_helpers_take_only_what_pickles_write(tmp_path):
    f = tmp_path / "c.pkl"
    f.write_bytes(_proto(2) + _global_op("_codecs", "encode", 2) + pickle.MARK + _str_op("x", 2)
                  + _str_op("rot13", 2) + pickle.TUPLE + pickle.REDUCE + pickle.STOP)
    with pytest.raises(KitError, match="only as"):
        safeload.load_pickle(f, safeload.NUMPY)
    f.write_bytes(_proto(2) + _global_op("builtins", "bytes", 2) + pickle.MARK + b"J" + struct.pack("<i", 10**9)
                  + pickle.TUPLE + pickle.REDUCE + pickle.STOP)
    with pytest.raises(KitError, match="no arguments"):
        safeload.load_pickle(f, safeload.NUMPY)


def _old_names(data: bytes) -> bytes:
    """A pandas-3 protocol-2 pickle respelled with pandas 1.x/2.x + numpy 1.x module names (GLOBAL
    opcodes are newline-terminated, so the respelling needs no length fix-up)."""
    for new, old in ((b"cpandas\nDataFrame\n", b"cpandas.core.frame\nDataFrame\n"),
                     (b"cpandas\nIndex\n", b"cpandas.core.indexes.base\nIndex\n"),
                     (b"cpandas\nRangeIndex\n", b"cpandas.core.indexes.range\nRangeIndex\n"),
                     (b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")):
        assert new in data or new == b"cpandas\nRangeIndex\n", new
        data = data.replace(new, old)
    return data


def test_dataframes_as_pandas_1_2_and_3_write_them(tmp_path):
    df = _frame(n=4)
    df.index = pd.Index([7, 3, 9, 1])  # a sampled frame keeps its old row numbers
    cases = {f"pandas 3 p{p}": pickle.dumps(df, protocol=p) for p in (2, 4, 5)}
    cases["pandas 3 RangeIndex"] = pickle.dumps(_frame(n=4), protocol=4)
    cases["pandas 2 / numpy 1 names"] = _old_names(pickle.dumps(df, protocol=2))
    cases["pandas 1.x Int64Index"] = _old_names(pickle.dumps(df, protocol=2)).replace(
        b"cpandas.core.indexes.base\nIndex\n", b"cpandas.core.indexes.numeric\nInt64Index\n", 1)
    # pandas <= 1.3: BlockManager made empty (NEWOBJ, no arguments), then its '0.14.1' state
    mgr = df._mgr

    class OldManager(pickle.Pickler):
        def reducer_override(self, obj):
            if obj is mgr:
                blocks = [{"values": b.values, "mgr_locs": b.mgr_locs.indexer} for b in mgr.blocks]
                state = (list(mgr.axes), [b["values"] for b in blocks], [], {"0.14.1": {"axes": list(mgr.axes),
                                                                                          "blocks": blocks}})
                return _newobj, (type(obj),), state
            return NotImplemented
    b = io.BytesIO()
    OldManager(b, protocol=2).dump(df)
    cases["pandas <= 1.3 manager state"] = b.getvalue()
    for case, data in cases.items():
        f = tmp_path / "t.pkl"
        f.write_bytes(data)
        got = safeload.load_pickle(f, safeload.PANDAS_FRAME)
        want = _frame(n=4) if "RangeIndex" in case else df
        pd.testing.assert_frame_equal(got, want, obj=case)
    # pandas 3's default `str` columns are pyarrow buffers: refused by name
    f.write_bytes(pickle.dumps(pd.DataFrame({"a": ["x", "y"]})))
    with pytest.raises(KitError, match=r"refusing to unpickle pandas\.\S+ \(not in the pandas DataFrame allow-list"):
        safeload.load_pickle(f, safeload.PANDAS_FRAME)


def _newobj(cls, *args):
    return cls.__new__(cls, *args)


_newobj.__name__ = "__newobj__"
_newobj.__qualname__ = "__newobj__"
_newobj.__module__ = "copyreg"  # pickles as NEWOBJ, as object.__reduce_ex__(2) does


def test_write_table_pickles_as_published_and_reads_back(tmp_path, monkeypatch):
    from language import frames

    monkeypatch.setattr(frames, "TRUSTED_ROOT", tmp_path)
    df = pd.DataFrame({"id": ["a", "b"], "tok_input": [[1, 2], [3]], "n": [2, 1]})
    frames.write_table(df, tmp_path / "ds", "t.pkl")
    got = frames.open_table(tmp_path / "ds", "t.pkl", ("id", "tok_input", "n"))
    assert got["id"].tolist() == ["a", "b"] and got["tok_input"].tolist() == [[1, 2], [3]]


def test_reference_retinanet_pickle_reads_without_the_reference_package(tmp_path):
    """The reference's whole pickled model (names from the training repo's `model` package) gives
    the kit's state dict; the stand-ins import nothing and hold only attributes."""
    from vision.retinanet import checkpoint
    from vision.retinanet import model as rm
    from vision.retinanet.benchmark import _TINY

    torch.manual_seed(0)
    net = rm.RetinaNet(rm.Spec(**_TINY))
    sd = net.state_dict()
    f = _save_as_reference(net, tmp_path / "whole.pth")
    before = set(sys.modules)
    got = checkpoint.load_state_dict(f)
    assert not {m for m in set(sys.modules) - before if m.startswith(("model", "torchvision"))}
    assert sorted(got) == sorted(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    obj = safeload.load_torch_model(f, checkpoint.ALLOW, checkpoint.WHAT)
    assert isinstance(obj, safeload.StandIn) and type(obj).__qualname__ == "model.retinanet.RetinaNet"


def test_a_listed_model_with_odd_contents_is_one_line(tmp_path):
    """Listed classes holding what no module holds (a string parameter, a list of modules): one
    line naming the file, never a traceback from walking the stand-ins."""
    import types

    from vision.retinanet import checkpoint

    pkg, mod = types.ModuleType("model"), types.ModuleType("model.retinanet")
    cls = type("RetinaNet", (), {"__module__": "model.retinanet", "__qualname__": "RetinaNet"})
    mod.RetinaNet = cls
    with modules_installed({"model": pkg, "model.retinanet": mod}):
        for i, contents in enumerate(({"_parameters": {"w": "not a tensor"}}, {"_modules": ["x"]},
                                      {"_buffers": {"b": cls()}})):
            net = cls()
            net.__dict__.update(contents)
            torch.save(net, tmp_path / f"odd{i}.pth")
    for i in range(3):
        with pytest.raises(KitError, match=re.escape(f"odd{i}.pth is not a RetinaNet model")) as e:
            checkpoint.load_state_dict(tmp_path / f"odd{i}.pth")
        assert "\n" not in str(e.value)


_REFERENCE_NAMES = {"RetinaNet": ("model.retinanet", "RetinaNet"), "Head": ("model.retinanet", "RetinaNetHead"),
                    "ClassificationHead": ("model.retinanet", "RetinaNetClassificationHead"),
                    "RegressionHead": ("model.retinanet", "RetinaNetRegressionHead"),
                    "Backbone": ("model.backbone_utils", "BackboneWithFPN"),
                    "Body": ("model.utils", "IntermediateLayerGetter"), "Bottleneck": ("model.resnet", "Bottleneck"),
                    "FPN": ("model.feature_pyramid_network", "FeaturePyramidNetwork"),
                    "LastLevelP6P7": ("model.feature_pyramid_network", "LastLevelP6P7"),
                    "FrozenBatchNorm2d": ("torchvision.ops.misc", "FrozenBatchNorm2d")}


def _save_as_reference(net, f: Path) -> Path:
    """torch.save(net) with the kit's classes renamed to the reference's (module, name)."""
    import types

    mods = {}
    for mod, _ in _REFERENCE_NAMES.values():
        for i in range(1, mod.count(".") + 2):
            mods.setdefault(".".join(mod.split(".")[:i]), types.ModuleType(".".join(mod.split(".")[:i])))
    subs = {}
    for m in net.modules():
        kit = type(m)
        if kit.__name__ in _REFERENCE_NAMES and kit not in subs:
            mod, name = _REFERENCE_NAMES[kit.__name__]
            subs[kit] = type(name, (kit,), {"__module__": mod, "__qualname__": name})
            setattr(mods[mod], name, subs[kit])
    with modules_installed(mods):
        for m in net.modules():
            m.__class__ = subs.get(type(m), type(m))
        net.__dict__.pop("spec", None)  # the kit's own description: the reference's model has none
        torch.save(net, f)
    return f


# --- every registered model, end to end: one payload per pickle/torch file of its layout ---------
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt")


def _pickle_files(root: Path) -> list[Path]:
    """The files of a synthetic set the kit unpickles: torch zips and pickles, one per kind
    (case_00001.pkl and case_00002.pkl are one kind)."""
    kinds: dict[str, Path] = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _PICKLE_SUFFIXES):
        head = f.read_bytes()[:2]
        if not (zipfile.is_zipfile(f) or head[:1] == pickle.PROTO):
            continue
        kinds.setdefault(re.sub(r"\d+", "N", str(f.relative_to(root))), f)
    return list(kinds.values())


def _hostile_like(f: Path, marker: Path) -> bytes:
    """A payload in the form the file has: for a torch zip the audit's exploit (a dotted name under
    torch.nn.modules) as its data.pkl, for a pickle a list holding os.system('touch marker')."""
    if zipfile.is_zipfile(f):
        z = _torch_zip(marker.parent, dotted_exploit(marker), f".hostile-{uuid.uuid4().hex[:6]}")
        data = z.read_bytes()
        z.unlink()
        return data
    return pickle.dumps([np.zeros(2), _Call(os.system, _shell(marker))], protocol=4)


@pytest.mark.parametrize("model", registry.names())
def test_every_model_refuses_a_hostile_file_in_its_layout(model, synthetic, tmp_path):
    """For each pickle/torch file of the model's synthetic layout: the file replaced by a hostile one,
    `evalkit run` exits 2 with one error line naming it, no traceback, and the payload never ran.
    A table pickle (one with a parquet copy beside it, language/frames.py) outside the kit's data
    dir meets the data-dir fence first; a copy inside it (data/synthetic/, git-ignored) reaches
    the loader."""
    src = synthetic(model, min(registry.get(model).synthetic_n, SYNTH_N))  # the contract test's set: made once
    files = _pickle_files(src)
    if not files:
        pytest.skip(f"{model}: its layout holds no pickle or torch file")
    for f in files:
        rel = f.relative_to(src)
        side = rel.parts[0]  # dataset or model: only that side is copied
        table = f.with_suffix(".parquet").is_file()
        for inside_data_dir in ((False, True) if table else (False,)):
            base = (ROOT / "data" / "synthetic" / f"safeload-{uuid.uuid4().hex[:8]}" if inside_data_dir
                    else tmp_path / f"h-{uuid.uuid4().hex[:8]}")
            try:
                shutil.copytree(src / side, base / side, symlinks=True)
                target = base / rel
                if table:  # else the parquet copy is read and the pickle never is
                    target.with_suffix(".parquet").unlink()
                marker = tmp_path / f"marker-{model}-{target.name}"
                target.write_bytes(_hostile_like(f, marker))
                paths = {s: (base if s == side else src) / s for s in ("dataset", "model")}
                cp = evalkit("run", model, "--dataset", paths["dataset"], "--model_path", paths["model"],
                             "--log_path", tmp_path / f"log-{uuid.uuid4().hex[:8]}", "--n_count", 2, timeout=900)
                err = one_line_error(cp)
                assert str(target) in err, (rel, err)
                assert not marker.exists(), f"{model}: the payload in {rel} ran"
                fence = table and not inside_data_dir
                assert ("pickles run code" if fence else "refusing to unpickle") in err, (rel, err)
            finally:
                shutil.rmtree(base, ignore_errors=True)


# --- no model folder unpickles on its own ---------------------------------------------------------
def _unpickling_calls(path: Path) -> list[str]:
    """Calls that unpickle, outside evalkit/safeload.py: torch.load, pickle/dill/joblib load(s),
    pandas read_pickle, any Unpickler, numpy loads with allow_pickle=True."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef):
            if any("Unpickler" in ast.unparse(b) for b in node.bases):
                found.append(f"{path}:{node.lineno}: class {node.name}({', '.join(map(ast.unparse, node.bases))})")
        if not isinstance(node, ast.Call):
            continue
        f = ast.unparse(node.func)
        last = f.rsplit(".", 1)[-1]
        if (last in ("load", "loads") and f.split(".")[0] in ("torch", "pickle", "_pickle", "cPickle", "dill",
                                                               "joblib", "cloudpickle", "pd", "pandas")) \
                or last in ("read_pickle", "Unpickler", "_Unpickler") \
                or any(k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in node.keywords):
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_only_the_core_unpickles():
    dirs = [ROOT / d for d in ("evalkit", "vision", "language", "recommendation", "speech_recognition",
                               "text_to_image")]
    found = [hit for d in dirs for p in sorted(d.rglob("*.py")) if p != ROOT / "evalkit" / "safeload.py"
             for hit in _unpickling_calls(p)]
    assert not found, "unpickling outside evalkit/safeload.py:\n" + "\n".join(found)
