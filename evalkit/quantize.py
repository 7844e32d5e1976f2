"""Quantized runs: quantizer plug-ins, one calibration per run, the artifact every partition evaluates.

A quantizer (like a backend, evalkit/backends) is a class found by name: the built-ins below, or any
installed package's entry point in the group `evalkit.quantizers` (name -> `module:Class`). It has two
steps, so that calibration runs once per run and every partition on every node evaluates the same
model:

    calibrate(bench, model, batches, run) -> {name: tensor}   # statistics, from N_CALIB samples
    build(bench, model, stats, run)       -> model            # the model to evaluate, no data needed

`model` is load_model's result (Benchmark.quant_module/with_quant_module reach its torch module),
`batches` iterates make_batch's output over the first N_CALIB samples of the calibration split, `run`
holds the run's options (data_type, device, the model's options, the quantizer's options). A
plug-in that quantizes in one go returns its quantized state dict as `stats` and loads it in build.

The statistics are the artifact: written once (safetensors, no pickle) as
<run dir>/calibration/<sha256>.safetensors and copied into the kit's store (EVALKIT_QUANT_STORE,
default ~/.cache/evalkit/quant). Its sha256 and the sha256 of the quantized model rebuilt from it
(every tensor and the graph) enter the run config, so the config hash identifies the evaluated
model by content. Each partition rebuilds the model from the artifact and refuses to run when its
rebuilt model's sha256 differs; gather refuses a partition whose manifest records another one.
A resumed run finds the artifact of the same calibration inputs in its run dir and never
recalibrates; CALIBRATE=false takes the store's artifact for the same inputs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import KitError
from .plugins import Kind
from .util import KIT_CLI, atomic_write_json, config_hash, sha256_file

ENTRY_POINT_GROUP = "evalkit.quantizers"
BUILTIN: dict[str, str] = {
    "int8-static": "evalkit.quantize:PT2EStaticInt8",
    "w8a8-smoothquant": "evalkit.quantize:SmoothQuantW8A8",
}
CALIB_DIR = "calibration"      # in the run dir
STORE_ENV = "EVALKIT_QUANT_STORE"
KIND = Kind("quantizer", ENTRY_POINT_GROUP, BUILTIN, ("calibrate", "build"), "evalkit.quantize.Quantizer",
            "QUANTIZER, --quantizer")


class Quantizer:
    """Base class of quantizer plug-ins. `options`: the keys --quantizer_option accepts, with defaults
    (their resolved values enter the config hash). `data_types`: the DATA_TYPEs it quantizes from."""

    name: str = ""
    options: dict = {}  # noqa: RUF012 (read-only declaration, like Benchmark.options)
    data_types: tuple[str, ...] = ("fp32",)
    library: str = ""   # what does the work (recorded in the artifact and the report)

    def __init__(self, options: dict | None = None):
        self.options = dict(options or {})

    def check(self, bench, options: dict) -> None:
        """Plan time, before any model loads: refuse (KitError, one line) a request this quantizer cannot run
        with the model's resolved run options (`options`); self.options are resolved already."""

    def calibrate(self, bench, model, batches: Iterable, run: dict) -> dict:
        raise NotImplementedError

    def build(self, bench, model, stats: dict, run: dict) -> Any:
        raise NotImplementedError

    def quantize(self, bench, model, batches: Iterable, run: dict) -> Any:
        """Both steps in one: the plug-in interface as one call (the kit itself calls them apart)."""
        return self.build(bench, model, self.calibrate(bench, model, batches, run), run)


# ------------------------------------------------------------------ lookup

def names() -> list[str]:
    return KIND.names()


def resolve_class(name: str) -> type:
    return KIND.resolve(name)


def resolve_options(cls: type, name: str, given: dict) -> dict:
    from .plan import declared_options

    declared = dict(getattr(cls, "options", {}) or {})
    out = declared_options(declared, given, "--quantizer_option", f"quantizer {name}")
    # a quantizer's float option takes a float even when given as an integer (alpha=1 -> 1.0)
    return {k: float(v) if isinstance(declared[k], float) and type(v) is int else v for k, v in out.items()}


