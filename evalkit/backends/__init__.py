"""Backends: how a benchmark's model runs. The benchmark owns data, pre/post-processing,
payload and accuracy; a backend owns only "a batch of model inputs -> model outputs".

Built-ins: `pytorch` (eager, default), `pytorch-compile` (torch.compile), `openai` (an
OpenAI-compatible server, LLMs). Any installed package can add one through the entry-point
group `evalkit.backends` (name = what BACKEND=<name> selects, value = `module:Class`).
"""
from __future__ import annotations

import importlib
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import KitError

ENTRY_POINT_GROUP = "evalkit.backends"

BUILTIN: dict[str, str] = {
    "pytorch": "evalkit.backends.pytorch:PyTorchBackend",
    "pytorch-compile": "evalkit.backends.compile:CompileBackend",
    "openai": "evalkit.backends.openai:OpenAIBackend",
}
REQUIRED_METHODS = ("load", "run", "close")


class Backend:
    """One model instance on one device, owned by one partition (one worker process).

    The runner calls, in this order: `Backend(options)`, `load(...)` once, `run(inputs)` once per
    batch from its worker thread, `close()` once (also after a failure). `describe()` is
    recorded in the partition manifest.
    """

    name: str = ""

    def __init__(self, options: dict | None = None):
        self.options = dict(options or {})   # this backend's own options (--backend_option K=V)

    def load(self, bench, model_path: Path, device: str, data_type: str, options: dict) -> None:
        """Build or connect to the model. `options` are the benchmark's model options."""
        raise NotImplementedError

    def run(self, inputs: Any) -> Any:
        """`bench.make_batch(...)` output -> what `bench.postprocess` takes."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {}

    @classmethod
    def for_partition(cls, options: dict, p: int) -> dict:
        """This backend's options as partition `p` uses them (BACKEND=openai: the server of
        SERVER_URLS that serves p). Called by the plan for every launched partition, before any
        work, so a bad option fails there; the default: the options unchanged."""
        return dict(options)


class SampleError(KitError):
    """A failure of one sample of a batch; `position` is its place in the batch, so the runner
    can name the sample's dataset index."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    return list(BUILTIN) + sorted(n for n in _entry_points() if n not in BUILTIN)


def resolve(name: str) -> type:
    """The backend class registered as `name`; one-line KitError listing the installed ones."""
    installed = ", ".join(names())
    if name in BUILTIN:  # built-ins first: a plug-in cannot shadow them
        target = BUILTIN[name]
        mod, _, attr = target.partition(":")
        load = lambda: getattr(importlib.import_module(mod), attr)  # noqa: E731
    else:
        ep = _entry_points().get(name)
        if ep is None:
            raise KitError(f"unknown backend '{name}'; installed backends: {installed} "
                           f"(plug-ins register in the '{ENTRY_POINT_GROUP}' entry-point group)")
        target, load = ep.value, ep.load
    try:
        cls = load()
    except Exception as e:  # any import-time failure of a plug-in becomes one line naming it
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise KitError(f"backend '{name}' ({target}) cannot be loaded: {type(e).__name__}: {first}; "
                       f"installed backends: {installed}") from None
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(cls, m, None))]
    if not isinstance(cls, type) or missing:
        what = f"lacks {', '.join(missing)}" if missing else "is not a class"
        raise KitError(f"backend '{name}' ({target}) {what}; a backend needs load(), run() and close() "
                       f"(subclass evalkit.backends.Backend); installed backends: {installed}")
    return cls


def create(name: str, options: dict | None = None, partition: int = 0) -> Backend:
    cls = resolve(name)
    return cls(cls.for_partition(options or {}, partition))
