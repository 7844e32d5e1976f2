"""One line per model: kit name -> module holding its BENCHMARK definition.

The core never names a model anywhere else; adding a model is adding a folder
and a line here.
"""
from __future__ import annotations

import importlib

from .benchmark import Benchmark
from .errors import KitError

MODELS: dict[str, str] = {
    "resnet": "vision.resnet50.benchmark",
    "bert": "language.bert.benchmark",
    "gpt-j": "language.gptj.benchmark",
}


def names() -> list[str]:
    return list(MODELS)


def get(name: str) -> Benchmark:
    if name not in MODELS:
        raise KitError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    return importlib.import_module(MODELS[name]).BENCHMARK
