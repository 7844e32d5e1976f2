"""Backends: how a benchmark's model runs. The benchmark owns data, pre/post-processing,
payload and accuracy; a backend owns only "a batch of model inputs -> model outputs".

Built-ins: `pytorch` (eager, default), `pytorch-compile` (torch.compile), `openai` (an
OpenAI-compatible server, LLMs). Any installed package can add one through the entry-point
group `evalkit.backends` (name = what BACKEND=<name> selects, value = `module:Class`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import KitError
from ..plugins import Kind

ENTRY_POINT_GROUP = "evalkit.backends"

BUILTIN: dict[str, str] = {
    "pytorch": "evalkit.backends.pytorch:PyTorchBackend",
    "pytorch-compile": "evalkit.backends.compile:CompileBackend",
    "openai": "evalkit.backends.openai:OpenAIBackend",
}
REQUIRED_METHODS = ("load", "run", "close")
KIND = Kind("backend", ENTRY_POINT_GROUP, BUILTIN, REQUIRED_METHODS, "evalkit.backends.Backend", "BACKEND, --backend")


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


def names() -> list[str]:
    return KIND.names()


def resolve(name: str) -> type:
    """The backend class registered as `name`; one-line KitError listing the installed ones."""
    return KIND.resolve(name)


def create(name: str, options: dict | None = None, partition: int = 0) -> Backend:
    cls = resolve(name)
    return cls(cls.for_partition(options or {}, partition))
