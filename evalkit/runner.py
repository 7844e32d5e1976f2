"""One partition under mlcommons-loadgen: QSL over the partition's global range,
a SUT that batches whatever LoadGen has issued, and the partition manifest.

The runner knows LoadGen and the Benchmark interface; it knows nothing about
DVC, gather or targets.
"""
from __future__ import annotations

import array
import math
import os
import queue
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import backends
from . import manifest as mf
from . import rundir
from .backends import SampleError
from .benchmark import Benchmark
from .cache import ResponseCache
from .errors import KitError, Preempted
from .owner import Claim
from .plan import MODES, Plan, RunSpec  # noqa: F401 (RunSpec: the runner's input type)
from .progress import Progress
from .store import SampleLoadError, SampleStore
from .util import write_error
from .rundir import ACCURACY_LOG


def user_conf_text(bench: Benchmark, spec: RunSpec) -> str:
    """The partition's user.conf: the user's file verbatim, or one made from the knobs."""
    if spec.user_conf is not None:
        try:
            text = Path(spec.user_conf).read_text()
        except OSError as e:
            raise KitError(f"--user_conf {spec.user_conf}: cannot read ({e.strerror})") from None
    else:
        text = "# written by evalkit from the run's knobs\n"
    knobs = dict(spec.perf)
    if spec.mode == "accuracy" and spec.scenario == "Server" and "target_qps" not in knobs:
        # Accuracy runs only need every sample once; don't pace them at a low default QPS.
        knobs["target_qps"] = 1000
    for key, value in knobs.items():
        if value is not None:
            text += f"{bench.mlperf_name}.{spec.scenario}.{key} = {value}\n"
    return text


def loadgen_horizon(settings, scenario: str) -> dict:
    """How many samples LoadGen will issue in a performance run, from its effective settings
    (embedded mlperf.conf + user.conf): exact for Offline (one query), a lower bound for the
    others, which also run for at least min_duration."""
    dur_s = settings.min_duration_ms / 1000.0
    if scenario == "Offline":
        n = max(settings.min_query_count, math.ceil(1.1 * settings.offline_expected_qps * dur_s))
        return {"samples": int(n), "min_duration_s": dur_s, "exact": True}
    if scenario == "Server":
        queries, spq = max(settings.min_query_count, math.ceil(settings.server_target_qps * dur_s)), 1
    elif scenario == "MultiStream":
        spq = settings.multi_stream_samples_per_query
        queries = max(settings.min_query_count, math.ceil(dur_s * 1e9 / settings.multi_stream_expected_latency_ns))
    else:
        queries, spq = max(settings.min_query_count,
                           math.ceil(dur_s * 1e9 / settings.single_stream_expected_latency_ns)), 1
    return {"samples": int(queries * spq), "min_duration_s": dur_s, "exact": False}


