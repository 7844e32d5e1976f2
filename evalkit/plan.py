"""A run request, resolved once: CLI/env input -> a validated, frozen Plan.

`resolve` is the only place where defaults are filled (paths, n_count, n_partitions,
batch size, model options, accuracy target) and where options are checked against the
dataset, the model's declared options and the machine. Everything a later step needs
(the accuracy target for check, user.conf for LoadGen) is checked here, before any
model loads. The launcher, the torchrun path and each worker consume the Plan; none of
them fills or validates anything again.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import backends, registry
from . import manifest as mf
from .benchmark import Benchmark, Dataset
from .errors import KitError
from .partition import partition_range, work_bounds
from .util import ROOT, config_hash

SCENARIOS = ("Offline", "SingleStream", "MultiStream", "Server")
MODES = {"accuracy": "AccuracyOnly", "performance": "PerformanceOnly"}
DATA_SOURCES = ("real", "synthetic")
_SS, _MS, _SV, _OFF = SCENARIOS[1], SCENARIOS[2], SCENARIOS[3], SCENARIOS[0]
# The scenarios MLPerf defines for a model: the union, over the submission checker's datacenter and edge
# "required-scenarios" lists (and the optional ones) of v4.0 to v6.1 (facts sheet §2.2), by checker name.
# A model whose checker names are not listed here may run any scenario.
MLPERF_SCENARIOS: dict[str, tuple[str, ...]] = {
    "resnet": (_OFF, _SS, _MS, _SV), "retinanet": (_OFF, _SS, _MS, _SV),
    "bert-99": (_OFF, _SS, _SV), "bert-99.9": (_OFF, _SS, _SV),
    "dlrm-v2-99": (_OFF, _SV), "dlrm-v2-99.9": (_OFF, _SV),
    "3d-unet-99": (_OFF, _SS), "3d-unet-99.9": (_OFF, _SS),
    "gptj-99": (_OFF, _SS, _SV), "gptj-99.9": (_OFF, _SS, _SV),
    "llama2-70b-99": (_OFF, _SV), "llama2-70b-99.9": (_OFF, _SV),
    "mixtral-8x7b": (_OFF, _SV), "stable-diffusion-xl": (_OFF, _SS, _SV), "rnnt": (_OFF, _SS, _SV),
    # v5.1-v6.1 (HEAD tools/submission/submission_checker/constants.py; Interactive is not a LoadGen scenario here)
    "llama3.1-8b": (_OFF, _SV), "llama3.1-8b-edge": (_OFF, _SS), "whisper": (_OFF,),
    "deepseek-r1": (_OFF, _SS, _SV),  # SingleStream: v5.1 "required-scenarios-datacenter-edge"
    "gpt-oss-120b": (_OFF, _SV),  # v6.1: Offline required, Server (and Interactive) optional
}


def model_scenarios(bench: Benchmark) -> tuple[str, ...]:
    """The scenarios MLPerf defines for the model (every one of SCENARIOS when the table lacks it)."""
    listed = [MLPERF_SCENARIOS[c] for c in bench.checker_names.values() if c in MLPERF_SCENARIOS]
    return tuple(x for x in SCENARIOS if not listed or any(x in ls for ls in listed))


@dataclass(frozen=True)
class RunSpec:
    """What the user asked for. Unset fields (None / 0) are filled by resolve()."""
    model: str
    dataset: Path | None = None
    model_path: Path | None = None
    log_path: Path | None = None
    n_count: int | None = None
    n_partitions: int = 0                  # 0: n_devices (or torchrun's world size)
    partition_offset: int = 0
    n_devices: int = 1                     # devices this launch uses on this node
    devices_per_partition: int = 1         # K: each worker owns K devices, the model is split over them
    scenario: str = "Offline"
    mode: str = "accuracy"
    data_type: str = "fp32"
    device: str = "cpu"
    batch_size: int = 0                    # 0: the model's default
    threads: int = 0
    user_conf: Path | None = None
    perf: dict = field(default_factory=dict)      # target_qps, target_latency, min_duration, min_query_count
    options: dict = field(default_factory=dict)   # the model's options (Benchmark.options), resolved
    backend: str = "pytorch"                      # how the model runs (evalkit/backends)
    backend_options: dict = field(default_factory=dict)  # the backend's own (server_url, ...); not hashed
    data: str = "real"                     # default dataset/model paths: real (DVC) or synthetic
    accuracy_target: str | None = None     # None: the model's default
    # quantized runs (evalkit/quantize.py): QUANTIZER, CALIBRATE, N_CALIB, --quantizer_option
    quantizer: str = ""                    # "": the model's built-in one when calibrate is true
    calibrate: bool | None = None          # None: true when a quantizer is named; false: the store's artifact
    n_calib: int = 0                       # 0: the MLPerf list's size (synthetic sets: 8)
    quantizer_options: dict = field(default_factory=dict)
    calib_dataset: Path | None = None      # the calibration split (default data/calibration/<model>)
    allow_calibration_overlap: bool = False  # calibration samples among the evaluated ones (ImageNet, SQuAD lists)
    quant_artifact: str = ""               # sha256 of the calibration artifact in <log_path>/calibration (set by the kit)
    probe: int = 0                         # >0: score only this many samples spread over n_count (evalkit/probe.py)
    probe_of: int = 0                      # the n_count the probe is spread over (filled by resolve)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()})

    @staticmethod
    def from_json(text: str) -> "RunSpec":
        d = json.loads(text)
        for k in ("dataset", "model_path", "log_path", "user_conf", "calib_dataset"):
            if d.get(k) is not None:
                d[k] = Path(d[k])
        return RunSpec(**d)


@dataclass(frozen=True)
class Plan:
    spec: RunSpec           # every default filled
    bench: Benchmark
    dataset: Dataset
    config: dict            # what must be equal across partitions (hashed)
    config_hash: str
    bounds: tuple[int, ...] = ()  # partition p is [bounds[p], bounds[p+1])
    quant: dict | None = None     # the quantized run's request (evalkit/quantize.py plan_part), None: not quantized

    def range(self, p: int) -> tuple[int, int]:
        return self.bounds[p], self.bounds[p + 1]

    @property
    def partitions(self) -> list[int]:
        """The partitions this launch runs on this node: one per K devices."""
        return [self.spec.partition_offset + i for i in range(self.spec.n_devices // self.spec.devices_per_partition)]


def resolve_options(bench: Benchmark, given: dict) -> dict:
    """The model's options with the user's values; KitError for a key the model does not declare
    or a value of the wrong type."""
    return declared_options(bench.options, given, "--option", bench.name)


def declared_options(declared: dict, given: dict, flag: str, owner: str) -> dict:
    """`declared` (name -> default) with the user's values (`flag` K=V, given to `owner`); KitError for
    a key not declared or a value whose type is not the default's (a bool from true/false/1/0/yes/no,
    an integral number for an int)."""
    out = dict(declared)
    for key, value in given.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise KitError(f"{flag} {key} is not an option of {owner} (its options: {known})")
        default = declared[key]
        if isinstance(default, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.lower() in ("true", "1", "yes")
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(default, int) and not isinstance(value, int):
                ok = float(value).is_integer()
                value = int(value)
        else:
            ok = default is None or isinstance(value, type(default))
        if not ok:
            raise KitError(f"{flag} {key}={value!r} for {owner}: expected a {type(default).__name__} "
                           f"like the default {default!r}")
        out[key] = value
    return out


def accelerator_count(device: str) -> int | None:
    """Number of devices of that kind, or None for CPU (workers are just processes)."""
    if device.split(":")[0] == "cuda":
        import torch
        return torch.cuda.device_count()
    return None


def default_paths(model: str, data: str) -> tuple[Path, Path]:
    if data == "synthetic":
        base = ROOT / "data" / "synthetic" / model
        return base / "dataset", base / "model"
    return ROOT / "data" / "dataset" / model, ROOT / "data" / "models" / model


def resolve(req: RunSpec, world_size: int | None = None, now: float | None = None) -> Plan:
    """Validate `req` and fill its defaults. world_size: torchrun's (every rank runs one partition)."""
    bench = registry.get(req.model)
    s = req
    if s.scenario not in SCENARIOS:
        raise KitError(f"--scenario {s.scenario} is not one of {', '.join(SCENARIOS)}")
    if s.scenario not in model_scenarios(bench):
        raise KitError(f"--scenario {s.scenario} (SCENARIO) is not an MLPerf scenario of {bench.name}: the submission "
                       f"checker defines {', '.join(model_scenarios(bench))} for it")
    if s.mode not in MODES:
        raise KitError(f"--mode {s.mode} is not one of {', '.join(MODES)}")
    if s.data not in DATA_SOURCES:
        raise KitError(f"--data {s.data} is not one of {', '.join(DATA_SOURCES)}")
    if s.data_type not in bench.data_types:
        raise KitError(f"--data_type {s.data_type} is not supported by {bench.name} ({', '.join(bench.data_types)})")
    target = s.accuracy_target or bench.default_accuracy_target
    if target not in bench.checker_names:
        raise KitError(f"--accuracy_target {target} is not defined for {bench.name} "
                       f"(choose {', '.join(bench.checker_names)})")
    options = resolve_options(bench, s.options)
    backends.resolve(s.backend)  # an unknown or broken backend fails here, before any work
    if s.user_conf is not None and not Path(s.user_conf).is_file():
        raise KitError(f"--user_conf {s.user_conf} does not exist")
    if s.n_devices < 1:
        raise KitError(f"--n_devices {s.n_devices} must be at least 1")
    if s.batch_size < 0:
        raise KitError(f"--batch_size {s.batch_size} must be positive")
    K = s.devices_per_partition
    if K < 1 or s.n_devices % K:
        raise KitError(f"--devices_per_partition {K} must divide --n_devices {s.n_devices} (DEVICES_PER_PARTITION, "
                       f"N_DEVICES): each partition owns K of this node's devices")
    if K > 1 and not bench.multi_device:
        raise KitError(f"--devices_per_partition {K}: {bench.name} runs on one device per partition "
                       f"(it fits one device); use 1")
    listed = s.device.split(",")  # a worker's own devices, as the launcher hands them out
    if len(listed) > 1 and len(listed) != K:
        raise KitError(f"--device {s.device} lists {len(listed)} devices, --devices_per_partition is {K}")
    n_acc = accelerator_count(listed[0])
    if n_acc == 0:
        raise KitError(f"DEVICE={s.device} (--device) but this machine has no {s.device.split(':')[0]} device "
                       f"(torch sees none); use DEVICE=cpu, or a torch build for your accelerator")
    if n_acc is not None and s.n_devices > n_acc and ":" not in s.device:
        raise KitError(f"--n_devices {s.n_devices} but this machine has {n_acc} {s.device} device(s)")
    ds_default, mp_default = default_paths(bench.name, s.data)
    dataset_path, model_path = Path(s.dataset or ds_default), Path(s.model_path or mp_default)
    if world_size is not None and s.n_devices != K:
        raise KitError(f"--n_devices {s.n_devices} does not apply under torchrun: every rank runs one "
                       f"partition on --devices_per_partition devices; set torchrun's --nproc-per-node instead")
    dataset = bench.open_dataset(dataset_path, model_path, options)
    n_count = dataset.size if s.n_count is None else s.n_count
    if not 1 <= n_count <= dataset.size:
        listed = f", listed in {dataset.index_file}" if dataset.index_file else ""
        raise KitError(f"--n_count {n_count} is outside [1, {dataset.size}] "
                       f"(dataset {dataset_path} has {dataset.size} samples{listed})")
    probe_of = 0
    if s.probe:  # the run is over K samples spread over the n_count a full run scores (evalkit/probe.py)
        from .probe import ProbeView, probe_indices
        probe_of = s.probe_of or n_count
        if not 1 <= probe_of <= dataset.size:
            raise KitError(f"--n_count {probe_of} is outside [1, {dataset.size}]")
        try:
            dataset = ProbeView(dataset, probe_indices(probe_of, s.probe, getattr(dataset, "groups", lambda: None)()))
        except KitError as e:
            raise KitError(f"--probe {e}") from None
        n_count = dataset.size
    launched = world_size if world_size is not None else s.n_devices // K
    n_partitions = s.n_partitions or launched
    if n_partitions > n_count:
        raise KitError(f"--n_partitions {n_partitions} is more than --n_count {n_count}")
    if s.partition_offset < 0 or s.partition_offset + launched > n_partitions:
        what = "torchrun world size" if world_size is not None else "partitions launched (--n_devices / K)"
        raise KitError(f"--partition_offset {s.partition_offset} + {what} {launched} "
                       f"exceeds --n_partitions {n_partitions}")
    backend_cls = backends.resolve(s.backend)
    for p in range(s.partition_offset, s.partition_offset + launched):  # SERVER_URLS etc., before any work
        backend_cls.for_partition(s.backend_options, p)
    if not model_path.exists():
        raise KitError(f"model checkpoint {model_path} does not exist; build the env "
                       f"(scripts/build_{bench.name}_env.sh) or pass --model_path")
    # mode in the dir name: accuracy and performance runs of one configuration sit side by side
    log_path = Path(s.log_path) if s.log_path else (
        ROOT / "logs" / bench.name / s.scenario / f"{s.mode}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}")
    spec = dataclasses.replace(
        s, dataset=dataset_path, model_path=model_path, log_path=log_path, n_count=n_count,
        n_partitions=n_partitions, options=options, probe_of=probe_of,
        batch_size=s.batch_size or (bench.cuda_batch_size if listed[0].startswith("cuda") and bench.cuda_batch_size
                                    else bench.default_batch_size),
        accuracy_target=target)
    config = mf.run_config(bench, spec)
    from . import quantize  # a quantized run: quantizer, options, N_CALIB and split checked here, before any model
    quant = quantize.plan_part(bench, spec, dataset_path, model_path)
    if quant is not None:
        config = dict(config, quantization=quantize.hashed(quant))
    if s.probe:
        config = dict(config, probe={"n": s.probe, "of": probe_of, "indices": dataset.indices})
    work = bench.sample_work(dataset_path)
    if work is not None and s.probe:
        work = [work[i] for i in dataset.indices]
    if work is not None:  # cut by work; the cuts are part of the run's identity
        bounds = work_bounds(n_count, n_partitions, work)
        config = dict(config, partition_by="work", partition_bounds=bounds)
    else:
        bounds = [partition_range(n_count, n_partitions, p)[0] for p in range(n_partitions)] + [n_count]
    return Plan(spec, bench, dataset, config, config_hash(config), tuple(bounds), quant)


__all__ = ["RunSpec", "Plan", "resolve", "resolve_options", "SCENARIOS", "MODES"]
