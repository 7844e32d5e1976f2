"""`pytorch`: the benchmark's own PyTorch model, eager (the reference path)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import Backend


class PyTorchBackend(Backend):
    name = "pytorch"

    def load(self, bench, model_path: Path, device: str, data_type: str, options: dict) -> None:
        # Model construction stays in the benchmark: it knows the checkpoint format.
        self.bench = bench
        if data_type == "fp32" and device.startswith("cuda"):
            import torch

            # fp32 means fp32: cuDNN's default TF32 convolutions would flip near-tie labels.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = bench.load_model(Path(model_path), device, data_type, options)

    def run(self, inputs: Any) -> Any:
        return self.bench.forward(self.model, inputs)

    def close(self) -> None:
        self.model = None