class _SUT:
    """Queue + one worker thread: LoadGen's callbacks never block on the model."""

    def __init__(self, bench, backend, store, spec, progress, lg, start=0, cache=None, size=0):
        self.bench, self.backend, self.store, self.spec = bench, backend, store, spec
        self.static = bool(getattr(backend, "static_shapes", False))
        self.ready: queue.Queue = queue.Queue(maxsize=1)
        self.answers: queue.Queue = queue.Queue(maxsize=1)
        self.cache = cache  # ResponseCache (evalkit/cache.py); None in performance runs
        self.start = start  # global index of the partition's sample 0 (error messages)
        self.progress, self.lg = progress, lg
        # Accuracy runs count distinct samples: MultiStream repeats some (queries of 8), and
        # progress must read 45/45, not 48/45. Performance runs count every sample issued.
        self.answered = np.zeros(size, dtype=bool) if spec.mode == "accuracy" else None
        self.q: queue.Queue = queue.Queue()
        # Held while one IssueQuery call enqueues: the worker never cuts an Offline query into
        # a short first batch just because it woke up while the samples were still arriving.
        self.issuing = threading.Lock()
        self.error: BaseException | None = None
        self.halting = threading.Event()   # preemption: finish the batch in flight, then stop
        self.idle = threading.Event()      # set once the worker thread has stopped
        self.batch_size = spec.batch_size
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def issue(self, query_samples):
        hits = []
        with self.issuing:
            for qs in query_samples:
                if self.cache is not None and self.start + qs.index in self.cache:
                    hits.append(qs)
                else:
                    self.q.put(qs)
        # Cached samples are answered at once (LoadGen allows completing inside IssueQuery), a
        # batch at a time so that large payloads never sit in memory all together.
        for i in range(0, len(hits), self.batch_size):
            chunk = hits[i:i + self.batch_size]
            try:
                payloads = [np.frombuffer(self.cache.get(self.start + qs.index), self.bench.payload_dtype)
                            for qs in chunk]
            except (KitError, OSError, ValueError) as e:  # raising here would abort the process
                self.error = e if isinstance(e, KitError) else KitError(f"{self.cache.path}: {e}")
                payloads = [np.zeros(0, np.uint8)] * len(chunk)
            self._complete(chunk, payloads)
            self.progress.add(self._new(chunk), cached=True)

    def flush(self):
        pass

    def stop(self):
        self.q.put(None)
        self.thread.join()

    def _take_batch(self):
        first = self.q.get()
        if first is None:
            return None
        batch = [first]
        with self.issuing:  # wait until the IssueQuery call in progress has queued all its samples
            pass
        while len(batch) < self.batch_size:
            try:
                nxt = self.q.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self.q.put(None)
                break
            batch.append(nxt)
        return batch

    def _new(self, batch) -> int:
        """How many of these samples are answered for the first time."""
        if self.answered is None:
            return len(batch)
        idx = np.fromiter((qs.index for qs in batch), dtype=np.int64, count=len(batch))
        idx = np.unique(idx)
        n = int((~self.answered[idx]).sum())
        self.answered[idx] = True
        return n

    def _complete(self, batch, payloads):
        lg = self.lg
        keep, responses = [], []
        for qs, payload in zip(batch, payloads):
            buf = array.array("B", np.ascontiguousarray(payload).tobytes())
            keep.append(buf)  # the buffer must outlive QuerySamplesComplete
            ptr, size = buf.buffer_info()
            if self.bench.token_payload:
                # LLMs: LoadGen wants n_tokens = payload length (token latencies, TEST06)
                responses.append(lg.QuerySampleResponse(qs.id, ptr, size, int(np.asarray(payload).size)))
            else:
                responses.append(lg.QuerySampleResponse(qs.id, ptr, size))
        lg.QuerySamplesComplete(responses)

    def halt(self, timeout: float) -> bool:
        """Stop after the batches in flight (their answers cached); True when it stopped in time."""
        self.halting.set()
        self.q.put(None)
        return self.idle.wait(timeout)

    # Three stages, one thread each, so the device never waits for the host: batch k+1 is
    # gathered (and copied to the device) while batch k runs, and answering LoadGen and
    # appending to the cache happen while batch k+1 runs. Queues of one keep memory bounded.
    def _work(self):
        threads = [threading.Thread(target=self._compute, daemon=True),
                   threading.Thread(target=self._answer, daemon=True)]
        for t in threads:
            t.start()
        try:
            self._assemble()
        finally:
            self.ready.put(None)
            for t in threads:
                t.join()
            self.idle.set()

    def _assemble(self):
        while not self.halting.is_set():
            batch = self._take_batch()
            if batch is None or self.halting.is_set():
                return
            if self.error is not None:
                # Fail fast but let LoadGen finish: answer with empty payloads, the run is
                # marked failed afterwards (the reference SUT would log and carry on).
                self.ready.put((batch, None))
                continue
            try:
                idx = [qs.index for qs in batch]
                if self.static and len(idx) < self.batch_size:  # compiled graphs: one shape, padding dropped
                    idx += [idx[-1]] * (self.batch_size - len(idx))
                self.ready.put((batch, self.store.batch(idx)))
            except BaseException as e:  # recorded and re-raised after LoadGen returns
                self.error = e
                self.ready.put((batch, None))

    def _compute(self):
        b = self.bench
        want = np.dtype(b.payload_dtype)
        while (item := self.ready.get()) is not None:
            batch, inputs = item
            if self.halting.is_set():
                continue  # preempted: only the batch already running is finished and cached
            payloads = None
            if inputs is not None and self.error is None:
                try:
                    payloads = b.postprocess(self.backend.run(inputs), len(batch))
                    for pl in payloads:
                        if pl.dtype != want:
                            raise KitError(f"{b.name}: postprocess returned {pl.dtype}, payload dtype is {want}")
                except SampleError as e:  # the backend knows the batch position; name the dataset index
                    self.error = KitError(f"sample {self.start + batch[e.position].index}: {e}")
                    payloads = None
                except BaseException as e:  # recorded and re-raised after LoadGen returns
                    self.error = e
                    payloads = None
            self.answers.put((batch, payloads))
        self.answers.put(None)

    def _answer(self):
        while (item := self.answers.get()) is not None:
            batch, payloads = item
            if payloads is None:
                self._complete(batch, [np.zeros(0, np.uint8)] * len(batch))
                continue
            self._complete(batch, payloads)
            if self.cache is not None:
                try:
                    self.cache.append([(self.start + qs.index, np.ascontiguousarray(pl).tobytes())
                                       for qs, pl in zip(batch, payloads)])
                except KitError as e:  # e.g. disk full: answers went out, the run fails afterwards
                    self.error = e
            try:
                self.progress.add(self._new(batch))
            except OSError as e:  # progress.json on a full disk: the run fails afterwards, in one line
                self.error = e