# ------------------------------------------------------------------ the plan's part (evalkit/plan.py)

def plan_part(bench, spec, dataset_path: Path, model_path: Path) -> dict | None:
    """Validate the quantization request before any model loads; the dict enters the run config.
    None: an unquantized run (its config, and so its hash, is what it was before quantizers)."""
    from . import calibration
    from .identity import dataset_identity, tree_identity
    from .manifest import read_synthetic

    if not spec.quantizer and not spec.calibrate:
        if spec.n_calib or spec.quantizer_options or spec.calib_dataset:
            raise KitError("--n_calib, --quantizer_option and --calib_dataset need a quantized run: "
                           "set CALIBRATE=true (the model's built-in quantizer) or QUANTIZER=<name>")
        return None
    name = spec.quantizer or bench.default_quantizer
    if not name:
        raise KitError(f"CALIBRATE=true: {bench.name} has no built-in quantizer; name a plug-in with QUANTIZER=<name> "
                       f"(installed: {', '.join(names())})")
    cls = resolve_class(name)
    options = resolve_options(cls, name, spec.quantizer_options)
    from .plan import resolve_options as model_options

    cls(options).check(bench, model_options(bench, spec.options))
    if spec.backend != "pytorch":
        raise KitError(f"QUANTIZER={name} quantizes the kit's PyTorch model; --backend {spec.backend} runs elsewhere "
                       f"(a server quantizes its own model): use BACKEND=pytorch")
    if spec.data_type not in cls.data_types:
        raise KitError(f"--data_type {spec.data_type}: quantizer {name} quantizes from "
                       f"{', '.join(cls.data_types)} (DATA_TYPE=...)")
    top = calibration.max_n(bench)   # KitError when MLCommons publishes no list for the model
    synthetic = read_synthetic(Path(dataset_path))
    split = Path(spec.calib_dataset) if spec.calib_dataset else calibration.default_split(bench, dataset_path,
                                                                                           synthetic is not None)
    n = spec.n_calib or (min(calibration.SYNTHETIC_N_CALIB, top) if synthetic is not None else top)
    if not 1 <= n <= top:
        raise KitError(f"--n_calib {n} (N_CALIB) is outside 1..{top}, the size of the MLPerf calibration list of "
                       f"{bench.name} ({calibration.list_files(bench)[0]})")
    calibrate = True if spec.calibrate is None else bool(spec.calibrate)
    part = {"quantizer": name, "quantizer_options": options, "library": getattr(cls, "library", ""),
            "n_calib": n, "calibration_overlap_allowed": bool(spec.allow_calibration_overlap)}
    have = calibration.split_size(split)
    if spec.quant_artifact:  # calibrated already: the artifact says which split (other nodes need no copy of it)
        meta = read_meta(Path(spec.log_path) / CALIB_DIR, spec.quant_artifact)
        part["calibration_split"] = meta["calibration_split_identity"]
    elif synthetic is not None and not spec.calib_dataset and (have is None or have < n):
        part["calibration_split"] = "pending"  # written by prepare() before anything loads a model
    elif not split.is_dir():
        raise KitError(f"calibration split {split} does not exist (--calib_dataset); lay out the listed MLPerf "
                       f"calibration samples of {bench.name} there in the validation set's layout: "
                       f"{KIT_CLI} data calibration {bench.name} --src DIR")
    else:
        part["calibration_split"] = dataset_identity(tree_identity(split, "calibration split (--calib_dataset)"))
    part["calibration_path"] = str(split)  # where, not what: popped from the hashed config below
    if spec.quant_artifact:
        part.update(artifact=meta["artifact"], model_sha256=meta["model_sha256"])
    part["calibrate"] = calibrate
    return part


