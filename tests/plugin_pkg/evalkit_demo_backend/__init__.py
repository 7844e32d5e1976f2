"""A plug-in backend: runs the benchmark's PyTorch model on its own, in fixed-size chunks
(a stand-in for a runtime with a static batch), and counts what it ran."""
from __future__ import annotations

from evalkit.backends import Backend


class DemoBackend(Backend):
    name = "demo"

    def load(self, bench, model_path, device, data_type, options):
        self.bench = bench
        self.model = bench.load_model(model_path, device, data_type, options)
        self.chunk = int(self.options.get("chunk", 2))
        self.batches = self.samples = 0

    def run(self, inputs):
        import torch

        outs = [self.bench.forward(self.model, inputs[i:i + self.chunk])
                for i in range(0, len(inputs), self.chunk)]
        self.batches += 1
        self.samples += len(inputs)
        return torch.cat(outs)

    def close(self):
        self.model = None

    def describe(self):
        return {"plugin": "evalkit-demo-backend", "chunk": self.chunk, "batches": self.batches,
                "samples": self.samples}


class Hollow:
    """Registered but not a backend: no load/run/close."""
