"""Plug-ins found by name: the kit's built-ins first (a plug-in cannot shadow them), then any installed
package's entry point in the kind's group (name -> `module:Class`). Backends (evalkit/backends) and
quantizers (evalkit/quantize.py) are looked up here; a name that is unknown, a plug-in that fails to
import, or a class without the methods the kind needs is one line listing the installed names."""
from __future__ import annotations

import importlib
from importlib import metadata


class Kind:
    def __init__(self, kind: str, group: str, builtin: dict[str, str], required: tuple[str, ...],
                 base: str, flag: str = ""):
        self.kind, self.group, self.builtin, self.required, self.base = kind, group, builtin, required, base
        self.flag = flag  # how a user names it (e.g. "QUANTIZER, --quantizer"), shown with an unknown name

    def entry_points(self) -> dict[str, metadata.EntryPoint]:
        return {ep.name: ep for ep in metadata.entry_points(group=self.group)}

    def names(self) -> list[str]:
        return list(self.builtin) + sorted(n for n in self.entry_points() if n not in self.builtin)

    def resolve(self, name: str) -> type:
        from .errors import KitError

        installed = f"installed {self.kind}s: {', '.join(self.names())}"
        if name in self.builtin:
            target = self.builtin[name]
            mod, _, attr = target.partition(":")
            load = lambda: getattr(importlib.import_module(mod), attr)
        else:
            ep = self.entry_points().get(name)
            if ep is None:
                flag = f" ({self.flag})" if self.flag else ""
                raise KitError(f"unknown {self.kind} '{name}'{flag}; {installed} "
                               f"(plug-ins register in the '{self.group}' entry-point group)")
            target, load = ep.value, ep.load
        try:
            cls = load()
        except Exception as e:  # noqa: BLE001 - any import-time failure of a plug-in becomes one line naming it
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise KitError(f"{self.kind} '{name}' ({target}) cannot be loaded: {type(e).__name__}: {first}; "
                           f"{installed}") from None
        missing = [m for m in self.required if not callable(getattr(cls, m, None))]
        if not isinstance(cls, type) or missing:
            what = f"lacks {', '.join(missing)}" if missing else "is not a class"
            need = ", ".join(f"{m}()" for m in self.required)
            raise KitError(f"{self.kind} '{name}' ({target}) {what}; a {self.kind} needs {need} "
                           f"(subclass {self.base}); {installed}")
        return cls