def hashed(part: dict) -> dict:
    """What of plan_part goes into the config hash: everything but where the split lies and whether
    this launch calibrates (the artifact's sha256 says what was evaluated)."""
    return {k: v for k, v in part.items() if k not in ("calibration_path", "calibrate")}


# ------------------------------------------------------------------ artifacts

def store_dir() -> Path:
    d = os.environ.get(STORE_ENV)
    return Path(d) if d else Path.home() / ".cache" / "evalkit" / "quant"


def read_meta(cdir: Path, sha: str) -> dict:
    f = Path(cdir) / f"{sha}.json"
    art = Path(cdir) / f"{sha}.safetensors"
    if not f.is_file() or not art.is_file():
        raise KitError(f"quantized-model artifact {art} (or its {f.name}) is missing; rerun the launch with CALIBRATE=true "
                       f"(it calibrates once into {cdir})")
    try:
        meta = json.loads(f.read_text())
    except ValueError:
        raise KitError(f"{f} is not JSON; remove {cdir} and rerun with CALIBRATE=true") from None
    return meta


def load_stats(cdir: Path, sha: str) -> dict:
    from .identity import file_sha256
    from .safeload import load_safetensors

    art = Path(cdir) / f"{sha}.safetensors"
    got = file_sha256(art)
    if got != sha:
        raise KitError(f"quantized-model artifact {art} has sha256 {got[:12]}.., its name says {sha[:12]}..: it changed "
                       f"since calibration; remove it and rerun with CALIBRATE=true")
    return load_safetensors(art, "quantized-model artifact")


def _save(stats: dict, meta: dict, cdir: Path) -> str:
    from safetensors.torch import save_file

    cdir.mkdir(parents=True, exist_ok=True)
    tmp = cdir / f".stats-{os.getpid()}.safetensors"
    clean = {k: v.detach().cpu().contiguous().clone() for k, v in sorted(stats.items())}
    save_file(clean, str(tmp), metadata={"quantizer": meta["quantizer"], "key": meta["key"]})
    sha = sha256_file(tmp)
    os.replace(tmp, cdir / f"{sha}.safetensors")
    atomic_write_json(cdir / f"{sha}.json", dict(meta, artifact=sha))
    return sha


def _copy(src: Path, dst: Path, sha: str) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        if not (dst / f"{sha}{suffix}").exists():
            tmp = dst / f".{sha}{suffix}.{os.getpid()}"
            shutil.copyfile(src / f"{sha}{suffix}", tmp)
            os.replace(tmp, dst / f"{sha}{suffix}")


def _by_key(cdir: Path, key: str) -> str | None:
    f = Path(cdir) / "by-key" / key
    try:
        sha = f.read_text().strip()
    except OSError:
        return None
    return sha if (Path(cdir) / f"{sha}.safetensors").is_file() else None


def _remember(cdir: Path, key: str, sha: str) -> None:
    from .util import atomic_write_text

    (Path(cdir) / "by-key").mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(cdir) / "by-key" / key, sha + "\n")


def artifact_files(log_path: Path, sha: str) -> dict[str, bytes]:
    """The artifact's files (torchrun: rank 0 hands them to ranks on other nodes)."""
    cdir = Path(log_path) / CALIB_DIR
    return {f"{sha}{s}": (cdir / f"{sha}{s}").read_bytes() for s in (".safetensors", ".json")}


def receive_files(log_path: Path, files: dict[str, bytes]) -> None:
    cdir = Path(log_path) / CALIB_DIR
    cdir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if not (cdir / name).exists():
            tmp = cdir / f".{name}.{os.getpid()}"
            tmp.write_bytes(data)
            os.replace(tmp, cdir / name)


# ------------------------------------------------------------------ calibrate once

def _run_options(spec, part: dict) -> dict:
    return {"data_type": spec.data_type, "device": spec.device.split(",")[0], "options": dict(spec.options),
            "quantizer_options": dict(part["quantizer_options"])}


