"""Reading a RetinaNet checkpoint without running the pickle's code.

Accepted: a bare state dict, a training checkpoint {"model": state_dict, ...}, or the reference's
whole pickled model (resnext50_32x4d_fpn.pth is `torch.save(model)`; the reference loads it with
torch.load(weights_only=False), which imports its model package and can run arbitrary code).
For the last one a restricted unpickler stands a do-nothing stub in for every class outside a
short torch allow-list, then walks the stubs' _parameters/_buffers/_modules into a state dict.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from evalkit.errors import KitError

_TORCH_DTYPES = {"float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "int8", "bool"}


class _Stub:
    """Stands in for a class of the pickled model: keeps the attributes, runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) form
            state = state[0] or {}
        if isinstance(state, dict):
            self.__dict__.update(state)


def _allowed(module: str, name: str) -> bool:
    if module == "collections" and name == "OrderedDict":
        return True
    # protocol 2 pickles (torch.save's) spell Python 2 module names: __builtin__, copy_reg
    if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "slice", "object"):
        return True
    if module in ("copyreg", "copy_reg") and name == "_reconstructor":
        return True
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return True
    if module == "torch" and (name.endswith("Storage") or name in ("Size", "device") or name in _TORCH_DTYPES):
        return True
    if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage"):
        return True
    if module == "torch.nn.parameter" and name == "Parameter":
        return True
    return module.startswith("torch.nn.modules.")  # plain layers (Conv2d, ReLU, ...): data only


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if _allowed(module, name):
            return super().find_class(module, name)
        return _Stub


class _RestrictedPickle:
    """The `pickle_module` torch.load takes: its Unpickler is the restricted one."""
    Unpickler = _Unpickler
    load = staticmethod(pickle.load)
    __name__ = "evalkit_restricted_pickle"


def _collect(obj, prefix: str, out: dict) -> None:
    d = getattr(obj, "__dict__", {})
    for k, v in (d.get("_parameters") or {}).items():
        if v is not None:
            out[prefix + k] = v.detach()
    skip = d.get("_non_persistent_buffers_set") or set()
    for k, v in (d.get("_buffers") or {}).items():
        if v is not None and k not in skip:
            out[prefix + k] = v
    for k, m in (d.get("_modules") or {}).items():
        if m is not None:
            _collect(m, f"{prefix}{k}.", out)


def load_state_dict(path: Path) -> dict:
    """The checkpoint's state dict; KitError naming the file when it is none of the accepted forms."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KitError(f"checkpoint {path} not found") from None
    except Exception:  # noqa: BLE001 - not weights-only: maybe the reference's pickled model
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
        except Exception as e:  # noqa: BLE001
            raise KitError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); expected a RetinaNet "
                           f"state dict or the reference's resnext50_32x4d_fpn.pth") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # MLPerf training checkpoint
    if isinstance(obj, dict):
        return dict(obj)
    out: dict = {}
    _collect(obj, "", out)
    if not out:
        raise KitError(f"checkpoint {path} holds a {type(obj).__name__} with no weights; expected a "
                       f"RetinaNet state dict")
    return out
