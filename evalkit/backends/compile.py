"""`pytorch-compile`: the benchmark's PyTorch model under torch.compile.

Options (--backend_option K=V): compile_backend (default inductor), compile_mode (default,
reduce-overhead, max-autotune), dynamic (true/false; default false: static shapes).
Compilation happens before LoadGen's clock starts: the runner calls warmup() with one full
batch from the QSL's load callback. With static shapes every batch has the batch size (the
runner pads the last one and drops the padding from the answers), so nothing recompiles
inside the timed run.
torch.compile is lazy: most failures show at the first batch. Where the model cannot be compiled
(at torch.compile or at the first batch) the backend warns once and runs eager from then on;
describe() records which one ran, so the manifest says whether a run was compiled.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from .pytorch import PyTorchBackend


def _compile_errors() -> tuple[type, ...]:
    # Only failures of the compiler itself fall back; a model error re-raises from the eager run.
    from torch._dynamo.exc import TorchDynamoException

    return (TorchDynamoException,)


class CompileBackend(PyTorchBackend):
    name = "pytorch-compile"

    def load(self, bench, model_path: Path, device: str, data_type: str, options: dict) -> None:
        import torch

        super().load(bench, model_path, device, data_type, options)
        self.eager = self.model
        self.fallback: str | None = None
        self.verified = False  # the compiled model ran one batch
        kw: dict[str, Any] = {"backend": self.options.get("compile_backend", "inductor")}
        if self.options.get("compile_mode"):
            kw["mode"] = self.options["compile_mode"]
        dynamic = str(self.options.get("dynamic", "false")).lower() in ("1", "true", "yes")
        kw["dynamic"] = dynamic
        self.static_shapes = not dynamic
        try:
            self.model = bench.compile_model(self.eager, lambda fn: torch.compile(fn, **kw))
        except _compile_errors() as e:
            self._fall_back(e)

    def _fall_back(self, e: BaseException) -> None:
        # dynamo's first line is often only "backend='inductor' raised:"; the cause is the next one
        lines = [x.strip() for x in str(e).splitlines() if x.strip()][:2]
        self.fallback = f"{type(e).__name__}: {' '.join(lines)}"
        self.model = self.eager
        print(f"warning: pytorch-compile: cannot compile {self.bench.name} ({self.fallback}); running eager",
              file=sys.stderr)

    def run(self, inputs: Any) -> Any:
        if self.fallback is None and not self.verified:
            try:
                out = super().run(inputs)
            except _compile_errors() as e:
                self._fall_back(e)
                return super().run(inputs)
            self.verified = True
            return out
        return super().run(inputs)

    def warmup(self, inputs: Any) -> None:
        """Compile (and run once) on a full batch, outside LoadGen's timed run."""
        self.run(inputs)

    def close(self) -> None:
        super().close()
        self.eager = None

    def describe(self) -> dict:
        return {"compiled": self.fallback is None, "fallback": self.fallback, "static_shapes": self.static_shapes,
                "compile_options": {k: v for k, v in self.options.items() if k.startswith("compile_") or k == "dynamic"}}