def calibration_key(plan) -> str:
    """The calibration's inputs: checkpoint, model options, data type, quantizer + options, N_CALIB, the
    split's files, the device kind. Not n_count, partitions, scenario or mode: one artifact serves them all."""
    c, q = plan.config, plan.config["quantization"]
    inputs = {k: c.get(k) for k in ("model", "data_type", "options", "checkpoint", "fingerprint", "backend")}
    inputs.update({k: q[k] for k in ("quantizer", "quantizer_options", "n_calib", "calibration_split")},
                  device=plan.spec.device.split(":")[0].split(",")[0])
    return config_hash(inputs)


def config_hash_in(plan, run_dir: Path) -> str | None:
    """The config hash this plan has in run_dir: a quantized plan not yet given its artifact takes the one
    of its calibration inputs that run_dir holds (a resumed run evaluates it, never recalibrating); None when
    run_dir holds none (it cannot be this run)."""
    if not plan.quant or plan.spec.quant_artifact:
        return plan.config_hash
    if plan.quant["calibration_split"] == "pending":
        return None  # the split is not even written: no run calibrated on it
    cdir = Path(run_dir) / CALIB_DIR
    sha = _by_key(cdir, calibration_key(plan))
    if sha is None:
        return None
    meta = read_meta(cdir, sha)
    quant = dict(plan.config["quantization"], artifact=meta["artifact"], model_sha256=meta["model_sha256"])
    return config_hash(dict(plan.config, quantization=quant))


def prepare(plan, world_size: int | None = None):
    """Before any partition starts: the run's quantized-model artifact (reused from the run dir on resume,
    from the store with CALIBRATE=false, else calibrated now), and the plan that names it."""
    from . import calibration
    from .plan import resolve

    part = plan.quant
    if not part or plan.spec.quant_artifact:
        return plan
    spec, bench = plan.spec, plan.bench
    split = Path(part["calibration_path"])
    if part["calibration_split"] == "pending":
        from .manifest import read_synthetic

        seed = int((read_synthetic(Path(spec.dataset)) or {}).get("seed", 0)) + 1000
        print(f"calibration: writing a synthetic calibration split of {part['n_calib']} samples to {split} "
              f"(synthetic {bench.name} set, seed {seed}: none of its samples is an evaluated one)", file=sys.stderr)
        calibration.write_synthetic_split(bench, split, part["n_calib"], seed)
        plan = resolve(spec, world_size=world_size)
        part = plan.quant
    key = calibration_key(plan)
    cdir = Path(spec.log_path) / CALIB_DIR
    sha = _by_key(cdir, key)
    if sha is not None:
        print(f"calibration: {cdir / (sha + '.safetensors')} holds this run's calibration (resume: not calibrated "
              f"again)", file=sys.stderr)
        return resolve(dataclasses.replace(spec, quant_artifact=sha), world_size=world_size)
    from .launcher import preflight

    preflight(plan)  # nothing to resume from: the run dir must hold no other run before its calibration goes there
    if not part["calibrate"]:
        sha = _by_key(store_dir(), key)
        if sha is None:
            raise KitError(f"CALIBRATE=false but the store {store_dir()} holds no calibration of these inputs "
                           f"({bench.name}, {part['quantizer']}, N_CALIB={part['n_calib']}, this checkpoint and "
                           f"split); run once with CALIBRATE=true")
        _copy(store_dir(), cdir, sha)
        _remember(cdir, key, sha)
        print(f"calibration: CALIBRATE=false, artifact {sha[:12]}.. taken from {store_dir()}", file=sys.stderr)
    else:
        sha = _calibrate(plan, part, split, key, cdir)
    return resolve(dataclasses.replace(spec, quant_artifact=sha), world_size=world_size)