GRACE_S = 20.0  # preemption: how long the batch in flight may take (Slurm's KillWait is 30 s)


class _Preemption:
    """SIGTERM/SIGINT while a partition runs (Slurm/Kubernetes preemption, Ctrl-C): the batch in
    flight finishes and is cached, progress says `preempted`, the claim is released, and the
    process exits 75 (EX_TEMPFAIL). LoadGen holds the main thread in C++, where a Python handler
    would never run: the C-level handler writes the signal to a wakeup fd (whichever thread the
    kernel picked, tokenizer pools included) and a watcher thread acts on it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, p: int, resume: str | None):
        self.p, self.resume = p, resume
        self.claim = self.progress = self.sut = self.cache = None
        self.active = threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.active:
            self.r, self.w = os.pipe()
            os.set_blocking(self.w, False)
            self.old = {s: signal.signal(s, lambda *_: None) for s in self.SIGNALS}
            self.old_fd = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
            self.thread = threading.Thread(target=self._watch, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.set_wakeup_fd(self.old_fd)
            for s, h in self.old.items():
                signal.signal(s, h)
            os.close(self.w)  # the watcher reads EOF and ends
            self.thread.join()
            os.close(self.r)
        return False

    def _watch(self):
        while True:
            data = os.read(self.r, 16)
            if not data:
                return
            for signo in data:
                if signo in self.SIGNALS:
                    self._stop(signal.Signals(signo).name)

    def _stop(self, name: str):
        halted = self.sut.halt(GRACE_S) if self.sut is not None else True
        if self.cache is not None and halted:
            self.cache.close()  # fsync: every answered sample survives
        what = "nothing answered yet"
        if self.progress is not None:
            what = f"{self.progress.shown} of {self.progress.total} samples answered" + (
                " and kept in the response cache" if self.cache is not None else "")
            self.progress.finish("preempted", f"preempted by {name}: {what}")
        if self.claim is not None:
            self.claim.release()
        hint = f"; resume with: {self.resume}" if self.resume else "; rerun the same command to resume"
        sys.stderr.write(f"error: partition {self.p} preempted by {name}: {what}{hint}\n")
        sys.stderr.flush()
        os._exit(Preempted.exit_code)


def run_partition(plan: Plan, p: int, resume: str | None = None) -> str:
    """Run partition p of the plan; return "skipped" or "done". Raises KitError on failure.
    resume: the command that resumes it, printed when the partition is preempted."""
    spec, chash = plan.spec, plan.config_hash
    part_dir = Path(spec.log_path) / str(p)
    existing = rundir.read_manifest(part_dir)
    if existing is not None:
        if existing["config_hash"] != chash:
            raise KitError(f"partition {p} in {part_dir} was made with another config "
                           f"(hash {existing['config_hash']}, this run {chash}); use a new LOG_PATH")
        print(f"partition {p}: complete manifest found, skipped (resume)", file=sys.stderr)
        return "skipped"
    start, stop = plan.range(p)
    if not 0 <= start <= stop <= plan.dataset.size:  # the one range check; datasets check their files
        raise KitError(f"partition {p}: sample range [{start}, {stop}) is outside the dataset {spec.dataset} "
                       f"({plan.dataset.size} samples)")
    plan.dataset.check_available(start, stop)
    with _Preemption(p, resume) as pre:
        claim = pre.claim = Claim(part_dir, p).acquire()  # nothing in the dir is touched before this
        try:
            return _run_owned(plan, p, part_dir, start, stop, pre)
        except KitError as e:  # e.g. the model refused while loading: progress.json says why, not "running"
            if pre.progress is not None and pre.progress.final is None:
                _mark(pre, str(e))
            raise
        except OSError as e:  # a full disk, or one remounted read-only under the run
            full = write_error(e, part_dir)
            if full is None:
                raise
            _mark(pre, str(full))
            raise full from None
        finally:
            claim.release()


def sample_error(p: int, qsl_idx: int, e: BaseException) -> KitError:
    """A sample the dataset (or Benchmark.store_sample) could not load, as the partition's one-line
    error: its global qsl_idx, then the dataset's own sentence (a KitError names its file) or, for
    any other exception, its type, message and the file it names."""
    if isinstance(e, KitError):
        return KitError(f"partition {p}: sample qsl_idx {qsl_idx}: {e}")
    if isinstance(e, OSError) and e.filename is not None:
        return KitError(f"partition {p}: sample qsl_idx {qsl_idx} ({e.filename}): {type(e).__name__}: "
                        f"{e.strerror or e}")
    return KitError(f"partition {p}: sample qsl_idx {qsl_idx}: {type(e).__name__}: {e}")


def _mark(pre: "_Preemption", error: str) -> None:
    if pre.progress is not None:
        try:
            pre.progress.finish("failed", error)
        except OSError:
            pass  # the disk is full: status reads the stale progress as stalled, then failed


def _run_owned(plan: Plan, p: int, part_dir: Path, start: int, stop: int, pre: "_Preemption") -> str:
    import mlperf_loadgen as lg

    bench, spec, config, dataset, chash = plan.bench, plan.spec, plan.config, plan.dataset, plan.config_hash
    for name in rundir.LOADGEN_FILES:
        (part_dir / name).unlink(missing_ok=True)  # leftovers of an unfinished attempt
    (part_dir / rundir.USER_CONF).write_text(user_conf_text(bench, spec))
    # LoadGen settings first: a bad user.conf fails before any model or cache is opened.
    settings = lg.TestSettings()
    conf = str(part_dir / rundir.USER_CONF)
    # One FromConfig call: it loads the embedded mlperf.conf, then user.conf (facts §6).
    rc = settings.FromConfig(conf, bench.mlperf_name, spec.scenario)
    if rc != 0:
        raise KitError(f"LoadGen rejected user.conf {conf} (FromConfig returned {rc})")
    # The response cache is not a leftover: it is what this attempt resumes from. Opened before the
    # model loads, so a cache from another config fails in seconds, not after loading 70B weights.
    cache = None
    if spec.mode == "accuracy":
        cache = pre.cache = ResponseCache(part_dir, chash, start, stop)
        if len(cache):
            print(f"partition {p}: {len(cache)} of {stop - start} samples answered from {cache.path}",
                  file=sys.stderr)
    else:
        print(f"warning: partition {p}: no response cache in performance mode (cached answers would fake "
              f"throughput); an interrupted partition reruns from its start", file=sys.stderr)
        horizon = loadgen_horizon(settings, spec.scenario)
        print(f"partition {p}: LoadGen will issue {'' if horizon['exact'] else 'at least '}{horizon['samples']} "
              f"samples and run at least {horizon['min_duration_s']:g} s ({spec.scenario} min_query_count / "
              f"min_duration of mlperf.conf + user.conf; a short smoke run: MIN_DURATION=1000 MIN_QUERY_COUNT=64)",
              file=sys.stderr)

    size = stop - start
    # Before the model loads: status shows the partition loading (phase), and a resumed one keeps its count.
    # Performance runs: LoadGen's horizon (a lower bound outside Offline; Progress never shows > 100 %).
    progress = pre.progress = Progress(part_dir, p, size if spec.mode == "accuracy" else horizon["samples"],
                        meta={k: config[k] for k in ("model", "scenario", "mode", "data_type", "synthetic",
                                                     "n_count", "n_partitions")}
                        | {"device": spec.device, "host": socket.gethostname()},
                        min_duration_s=0.0 if spec.mode == "accuracy" else horizon["min_duration_s"],
                        resumed=len(cache) if cache is not None else 0, loaded=False)
    if spec.threads:
        import torch
        torch.set_num_threads(spec.threads)
    print(f"partition {p}: loading the model ({bench.name}, {spec.data_type} on {spec.device}, backend "
          f"{spec.backend})", file=sys.stderr, flush=True)
    t0 = time.time()
    backend = backends.create(spec.backend, spec.backend_options, partition=p)  # SERVER_URLS: p's server
    backend.load(bench, Path(spec.model_path), spec.device, spec.data_type, spec.options)
    from .quantize import apply as quantized  # the run's calibration artifact, rebuilt and proven (quantized runs)
    qdigest = None
    if plan.config.get("quantization"):  # only then: a server backend (openai) has no model in this process
        backend.model, qdigest = quantized(plan, backend.model, p)
    t_load = time.time() - t0
    progress.model_loaded()

    store = SampleStore(bench, spec.device, spec.data_type, spec.options)
    load_error: list[BaseException] = []
    # A backend with a warm-up (pytorch-compile: its compile) runs it on one full batch before LoadGen's
    # clock; in performance mode every backend does (one untimed batch: allocator, kernels, autotuning), so
    # the throughputs of eager and compiled points compare (explore). Accuracy runs discard nothing else.
    warm = {"done": not hasattr(backend, "warmup") and spec.mode != "performance"}

    def load(indices):
        if load_error:
            return  # the run has failed already: loading more would only delay saying so
        try:
            # cached samples are never issued to the model
            todo = [i for i in indices if i not in store and not (cache is not None and start + i in cache)]
            samples = []
            for i in todo:
                try:
                    samples.append((i, dataset.load(start + i)))
                except Exception as e:
                    raise SampleLoadError(i, e) from e
            store.load(samples)
            if not warm["done"] and todo:
                # outside LoadGen's timed part: compile (and warm up) on one full batch now
                warm["done"] = True
                idx = (todo * spec.batch_size)[:spec.batch_size]
                t = time.time()
                getattr(backend, "warmup", backend.run)(store.batch(idx))
                warm["seconds"] = round(time.time() - t, 3)
        except BaseException as e:  # raising inside LoadGen's callback would abort the process: record
            if isinstance(e, SampleLoadError):  # the first error, which the partition then reports, and
                e = sample_error(p, start + e.index, e.cause)  # make the SUT answer the issued samples empty
            load_error.append(e)
            if sut_impl.error is None:
                sut_impl.error = e

    def unload(indices):
        store.unload(indices)

    sut_impl = pre.sut = _SUT(bench, backend, store, spec, progress, lg, start, cache, size)
    sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
    qsl = lg.ConstructQSL(size, min(size, bench.performance_sample_count or size), load, unload)
    settings.scenario = getattr(lg.TestScenario, spec.scenario)
    settings.mode = getattr(lg.TestMode, MODES[spec.mode])
    out = lg.LogOutputSettings()
    out.outdir = str(part_dir)
    out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = out
    log_settings.enable_trace = False
    progress.begin()
    t1 = time.time()
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        sut_impl.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        backend.close()
        if cache is not None:
            cache.close()
    t_run = time.time() - t1
    # The first load error is the cause: whatever failed after it (samples issued but never loaded) is not.
    err = load_error[0] if load_error else sut_impl.error
    if isinstance(err, OSError) and write_error(err, part_dir) is not None:
        err = write_error(err, part_dir)
    if err is not None:
        msg = str(err) if isinstance(err, KitError) else f"partition {p}: the model failed: {type(err).__name__}: {err}"
        progress.finish("failed", msg)  # status shows the line the user saw
        if isinstance(err, KitError):
            raise err
        raise KitError(msg) from err
    log = part_dir / ACCURACY_LOG
    if spec.mode == "accuracy" and not _closed(log):
        # LoadGen does not report its own write errors: a log without its closing ']' is one
        free = shutil.disk_usage(part_dir).free
        msg = (f"partition {p}: LoadGen could not finish writing {log} ({free / 2**20:.1f} MiB free on its "
               f"filesystem); free space if it is full and rerun the same command: answered samples are kept")
        progress.finish("failed", msg)
        raise KitError(msg)
    progress.finish("complete")
    mf.write_manifest(part_dir, bench, spec, p, (start, stop), config, chash,
                      {"load_model_s": round(t_load, 3), "loadgen_s": round(t_run, 3),
                       # the model's own rate: cached samples cost nothing
                       "samples_per_s": round((progress.done - progress.cached) / t_run, 4) if t_run > 0 else None,
                       "samples_computed": progress.done - progress.cached, "samples_cached": progress.cached,
                       "started": t0, "finished": time.time(), "warmup_s": warm.get("seconds")},
                      backend.describe(), {"sample_store": store.where or "host objects",
                                           "peak_memory": peak_memory(spec.device),
                                           **({"quantized_model_sha256": qdigest} if qdigest else {})})
    if cache is not None:
        cache.delete()  # the LoadGen log now holds every response; keeping SDXL-size payloads only costs disk
    return "done"


def peak_memory(device: str) -> dict:
    """This process's peak memory so far: host peak RSS (VmHWM) and, on CUDA, torch's
    max_memory_allocated over the worker's devices (bytes; what is not measurable is left out)."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["host_rss_bytes"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    cuda = [d for d in device.split(",") if d.startswith("cuda")]
    if cuda:
        import torch
        out["cuda_max_allocated_bytes"] = max(int(torch.cuda.max_memory_allocated(d)) for d in cuda)
    return out


def _closed(log: Path) -> bool:
    """The accuracy log exists and ends with LoadGen's closing ']'."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, log.stat().st_size - 16))
            return f.read().rstrip().endswith(b"]")
    except OSError:
        return False

