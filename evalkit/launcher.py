"""Validate a run request and run its partitions: in-process for one device,
one worker process per device otherwise. Every worker's exit code is checked;
when the run dir then holds all partitions, gather and check follow.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import backends
from . import manifest as mf
from . import registry
from .errors import KitError
from . import status as run_status
from .progress import mark_failed
from .runner import MODES, SCENARIOS, RunSpec, run_partition


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def accelerator_count(device: str) -> int | None:
    """Number of devices of that kind, or None for CPU (workers are just processes)."""
    if device.split(":")[0] == "cuda":
        import torch
        return torch.cuda.device_count()
    return None


def prepare(spec: RunSpec):
    """Check every option against the dataset and machine; fill defaults. Returns (bench, dataset, config)."""
    bench = registry.get(spec.model)
    if spec.scenario not in SCENARIOS:
        raise KitError(f"--scenario {spec.scenario} is not one of {', '.join(SCENARIOS)}")
    if spec.mode not in MODES:
        raise KitError(f"--mode {spec.mode} is not one of {', '.join(MODES)}")
    if spec.data_type not in bench.data_types:
        raise KitError(f"--data_type {spec.data_type} is not supported by {bench.name} ({', '.join(bench.data_types)})")
    backends.resolve(spec.backend)  # an unknown or broken backend fails here, before any work
    dataset = bench.open_dataset(Path(spec.dataset), Path(spec.model_path))
    if spec.n_count is None:
        spec.n_count = dataset.size
    if not 1 <= spec.n_count <= dataset.size:
        raise KitError(f"--n_count {spec.n_count} is outside [1, {dataset.size}] "
                       f"(dataset {spec.dataset} has {dataset.size} samples)")
    if spec.n_devices < 1:
        raise KitError(f"--n_devices {spec.n_devices} must be at least 1")
    n_acc = accelerator_count(spec.device)
    if n_acc is not None and spec.n_devices > n_acc and ":" not in spec.device:
        raise KitError(f"--n_devices {spec.n_devices} but this machine has {n_acc} {spec.device} device(s)")
    if not spec.n_partitions:
        spec.n_partitions = spec.n_devices
    if spec.n_partitions > spec.n_count:
        raise KitError(f"--n_partitions {spec.n_partitions} is more than --n_count {spec.n_count}")
    if spec.partition_offset < 0 or spec.partition_offset + spec.n_devices > spec.n_partitions:
        raise KitError(f"--partition_offset {spec.partition_offset} + --n_devices {spec.n_devices} "
                       f"exceeds --n_partitions {spec.n_partitions}")
    if spec.batch_size < 0:
        raise KitError(f"--batch_size {spec.batch_size} must be positive")
    if not Path(spec.model_path).exists():
        raise KitError(f"model checkpoint {spec.model_path} does not exist; build the env "
                       f"(scripts/build_{bench.name}_env.sh) or pass --model_path")
    config = mf.run_config(bench, spec)
    return bench, dataset, config


def worker_devices(spec: RunSpec) -> list[tuple[str, int]]:
    """(device, threads) for worker i: cuda:i, or CPU with the cores split between workers."""
    kind = spec.device.split(":")[0]
    if kind == "cpu":
        cores = cpu_cores()
        if spec.n_devices > cores:
            print(f"warning: {spec.n_devices} CPU workers on {cores} cores; each gets 1 thread",
                  file=sys.stderr)
        threads = spec.threads or max(1, cores // spec.n_devices)
        return [("cpu", threads)] * spec.n_devices
    if spec.n_devices == 1:
        return [(spec.device, spec.threads)]
    return [(f"{kind}:{i}", spec.threads) for i in range(spec.n_devices)]


def _spec_json(spec: RunSpec) -> str:
    d = dataclasses.asdict(spec)
    return json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()})


def spec_from_json(text: str) -> RunSpec:
    d = json.loads(text)
    for k in ("dataset", "model_path", "log_path", "user_conf"):
        if d.get(k) is not None:
            d[k] = Path(d[k])
    return RunSpec(**d)


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    errs = [x for x in lines if x.startswith("error:")]
    return (errs or lines or [""])[-1].strip()


def _exit_text(rc: int) -> str:
    if rc < 0:
        import signal
        return f"killed by {signal.Signals(-rc).name}"
    return f"exit {rc}"


def resume_command(spec: RunSpec) -> str:
    """The user's own command line, pinned to this run dir, so that rerunning it resumes."""
    import shlex
    script = os.environ.get("EVALKIT_RESUME_CMD")  # set by scripts/eval_<model>.sh
    if script:
        return script if "LOG_PATH=" in script else f"LOG_PATH={shlex.quote(str(spec.log_path))} {script}"
    argv = [sys.executable, "-m", "evalkit", *sys.argv[1:]]
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        try:  # under torchrun the command to rerun is the agent's, our parent's
            parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            parent = []
        if parent:
            argv = parent[1:] if Path(parent[1] if len(parent) > 1 else "").name == "torchrun" else parent
    if not any(a == "--log_path" or a.startswith("--log_path=") for a in argv):
        argv += ["--log_path", str(spec.log_path)]
    return shlex.join(argv)