def _calibrate(plan, part: dict, split: Path, key: str, cdir: Path) -> str:
    from . import calibration

    spec, bench, n = plan.spec, plan.bench, part["n_calib"]
    calib = bench.open_dataset(split, Path(spec.model_path), spec.options)
    if calib.size < n:
        raise KitError(f"calibration split {split} has {calib.size} samples, N_CALIB is {n}")
    calib.check_available(0, n)
    if not part["calibration_overlap_allowed"]:
        calibration.check_leak(bench, calib, n, plan.dataset, spec.n_count, split, Path(spec.dataset))
    cls = resolve_class(part["quantizer"])
    q = cls(part["quantizer_options"])
    run = _run_options(spec, part)
    device = spec.device.split(",")[0]
    if spec.threads:
        import torch
        torch.set_num_threads(spec.threads)
    t0 = time.time()
    model = bench.load_model(Path(spec.model_path), device, spec.data_type, spec.options)
    t1 = time.time()
    stats = q.calibrate(bench, model, calibration.batches(bench, calib, n, spec.batch_size, device, spec.data_type,
                                                          spec.options), run)
    t_cal = time.time() - t1
    del model
    # the digest is taken from a model built exactly as each partition builds it: a fresh load + stats
    qmodel = q.build(bench, bench.load_model(Path(spec.model_path), device, spec.data_type, spec.options), stats, run)
    digest = model_digest(bench.quant_module(qmodel))
    meta = {"key": key, "model": bench.name, "quantizer": part["quantizer"], "library": part["library"],
            "quantizer_options": part["quantizer_options"], "n_calib": n, "calibration_split": str(split),
            "calibration_split_identity": part["calibration_split"],
            "model_sha256": digest, "calibration_s": round(t_cal, 3), "total_s": round(time.time() - t0, 3),
            "device": device, "data_type": spec.data_type, "created": time.time()}
    sha = _save(stats, meta, cdir)
    _remember(cdir, key, sha)
    try:  # the kit's store: CALIBRATE=false and other run dirs take it from there
        _copy(cdir, store_dir(), sha)
        _remember(store_dir(), key, sha)
    except OSError as e:
        print(f"warning: could not copy the artifact into the store {store_dir()}: {e}", file=sys.stderr)
    print(f"calibration: {part['quantizer']} on {n} samples of {split} in {t_cal:.1f} s; artifact "
          f"{cdir / (sha + '.safetensors')}, quantized model sha256 {digest[:12]}..", file=sys.stderr)
    return sha


def apply(plan, model, p: int):
    """Partition p's model: the fp32 model rebuilt into the run's quantized one from the artifact, and
    proven to be the calibration step's (sha256 of every tensor and the graph)."""
    part = plan.config.get("quantization")
    if not part:
        return model, None
    spec, bench = plan.spec, plan.bench
    cdir = Path(spec.log_path) / CALIB_DIR
    stats = load_stats(cdir, part["artifact"])
    q = resolve_class(part["quantizer"])(part["quantizer_options"])
    qmodel = q.build(bench, model, stats, _run_options(spec, part))
    digest = model_digest(bench.quant_module(qmodel))
    if digest != part["model_sha256"]:
        raise KitError(f"partition {p}: the quantized model rebuilt from {cdir / (part['artifact'] + '.safetensors')} "
                       f"has sha256 {digest[:12]}.., the calibration step's has {part['model_sha256'][:12]}.. (another "
                       f"library version or device arithmetic); run every partition where the calibration ran, or "
                       f"recalibrate in a new LOG_PATH")
    return qmodel, digest


# ------------------------------------------------------------------ identity of a quantized model

