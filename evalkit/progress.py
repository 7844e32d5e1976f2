"""Per-partition progress: a terminal bar and progress.json next to the partition log."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from .errors import KitError
from .rundir import PROGRESS_FILE
from .util import atomic_write_json



def fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def eta_seconds(done: int, total: int, rate: float) -> float | None:
    return (total - done) / rate if rate > 0 and total > 0 else None


def line(label: str, done: int, total: int, rate: float, eta: float | None = None) -> str:
    if total <= 0:
        return f"{label}: {done} samples {rate:.2f} samples/s"
    pct = 100.0 * done / total if total else 100.0
    if done >= total:
        return f"{label}: {done}/{total} (100.0%) complete"
    speed = f"{rate:.2f} samples/s" if rate > 0 else "-- samples/s"  # nothing computed yet: no rate
    return f"{label}: {done}/{total} ({pct:5.1f}%) {speed} ETA {fmt_eta(eta)}"


class Progress:
    """Thread-safe counter; redraws at most every `interval` seconds."""

    def __init__(self, part_dir: Path, partition: int, total: int, interval: float = 1.0, stream=None,
                 meta: dict | None = None, min_duration_s: float = 0.0, resumed: int = 0, loaded: bool = True):
        self.path = Path(part_dir) / PROGRESS_FILE
        self.partition = partition
        self.meta = meta or {}  # model, scenario, mode, ...: lets the report show a run that has no manifest yet
        self.total = total
        self.min_duration_s = min_duration_s  # performance runs: LoadGen runs at least this long
        self.done = 0
        self.cached = 0  # answered from the response cache (evalkit/cache.py), part of done
        # samples an earlier attempt answered (the response cache): shown as done from the start, so a
        # resumed partition never counts backwards while its model loads; LoadGen re-issues them as cached
        self.resumed = resumed
        self.error: str | None = None
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.time()
        self.final: str | None = None     # finish()'s status
        # loaded=False: written before the model loads; "started" appears once it has (model_loaded()), so a
        # progress.json with "started" still means the model loaded (the bad-input contract reads that)
        self.loaded = loaded
        self.issued: float | None = None  # begin(): LoadGen started; the rate counts from here, not the model load
        self._last = 0.0
        self._last_pct_printed = -1
        self._lock = threading.Lock()
        self.write("running")

    @property
    def rate(self) -> float:
        # computed samples only: cached ones come back at once and would fake the ETA
        el = time.time() - (self.issued or self.started)
        return (self.done - self.cached) / el if el > 0 else 0.0

    @property
    def shown(self) -> int:
        return max(self.done, self.resumed)

    def model_loaded(self) -> None:
        with self._lock:
            self.loaded = True
            self.started = time.time()
            self.write("running")

    def begin(self) -> None:
        """The model is loaded and LoadGen starts: the rate is measured from now."""
        with self._lock:
            self.issued = time.time()
            self.write("running")

    def eta(self, rate: float) -> float | None:
        eta = eta_seconds(self.shown, self.total, rate)
        if eta is not None and self.min_duration_s:
            eta = max(eta, self.min_duration_s - (time.time() - self.started))
        return eta

    def write(self, status: str) -> None:
        rate = self.rate
        eta = self.eta(rate) if status == "running" else None
        # loading: the model, then the samples and the first batch; status and the launcher say so
        phase = "loading" if status == "running" and self.done == self.cached and self.shown < self.total else None
        atomic_write_json(self.path, {"partition": self.partition, "done": self.shown, "total": self.total,
                                      "rate": round(rate, 4), "eta_s": None if eta is None else round(eta, 1),
                                      **({"started": self.started} if self.loaded else {}),
                                      "updated": time.time(), "status": status,
                                      "cached": self.cached, "computed": self.done - self.cached,
                                      "error": self.error, "phase": phase, "resumed": self.resumed,
                                      "issued": self.issued,  # LoadGen started: a failure after it is no refusal
                                      **self.meta})

    def add(self, n: int, cached: bool = False) -> None:
        with self._lock:
            self.done += n
            self.cached += n if cached else 0
            if self.done > self.total > 0:
                self.total = self.done  # past LoadGen's lower bound (min_duration not reached yet)
            now = time.time()
            if now - self._last < self.interval and (self.done < self.total or self.total <= 0):
                return
            self._last = now
            self.write("running")
            rate = self.rate
            text = line(f"partition {self.partition}", self.shown, self.total, rate, self.eta(rate))
            if self.tty:
                self.stream.write("\r" + text)
                if 0 < self.total <= self.done:
                    self.stream.write("\n")
            else:
                # Logs and pipes get a line per 10 % instead of a redraw storm.
                pct = int(10 * self.shown / self.total) if self.total > 0 else int(now - self.started) // 10
                if pct != self._last_pct_printed:
                    self._last_pct_printed = pct
                    self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self, status: str, error: str | None = None) -> None:
        with self._lock:
            self.error = error
            self.final = status
            self.write(status)


def mark_failed(part_dir: Path, reason: str) -> None:
    """A worker that died without saying so (SIGKILL, OOM) leaves "running": the launcher says it."""
    f = Path(part_dir) / PROGRESS_FILE
    if not Path(part_dir).is_dir():
        return  # failed before it had a dir: nothing to mark
    try:
        pr = json.loads(f.read_text())
    except FileNotFoundError:
        pr = {"partition": int(Path(part_dir).name), "done": 0, "total": 0, "status": "running"}
    except ValueError:
        raise KitError(f"{f}: corrupt progress file") from None
    if pr.get("status") == "running":
        atomic_write_json(f, pr | {"status": "failed", "error": reason, "updated": time.time()})
