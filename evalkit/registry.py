"""One line per model: kit name -> module holding its BENCHMARK definition.

The core never names a model anywhere else; adding a model is adding a folder
and a line here. Loading a model checks its definition (abstract methods all
written, names and facts consistent), so an incomplete model fails here, not in
the middle of a run.
"""
from __future__ import annotations

import importlib

import numpy as np

from .benchmark import Benchmark
from .errors import KitError

MODELS: dict[str, str] = {
    "resnet": "vision.resnet50.benchmark",
    "bert": "language.bert.benchmark",
    "gpt-j": "language.gptj.benchmark",
    "stablediffusion": "text_to_image.sdxl.benchmark",
    "llama2": "language.llama2.benchmark",
    "mixtral": "language.mixtral.benchmark",
    "retinanet": "vision.retinanet.benchmark",
    "3d-unet": "vision.unet3d.benchmark",
    "dlrm": "recommendation.dlrm_v2.benchmark",
    "rnnt": "speech_recognition.rnnt.benchmark",
    "deepseek-r1": "language.deepseek_r1.benchmark",
    "gpt-oss-120b": "language.gpt_oss.benchmark",
    "llama3.1-8b": "language.llama3_1_8b.benchmark",
    "whisper": "speech_recognition.whisper.benchmark",
}


def names() -> list[str]:
    return list(MODELS)


def validate(name: str, bench) -> Benchmark:
    """The registered object, or KitError naming what its definition lacks."""
    from . import targets

    where = f"model '{name}' ({MODELS.get(name, '?')})"
    if not isinstance(bench, Benchmark):
        raise KitError(f"{where}: BENCHMARK is {type(bench).__name__}, not an evalkit.benchmark.Benchmark")
    problems = []
    if bench.name != name:
        problems.append(f"name is {bench.name!r}, registered as {name!r}")
    if not bench.mlperf_name:
        problems.append("no mlperf_name (LoadGen mlperf.conf key)")
    if not bench.checker_names:
        problems.append("no checker_names")
    for t, c in bench.checker_names.items():
        if c not in targets.TARGETS:
            problems.append(f"checker name {c!r} (target {t}) has no row in evalkit/targets.py")
    if bench.default_accuracy_target not in bench.checker_names:
        problems.append(f"default_accuracy_target {bench.default_accuracy_target!r} is not in checker_names")
    if bench.dataset_size < 1:
        problems.append("dataset_size is not set")
    try:
        np.dtype(bench.payload_dtype)
    except TypeError:
        problems.append(f"payload_dtype {bench.payload_dtype!r} is not a numpy dtype")
    if not isinstance(bench.options, dict):
        problems.append("options is not a dict of option -> default")
    if problems:
        raise KitError(f"{where} is not a complete benchmark definition: {'; '.join(problems)}")
    return bench


def get(name: str) -> Benchmark:
    if name not in MODELS:
        raise KitError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    try:
        module = importlib.import_module(MODELS[name])
    except TypeError as e:  # BENCHMARK = Cls() with an abstract method left unwritten
        raise KitError(f"model '{name}' ({MODELS[name]}) is not a complete benchmark definition: {e}") from None
    if not hasattr(module, "BENCHMARK"):
        raise KitError(f"model '{name}': {MODELS[name]} defines no BENCHMARK")
    return validate(name, module.BENCHMARK)