def run_local(spec: RunSpec, isolate: bool = False) -> list[int]:
    """Run partitions offset..offset+n_devices-1. Returns them; raises KitError naming failures.

    isolate: a single partition also runs in a worker process, so its death is reported, not shared.
    """
    bench, dataset, config = prepare(spec)
    Path(spec.log_path).mkdir(parents=True, exist_ok=True)
    parts = [spec.partition_offset + i for i in range(spec.n_devices)]
    if not isolate:  # under torchrun rank 0 records the torchrun command instead
        run_status.record_launch(spec.log_path, parts, spec.n_partitions, resume_command(spec))
    devices = worker_devices(spec)
    if spec.n_devices == 1 and not isolate:
        spec.device, spec.threads = devices[0]
        try:
            run_partition(bench, spec, parts[0], config, dataset)
        except KitError as e:  # e.g. refused before its progress file existed: status shows why
            mark_failed(Path(spec.log_path) / str(parts[0]), str(e))
            raise
        return parts
    procs = {}
    try:
        for p, (dev, threads) in zip(parts, devices):
            wspec = dataclasses.replace(spec, device=dev, threads=threads, n_devices=1, partition_offset=p)
            part_dir = Path(spec.log_path) / str(p)
            part_dir.mkdir(parents=True, exist_ok=True)
            log = open(part_dir / "worker.log", "a")
            cmd = [sys.executable, "-m", "evalkit", "_worker", _spec_json(wspec)]
            procs[p] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
        tty = sys.stderr.isatty()
        last_decile = -1
        while any(pr.poll() is None for pr, _ in procs.values()):
            time.sleep(0.5)
            st = run_status.collect([Path(spec.log_path)], only=parts)  # what `evalkit status` reads
            done, total = st.done, st.total
            if total:
                text = run_status.progress_line(st, f"{len(parts)} partitions")
                if tty:
                    sys.stderr.write("\r" + text)
                elif int(10 * done / total) != last_decile:
                    last_decile = int(10 * done / total)
                    sys.stderr.write(text + "\n")
        if tty:
            sys.stderr.write("\n")
    finally:
        for p, (pr, log) in procs.items():
            if pr.poll() is None:
                pr.terminate()
                pr.wait()
                mark_failed(Path(spec.log_path) / str(p), "stopped by the launcher")
            log.close()
    failed = [(p, pr.returncode) for p, (pr, _) in procs.items() if pr.returncode != 0]
    for p, rc in failed:  # a worker killed by a signal could not write "failed" itself
        mark_failed(Path(spec.log_path) / str(p), _exit_text(rc))
    for p, (pr, _) in procs.items():
        if pr.returncode == 0:
            print(f"partition {p}: {_last_line(Path(spec.log_path) / str(p) / 'worker.log')}", file=sys.stderr)
    if failed:
        detail = "; ".join(f"partition {p} ({_exit_text(rc)}): {_last_line(Path(spec.log_path) / str(p) / 'worker.log')} "
                           f"[log {Path(spec.log_path) / str(p) / 'worker.log'}]" for p, rc in failed)
        # Under torchrun (isolate) rank 0 prints one resume command for all ranks.
        hint = "" if isolate else f"; resume the failed ones with: {resume_command(spec)}"
        raise KitError(f"{len(failed)} of {len(parts)} partitions failed: {detail}. "
                       f"Finished partitions are kept{hint}")
    return parts


def complete_partitions(log_path: Path) -> dict[int, dict]:
    out = {}
    if not Path(log_path).is_dir():
        return out
    for d in Path(log_path).iterdir():
        if d.is_dir() and d.name.isdigit():
            m = mf.read_manifest(d)
            if m is not None:
                out[int(d.name)] = m
    return out
