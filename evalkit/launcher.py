"""Run a resolved Plan's partitions: in-process for one device, one worker process per
device otherwise. Every worker's exit code is checked; when the run dir then holds all
partitions, gather and check follow (finish_run, shared with the torchrun path).
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from . import owner, rundir
from . import status as run_status
from .errors import KitError, PartitionOwned, Preempted
from .plan import Plan, RunSpec, resolve
from .progress import mark_failed as _mark_failed
from .runner import GRACE_S, run_partition


def mark_failed(part_dir: Path, reason: str) -> None:
    """Say in progress.json why a partition failed, where the disk still lets us: on a full or
    read-only one the error already names the path, and status tells a dead worker by its pid."""
    try:
        _mark_failed(part_dir, reason)
    except OSError:
        pass


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def worker_devices(spec: RunSpec, first: int = 0) -> list[tuple[str, int]]:
    """(device, threads) for worker i: cuda:i (K > 1: "cuda:iK,...,cuda:iK+K-1"), or CPU with the cores
    split between workers. first: the node's first device index (torchrun's local rank * K)."""
    kind = spec.device.split(":")[0]
    K = spec.devices_per_partition
    workers = spec.n_devices // K
    if kind == "cpu":
        cores = cpu_cores()
        if workers > cores:
            print(f"warning: {workers} CPU workers on {cores} cores; each gets 1 thread", file=sys.stderr)
        threads = spec.threads or max(1, cores // workers)
        return [(",".join(["cpu"] * K), threads)] * workers
    if spec.n_devices == 1 and first == 0:
        return [(spec.device, spec.threads)]
    return [(",".join(f"{kind}:{first + i * K + j}" for j in range(K)), spec.threads) for i in range(workers)]


ATTEMPT = "--- evalkit: attempt started "  # worker.log: each launch appends one attempt after this line


def _last_line(path: Path) -> str:
    """The last attempt's error line (else its last line): a resumed partition's log also holds the
    earlier attempts (worker.log is appended to), whose errors no longer hold."""
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    starts = [i for i, x in enumerate(lines) if x.startswith(ATTEMPT)]
    lines = lines[starts[-1] + 1:] if starts else lines
    errs = [x for x in lines if x.startswith("error:")]
    return (errs or lines or [""])[-1].strip()


def _exit_text(rc: int) -> str:
    if rc < 0:
        import signal
        return f"killed by {signal.Signals(-rc).name}"
    return f"exit {rc}"


def resume_command(spec: RunSpec) -> str:
    """The user's own command line, pinned to this run dir, so that rerunning it resumes; it starts
    with `cd <where it was launched> &&`, so it works pasted from anywhere."""
    cd = f"cd {shlex.quote(os.getcwd())} && "
    script = os.environ.get("EVALKIT_RESUME_CMD")  # set by scripts/eval_<model>.sh
    if script:
        return cd + (script if "LOG_PATH=" in script else f"LOG_PATH={shlex.quote(str(spec.log_path))} {script}")
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
    env = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if os.environ.get("PYTHONPATH") else ""
    return cd + env + shlex.join(argv)


class _Stop(Exception):
    """SIGTERM to the launcher: handled like Ctrl-C (KeyboardInterrupt)."""


def _raise_stop(signum, frame):
    raise _Stop(signal.Signals(signum).name)


FINISHED = ("accuracy.json", "performance.json", "check_error.json")  # a run whose check (or perf) ran


def unfinished_run(plan: Plan) -> tuple[Path, rundir.RunState] | None:
    """The newest run dir of this very config (config hash) under logs/<model>/<scenario>/ that a launch
    left unfinished (Ctrl-C, preemption, a failed worker) and nobody runs now, with its state; None when
    there is none. Runs given a LOG_PATH elsewhere are not looked for."""
    # a quantized run's hash names its artifact, which a resumed launch finds in the run dir
    from .quantize import config_hash_in

    spec = plan.spec
    base = Path(spec.log_path).parent  # the default run dirs sit side by side: logs/<model>/<scenario>/
    found = []
    for d in base.glob(f"{spec.mode}-*") if base.is_dir() else ():
        try:
            if not d.is_dir() or any((d / f).exists() for f in FINISHED) or \
                    rundir.read_run_info(d).get("config_hash") != config_hash_in(plan, d):
                continue
            st = rundir.collect([d], only=plan.partitions)
        except KitError:  # a corrupt file: not a run to resume silently
            continue
        if any(x.state in ("running", "stalled") for x in st.parts.values()) or \
                not any(x.state in ("preempted", "failed", "missing") for x in st.parts.values()):
            continue  # another launch runs it (or hangs in it): never two writers; or ours are all done
        found.append((d.stat().st_mtime, d, st))
    if not found:
        return None
    _, d, st = max(found, key=lambda t: t[0])
    return d, st


def adopt_unfinished(plan: Plan) -> Plan:
    """`evalkit run` without --log_path (LOG_PATH): resume the unfinished run of the same config instead
    of starting over in a new timestamped dir (its response caches would be ignored), and say so."""
    got = unfinished_run(plan)
    if got is None:
        return plan
    d, st = got
    kept = ", ".join(f"p{x.p} {x.state} {x.done}/{x.total}" for x in st.parts.values())
    print(f"resuming the unfinished run {d} of the same config ({kept}); for a new run give it its own "
          f"LOG_PATH (--log_path)", file=sys.stderr)
    return dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, log_path=d))


def preflight(plan: Plan) -> None:
    """Before this launch writes anything into the run dir: the dir holds no other run's
    partitions, and no partition of this launch is owned by a live process."""
    spec = plan.spec
    rundir.check_same_run(Path(spec.log_path), plan.config, plan.config_hash)
    owner.check_free([Path(spec.log_path) / str(p) for p in plan.partitions])


def run_local(plan: Plan, isolate: bool = False) -> list[int]:
    """Run the plan's partitions (offset..offset+n_devices-1). Returns them; raises KitError naming failures.

    isolate: a single partition also runs in a worker process, so its death is reported, not shared.
    """
    spec = plan.spec
    parts = plan.partitions
    preflight(plan)
    created = not isolate and not Path(spec.log_path).exists()  # a refusal removes what this launch made
    Path(spec.log_path).mkdir(parents=True, exist_ok=True)
    if not isolate:  # under torchrun rank 0 records the torchrun command instead
        rundir.record_launch(spec.log_path, parts, spec.n_partitions, resume_command(spec), plan.config_hash,
                             list(plan.bounds))
    devices = worker_devices(spec)
    if len(parts) == 1 and not isolate:
        dev, threads = devices[0]
        plan = dataclasses.replace(plan, spec=dataclasses.replace(spec, device=dev, threads=threads))
        try:
            run_partition(plan, parts[0], resume=resume_command(spec))
        except PartitionOwned:
            raise  # another launch's partition: its progress is not ours to mark
        except Preempted:
            raise
        except KitError as e:  # e.g. refused before its progress file existed: status shows why
            mark_failed(Path(spec.log_path) / str(parts[0]), str(e))
            if created:
                discard_refused(Path(spec.log_path), parts)
            raise
        return parts
    procs = {}
    stopped = None
    old_term = signal.signal(signal.SIGTERM, _raise_stop) if _main_thread() else None
    try:
        for p, (dev, threads) in zip(parts, devices):
            wspec = dataclasses.replace(spec, device=dev, threads=threads, n_devices=spec.devices_per_partition,
                                        partition_offset=p)
            part_dir = Path(spec.log_path) / str(p)
            part_dir.mkdir(parents=True, exist_ok=True)
            log = open(part_dir / rundir.WORKER_LOG, "a")
            log.write(f"{ATTEMPT}{time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
            log.flush()
            cmd = [sys.executable, "-m", "evalkit", "_worker", wspec.to_json()]
            procs[p] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
        _watch(spec, parts, procs)
    except (KeyboardInterrupt, _Stop) as e:
        stopped = str(e) if isinstance(e, _Stop) else "SIGINT"
    finally:
        for p, (pr, log) in procs.items():
            if pr.poll() is None:
                pr.terminate()  # SIGTERM: the worker caches its batch in flight and exits 75
                try:
                    pr.wait(GRACE_S + 10)
                except subprocess.TimeoutExpired:
                    pr.kill()
                    pr.wait()
                if stopped is None:
                    mark_failed(Path(spec.log_path) / str(p), "stopped by the launcher")
            log.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if stopped is not None:
        st = rundir.collect([Path(spec.log_path)], only=parts)
        kept = ", ".join(f"p{x.p} {x.state} {x.done}/{x.total}" for x in st.parts.values())
        raise Preempted(f"stopped by {stopped}: {kept} (answered samples are kept in each partition's "
                        f"response cache); resume with: {resume_command(spec)}")
    owned = [p for p, (pr, _) in procs.items() if pr.returncode == PartitionOwned.exit_code]
    refusals = {p: _last_line(Path(spec.log_path) / str(p) / rundir.WORKER_LOG) for p, (pr, _) in procs.items()
                if pr.returncode not in (0, PartitionOwned.exit_code)}
    failed = [(p, pr.returncode) for p, (pr, _) in procs.items() if pr.returncode not in (0, PartitionOwned.exit_code)]
    for p, rc in failed:  # a worker killed by a signal could not write "failed" itself
        mark_failed(Path(spec.log_path) / str(p), _exit_text(rc))
    for p, (pr, _) in procs.items():
        if pr.returncode == 0:
            print(f"partition {p}: {_last_line(Path(spec.log_path) / str(p) / 'worker.log')}", file=sys.stderr)
    if owned:
        raise PartitionOwned("; ".join(_last_line(Path(spec.log_path) / str(p) / "worker.log").removeprefix("error: ")
                                       for p in owned))
    if failed and all(rc == Preempted.exit_code for _, rc in failed):
        # the workers were stopped (Ctrl-C reaching the whole process group, a scheduler's SIGTERM to each
        # of them) while this launcher was not: a preemption to resume, not a failure
        st = rundir.collect([Path(spec.log_path)], only=parts)
        kept = ", ".join(f"p{x.p} {x.state} {x.done}/{x.total}" for x in st.parts.values())
        raise Preempted(f"workers stopped by a signal: {kept} (answered samples are kept in each partition's "
                        f"response cache); resume with: {resume_command(spec)}")
    if failed and created and all(rc == 2 for _, rc in failed) and discard_refused(Path(spec.log_path), parts):
        # every worker refused (one error line each) before answering a sample: nothing to resume
        by_why: dict[str, list[int]] = {}
        for p, why in refusals.items():
            by_why.setdefault(why.removeprefix("error: "), []).append(p)
        raise KitError("; ".join(f"partition{'s' if len(ps) > 1 else ''} {', '.join(map(str, ps))}: {why}"
                                 for why, ps in by_why.items()))
    if failed:
        detail = "; ".join(f"partition {p} ({_exit_text(rc)}): {_last_line(Path(spec.log_path) / str(p) / 'worker.log')} "
                           f"[log {Path(spec.log_path) / str(p) / 'worker.log'}]" for p, rc in failed)
        # Under torchrun (isolate) rank 0 prints one resume command for all ranks.
        hint = "" if isolate else f"; resume the failed ones with: {resume_command(spec)}"
        raise KitError(f"{len(failed)} of {len(parts)} partitions failed: {detail}. "
                       f"Finished partitions are kept{hint}")
    return parts


def discard_refused(run_dir: Path, parts: list[int]) -> bool:
    """A run dir this launch created, whose partitions all stopped before LoadGen started (a refusal: a
    backend that cannot serve the model, a sample file missing): remove it, so that status and the report
    do not list a failed run whose resume only repeats the error. Returns whether it went; a dir holding
    anything else (another launch's partition, a traceback, a partition LoadGen ran) stays."""
    try:
        return _discard_refused(run_dir, parts)
    except (KitError, OSError):  # a corrupt or unreadable file in it: the refusal's own error is what counts
        return False


def _discard_refused(run_dir: Path, parts: list[int]) -> bool:
    for p in parts:
        d = run_dir / str(p)
        if rundir.read_manifest(d) is not None:
            return False
        log = d / rundir.WORKER_LOG
        crashed = log.exists() and "Traceback" in log.read_text(errors="replace")  # a bug: its log stays
        pr = rundir.read_progress(d) or {}
        if crashed or int(pr.get("done", 0)) > 0 or pr.get("issued") is not None:
            return False  # LoadGen had started (e.g. a sample file failed to load): the failure stays on record
    ours = {str(p) for p in parts} | {rundir.RUN_INFO}
    if any(x.name not in ours for x in run_dir.iterdir()) or \
            any(set(x["partitions"]) - set(parts) for x in rundir.read_run_info(run_dir).get("launches", {}).values()):
        return False
    import shutil
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


HEARTBEAT_S = 30.0  # logs and pipes: at least one progress line this often, so a slow start never looks hung


def _watch(spec, parts, procs) -> None:
    """The live line until every worker exited."""
    tty = sys.stderr.isatty()
    last, printed = None, time.time()
    while any(pr.poll() is None for pr, _ in procs.values()):
        time.sleep(0.5)
        st = rundir.collect([Path(spec.log_path)], only=parts)  # what `evalkit status` reads
        done, total = st.done, st.total
        if total:
            text = run_status.progress_line(st, f"{len(parts)} partitions")
            # logs and pipes: a line per 10 %, and whenever a partition starts computing, finishes or stops
            now = (int(10 * done / total), [(x.state, x.phase) for x in st.parts.values()])
            if tty:
                sys.stderr.write("\r" + text)
            elif now != last or time.time() - printed >= HEARTBEAT_S:
                last, printed = now, time.time()
                sys.stderr.write(text + "\n")
    if tty:
        sys.stderr.write("\n")


def run_worker(spec_json: str) -> str:
    """`evalkit _worker`: one partition of an already resolved spec, in this process."""
    spec = RunSpec.from_json(spec_json)
    plan = resolve(spec)
    status = run_partition(plan, spec.partition_offset)
    return f"{status} ({spec.device}, {spec.threads} threads)"


def finish_run(plan: Plan, no_check: bool) -> int:
    """After this launch's partitions: gather + check when the run dir holds all of them."""
    from .check import check, format_table
    from .gather import gather, is_current

    spec = plan.spec
    present = rundir.complete_partitions([spec.log_path])
    P = spec.n_partitions
    missing = [p for p in range(P) if p not in present]
    if missing:
        cli = Path(__file__).resolve().parent.parent / "bin" / "evalkit"  # picks the env, from any directory
        print(f"run dir {spec.log_path}: partitions {sorted(present)} of 0..{P - 1} complete; "
              f"missing {missing}. Run them (--partition_offset), then: "
              f"{cli} gather {spec.log_path} [OTHER_RUN_DIRS...] && {cli} check {spec.log_path}",
              file=sys.stderr)
        return 0
    if no_check:
        print(f"run dir {spec.log_path}: all {P} partitions complete", file=sys.stderr)
        return 0
    if spec.mode == "performance":
        from .perf import format_table as perf_table, write_performance
        print(perf_table(write_performance(spec.log_path)))
        print(f"run dir: {spec.log_path}")
        return 0
    if not is_current(spec.log_path, [spec.log_path]):
        gather([spec.log_path], force=True)
    result = check(spec.log_path, accuracy_target=spec.accuracy_target)
    print(format_table(result))
    print(f"run dir: {spec.log_path}")
    return 0 if result["verdict"] == "PASS" else 1