def _tensor_bytes(h, t) -> None:
    import torch

    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        inner, _ = t.__tensor_flatten__()
        h.update(type(t).__name__.encode())
        for name in inner:
            h.update(name.encode())
            _tensor_bytes(h, getattr(t, name))
        for attr in ("act_pre_scale",):  # SmoothQuant's smoothing factor rides on the weight
            v = getattr(t, attr, None)
            if isinstance(v, torch.Tensor):
                h.update(attr.encode())
                _tensor_bytes(h, v)
        return
    x = t.detach().cpu().contiguous()
    h.update(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.view(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b"")


def model_digest(module) -> str:
    """sha256 over a quantized module: its graph code (GraphModule) and every tensor it holds."""
    import torch

    h = hashlib.sha256()
    code = getattr(module, "code", None)
    if isinstance(code, str):
        h.update(code.encode())
    seen = {}
    for name, t in module.state_dict(keep_vars=True).items():
        seen[name] = t
    graph = getattr(module, "graph", None)
    if graph is not None:  # constants of an exported graph (folded int8 weights) are attributes, not buffers
        for node in graph.nodes:
            if node.op == "get_attr":
                obj = module
                for part in str(node.target).split("."):
                    obj = getattr(obj, part)
                if isinstance(obj, torch.Tensor):
                    seen.setdefault(str(node.target), obj)
    for name in sorted(seen):
        h.update(name.encode())
        _tensor_bytes(h, seen[name])
    return h.hexdigest()


# ------------------------------------------------------------------ built-in: static int8 (torchao PT2E)

class _Captured(Exception):
    pass


def _capture(bench, model, module, inputs):
    """(args, kwargs) with which the model's forward calls its module for these inputs."""
    seen = {}

    def hook(mod, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise _Captured

    h = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        bench.calibration_forward(model, inputs)
    except _Captured:
        pass
    finally:
        h.remove()
    if "args" not in seen:
        raise KitError(f"{bench.name}: calibration_forward never called the model's module; the static int8 "
                       f"quantizer exports the module from that call")
    return seen["args"], dict(seen["kwargs"])


def _batch_of(args, kwargs) -> int:
    import torch

    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor) and v.dim():
            return int(v.shape[0])
    raise KitError("static int8: the model's inputs hold no batched tensor")


class PT2EStaticInt8(Quantizer):
    """Static int8, activations calibrated: torchao's PT2E flow (torch.export -> prepare_pt2e with the
    X86InductorQuantizer's default config: int8 weights per output channel, symmetric; uint8 activations
    per tensor from histogram observers -> convert_pt2e). In eager PyTorch the result runs as
    quantize/dequantize pairs around fp32 kernels (the int8 arithmetic simulated exactly); under
    torch.compile (inductor) the pairs lower to int8 kernels."""

    name = "int8-static"
    library = "torchao PT2E (X86InductorQuantizer)"
    options = {"reduce_range": False}   # True: 7-bit activations, for CPUs without VNNI  # noqa: RUF012
    data_types = ("fp32",)

    def _quantizer(self):
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        q = X86InductorQuantizer()
        q.set_global(get_default_x86_inductor_quantization_config(reduce_range=bool(self.options.get("reduce_range", False))))
        return q

    def _prepare(self, module, args, kwargs):
        import inspect

        import torch
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        B = _batch_of(args, kwargs)
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        spec = lambda v: {0: batch} if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == B else None
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        shapes = {}
        for pname, v in bound.arguments.items():
            kind = inspect.signature(module.forward).parameters[pname].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                shapes[pname] = {k: spec(x) for k, x in v.items()}
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                shapes[pname] = tuple(spec(x) for x in v)
            else:
                shapes[pname] = spec(v)
        module.eval()
        # strict (TorchDynamo) export: eval-mode BatchNorm then matches the quantizer's conv-bn patterns
        ep = torch.export.export(module, tuple(args), kwargs, dynamic_shapes=shapes, strict=True)
        return prepare_pt2e(ep.module(), self._quantizer())

    @staticmethod
    def _example(args, kwargs) -> tuple[tuple, dict]:
        """A batch of at least 2 (an example of 1 would pin the batch dimension to 1 in the export)."""
        import torch

        kwargs = dict(sorted(kwargs.items()))  # the artifact stores them by name: one order, one graph
        if _batch_of(args, kwargs) > 1:
            return tuple(args), kwargs
        two = lambda v: torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.dim() else v
        return tuple(two(a) for a in args), {k: two(v) for k, v in kwargs.items()}

    def calibrate(self, bench, model, batches, run):
        import torch

        it = iter(batches)
        try:
            first = next(it)
        except StopIteration:
            raise KitError("static int8: no calibration batch (N_CALIB is 0)") from None
        module = bench.quant_module(model)
        args, kwargs = self._example(*_capture(bench, model, module, first))
        prepared = self._prepare(module, args, kwargs)
        observed = bench.with_quant_module(model, prepared)
        with torch.no_grad():
            bench.calibration_forward(observed, first)
            for b in it:
                bench.calibration_forward(observed, b)
        stats = {k: v for k, v in prepared.state_dict().items() if k.startswith("activation_post_process_")}
        if not stats:
            raise KitError(f"static int8: torchao inserted no observer into {type(module).__name__}")
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                stats[f"example.args.{i}"] = a
        for k, v in kwargs.items():
            if isinstance(v, torch.Tensor):
                stats[f"example.kwargs.{k}"] = v
        stats["example.n_args"] = torch.tensor(len(args))
        return stats

    def build(self, bench, model, stats, run):
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

        n_args = int(stats["example.n_args"])
        args = tuple(stats[f"example.args.{i}"].to(run["device"]) for i in range(n_args))
        kwargs = {k[len("example.kwargs."):]: v.to(run["device"]) for k, v in sorted(stats.items())
                  if k.startswith("example.kwargs.")}
        prepared = self._prepare(bench.quant_module(model), args, kwargs)
        obs = {k: v for k, v in stats.items() if not k.startswith("example.")}
        want = {k for k in prepared.state_dict() if k.startswith("activation_post_process_")}
        if want != set(obs):
            raise KitError(f"static int8: the artifact's observers ({len(obs)}) are not this model's ({len(want)}); "
                           f"it was calibrated on another checkpoint or library version: recalibrate")
        prepared.load_state_dict(obs, strict=False)
        with torch.no_grad():
            return bench.with_quant_module(model, convert_pt2e(prepared))


# ------------------------------------------------------------------ built-in: W8A8 (torchao SmoothQuant)

class SmoothQuantW8A8(Quantizer):
    """LLMs: SmoothQuant (torchao.prototype.smoothquant) on every nn.Linear of the decoder: per-input-
    channel activation abs-max observed over the calibration prompts -> smoothing factors s =
    max|x|^alpha / max|W|^(1-alpha), weights W*s quantized to int8 per output channel, activations x/s
    quantized to int8 per token at run time (Int8DynamicActivationInt8WeightConfig).

    KV cache (`kv_cache=int8`, W8A8-KV8): torchao quantizes no KV cache of Hugging Face modules, so the
    decoder's generation uses transformers' QuantizedCache with the HQQ backend at 8 bits (asymmetric,
    groups of 64 along the channel, rebuilt from the fp values every `kv_residual` new tokens; 1: every
    cached K/V is int8 from the next step on). It needs Hugging Face generate (`--option generator=hf`):
    the kit's own decoder keeps K/V in the compute dtype. `kv_cache=none`: K/V in the compute dtype."""

    name = "w8a8-smoothquant"
    library = "torchao SmoothQuant + Int8DynamicActivationInt8Weight"
    options = {"alpha": 0.5, "skip": "lm_head", "kv_cache": "none", "kv_residual": 1}  # noqa: RUF012
    data_types = ("fp32", "bf16")
    KV_CACHES = ("none", "int8")

    def check(self, bench, options: dict) -> None:
        kv = self.options.get("kv_cache", "none")
        if kv not in self.KV_CACHES:
            raise KitError(f"--quantizer_option kv_cache={kv} for {self.name}: use one of {', '.join(self.KV_CACHES)}")
        if int(self.options.get("kv_residual", 1)) < 1:
            raise KitError(f"--quantizer_option kv_residual={self.options['kv_residual']} for {self.name}: new tokens "
                           f"kept in the compute dtype before the cache is requantized, >= 1")
        if kv == "int8":
            if options.get("generator", "hf") != "hf":
                raise KitError(f"--quantizer_option kv_cache=int8 quantizes Hugging Face generate's KV cache; "
                               f"{bench.name} runs the kit's decoder (generator={options.get('generator')}), which "
                               f"keeps K/V in the compute dtype: add --option generator=hf (scripts/eval_{bench.name}.sh -- "
                               f"--option generator=hf)")
            from transformers.utils import is_hqq_available

            if not is_hqq_available():
                raise KitError("--quantizer_option kv_cache=int8 needs the hqq package (transformers' 8-bit "
                               "QuantizedCache backend): pip install hqq==0.2.8.post1 (envs/gpt-j.yml)")

    def _prepare(self, module):
        import torch
        from torchao.prototype.smoothquant import SmoothQuantConfig
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            quantize_,
        )
        from torchao.quantization.quantize_.common.quantization_step import (
            QuantizationStep,
        )

        skip = {s for s in str(self.options.get("skip", "")).split(",") if s}
        cfg = SmoothQuantConfig(base_config=Int8DynamicActivationInt8WeightConfig(), step=QuantizationStep.PREPARE,
                                alpha=float(self.options.get("alpha", 0.5)), use_running_absmax=True)
        quantize_(module, cfg, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn.split(".")[-1] not in skip)
        return cfg

    @staticmethod
    def _observed(module):
        from torchao.prototype.smoothquant.core import SmoothQuantObservedLinear

        return {n: m for n, m in module.named_modules() if isinstance(m, SmoothQuantObservedLinear)}

    STATE = ("x_abs_max", "_first_pass_min", "_first_pass_max")

    def calibrate(self, bench, model, batches, run):
        import torch

        module = bench.quant_module(model)
        self._prepare(module)
        with torch.no_grad():
            for b in batches:
                bench.calibration_forward(model, b)
        stats = {}
        for name, m in self._observed(module).items():
            for attr in self.STATE:
                v = getattr(m.obs, attr, None)
                if v is None:
                    raise KitError(f"w8a8-smoothquant: linear {name} saw no calibration input")
                stats[f"{name}.{attr}"] = v
            stats[f"{name}.calibration_count"] = torch.tensor(int(m.obs.calibration_count))
        return stats

    def build(self, bench, model, stats, run):
        import torch
        from torchao.prototype.smoothquant.core import SmoothQuantObservedLinear
        from torchao.quantization import quantize_
        from torchao.quantization.quantize_.common.quantization_step import (
            QuantizationStep,
        )

        module = bench.quant_module(model)
        cfg = self._prepare(module)
        observed = self._observed(module)
        if {f"{n}.x_abs_max" for n in observed} != {k for k in stats if k.endswith(".x_abs_max")}:
            raise KitError("w8a8-smoothquant: the artifact's linears are not this model's; it was calibrated on "
                           "another checkpoint or with another `skip`: recalibrate")
        for name, m in observed.items():
            dev = m.weight.device
            for attr in self.STATE:
                setattr(m.obs, attr, stats[f"{name}.{attr}"].to("cpu"))
            m.obs.calibration_count = int(stats[f"{name}.calibration_count"])
            del dev
        cfg.step = QuantizationStep.CONVERT
        with torch.no_grad():
            quantize_(module, cfg, filter_fn=lambda m, fqn: isinstance(m, SmoothQuantObservedLinear))
        if self.options.get("kv_cache", "none") == "int8":  # HF generate builds this cache for every call
            module.generation_config.cache_implementation = "quantized"
            module.generation_config.cache_config = {"backend": "hqq", "nbits": 8,
                                                     "residual_length": int(self.options.get("kv_residual", 1))}
        return bench.with_quant_module(model, module)


__all__ = ["Quantizer", "apply", "model_digest", "names", "plan_part", "prepare", "resolve_class"]
