"""Merge partition accuracy logs into one LoadGen-format log with global qsl_idx.

Before writing anything it proves the set is whole: every partition 0..P-1
exactly once, one config hash, each log matching its manifest (size, sha256),
every local index inside its range, and every global index 0..n_count-1 once.
Gather streams entry by entry, each partition in qsl_idx order; memory is one entry,
an n_count bitmap and one (qsl_idx, offset) pair per sample of a partition.
"""
from __future__ import annotations

import errno
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import rundir
from .accuracy_log import Writer, entry_at, iter_entries
from .errors import KitError
from .identity import IDENTITY, config_difference, read_identity
from .partition import partition_range
from .probe import config_indices
from .rundir import ACCURACY_LOG, GATHER_INFO, MERGED
from .util import KIT_CLI, atomic_write_json, sha256_file, write_error
from .identity import file_sha256


def find_partitions(run_dirs: list[Path]) -> dict[int, tuple[Path, dict]]:
    for rd in map(Path, run_dirs):
        if not rd.is_dir():
            raise KitError(f"run dir {rd} does not exist")
    found = rundir.complete_partitions(run_dirs)
    if not found:
        unfinished = [str(d) for rd in run_dirs for _, d in rundir.partition_dirs(rd)]
        raise KitError(f"no complete partition in {', '.join(map(str, run_dirs))}"
                       + (f" (unfinished: {', '.join(unfinished)})" if unfinished else ""))
    return found


def validate(found: dict[int, tuple[Path, dict]]) -> dict:
    """The shared manifest facts; KitError on a mismatch or a missing partition."""
    ref_p = min(found)
    ref = found[ref_p][1]
    for p, (d, m) in sorted(found.items()):
        if m["config_hash"] != ref["config_hash"]:
            # other weights and data are named file by file (identity.json beside each manifest)
            what = config_difference(m["config"], ref["config"], read_identity(d).get("dataset"),
                                     read_identity(found[ref_p][0]).get("dataset"))
            raise KitError(f"partition {p} ({d}) is from another config than partition {ref_p} "
                           f"(hash {m['config_hash']} vs {ref['config_hash']}; differs in {what})")
        quant = m["config"].get("quantization")
        if quant and m.get("quantized_model_sha256") != quant.get("model_sha256"):
            # a quantized run: each partition records the sha256 of the model it evaluated (evalkit/quantize.py)
            raise KitError(f"partition {p} ({d}) evaluated quantized model sha256 "
                           f"{str(m.get('quantized_model_sha256'))[:12]}.., the run's calibration artifact "
                           f"{str(quant.get('artifact'))[:12]}.. gives {str(quant.get('model_sha256'))[:12]}..; rerun "
                           f"partition {p} in a fresh dir from that artifact")
    P = int(ref["n_partitions"])
    missing = [p for p in range(P) if p not in found]
    if missing:
        raise KitError(f"partitions {', '.join(map(str, missing))} of 0..{P - 1} are missing or unfinished; run them "
                       f"(--partition_offset) or copy their dirs here, then gather again")
    extra = [p for p in found if p >= P]
    if extra:
        raise KitError(f"partition {extra[0]} is outside 0..{P - 1}")
    n_count = int(ref["n_count"])
    bounds = ref["config"].get("partition_bounds")  # cut by work (3D-UNet), else by count
    for p, (d, m) in sorted(found.items()):
        want = [bounds[p], bounds[p + 1]] if bounds else list(partition_range(n_count, P, p))
        if list(m["range"]) != want:
            raise KitError(f"partition {p}: {d / rundir.MANIFEST} claims range {m['range']}, the partition "
                           f"contract gives {want}; the manifest was edited")
    return ref


def _backup(path: Path) -> Path:
    bak = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    os.replace(path, bak)
    return bak


def gather(run_dirs: list[Path], out_dir: Path | None = None, force: bool = False) -> Path:
    """Merge the partitions of run_dirs into out_dir (default: the first run dir); _merge does it.
    A write that fails (full disk, quota, read-only or foreign dir) is one line naming the file and
    leaves out_dir as it was: no temp file, the old merged log back in place, gather.json unchanged."""
    out = Path(out_dir or run_dirs[0])
    merged = out / MERGED
    before, baks = _inode(merged), set(out.glob(f"{MERGED}.*.bak"))
    try:
        return _merge(run_dirs, out_dir, force)
    except OSError as e:
        if e.filename is None or Path(e.filename).name.startswith(f".{MERGED}."):
            e = OSError(e.errno, e.strerror, str(merged))  # a write to the temp file: name the log
        todo = ("gather into a writable --out dir" if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else
                "free some space (or gather into another --out dir) and gather again")
        ours = Path(e.filename).parent == out  # else a partition's file it could not read
        err = write_error(e, out, f"{todo}; the existing {MERGED} and {GATHER_INFO} in {out} are unchanged"
                          if ours else None)
        if err is None:
            raise
        if _inode(merged) != before:  # the new log replaced the old one, its gather.json could not follow
            new = sorted(set(out.glob(f"{MERGED}.*.bak")) - baks)
            try:
                os.replace(new[-1], merged) if new else merged.unlink()
            except OSError:
                pass
        raise err from None


def _inode(f: Path) -> int | None:
    try:
        return f.stat().st_ino
    except OSError:
        return None


def _merge(run_dirs: list[Path], out_dir: Path | None = None, force: bool = False) -> Path:
    found = find_partitions(run_dirs)
    ref = validate(found)
    if ref["config"]["mode"] != "accuracy":
        raise KitError(f"run {run_dirs[0]} is a {ref['config']['mode']} run; only accuracy runs have logs to gather")
    out_dir = Path(out_dir or run_dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = out_dir / MERGED
    if merged.exists() and not force:
        raise KitError(f"{merged} already exists; it is never overwritten: remove it, use --force "
                       f"(the old file is kept as a .bak) or gather into another --out dir")
    n_count = int(ref["n_count"])
    probe_ids = config_indices(ref["config"])  # a probe run: position i is the set's qsl_idx probe_ids[i]
    itemsize = np.dtype(ref["payload_dtype"]).itemsize
    seen = np.zeros(n_count, dtype=bool)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{MERGED}.", suffix=".tmp")
    parts_info = []
    try:
        with os.fdopen(fd, "w") as f:
            w = Writer(f)
            for p in sorted(found):
                d, m = found[p]
                log = d / ACCURACY_LOG
                start, stop = m["range"]
                expect = m.get("logs", {}).get(ACCURACY_LOG)
                if not log.exists():
                    raise KitError(f"partition {p}: {log} is missing although its manifest is complete")
                if expect and log.stat().st_size != expect["size"]:
                    raise KitError(f"partition {p}: {log} is {log.stat().st_size} bytes, the manifest says "
                                   f"{expect['size']} (truncated or replaced); rerun the partition")
                h = hashlib.sha256()
                with open(log, "rb") as raw:
                    for chunk in iter(lambda: raw.read(1 << 20), b""):
                        h.update(chunk)
                if expect and h.hexdigest() != expect["sha256"]:
                    raise KitError(f"partition {p}: {log} does not match its manifest's sha256 (modified); rerun the partition")
                order = []
                first_payload: dict[int, bytes] = {}  # digest of each sample's first payload
                repeats = 0
                for off, e in iter_entries(log, f"partition {p}:", offsets=True):
                    local = int(e["qsl_idx"])
                    if not 0 <= local < stop - start:
                        raise KitError(f"partition {p}: {log} has qsl_idx {local} outside its range 0..{stop - start - 1}")
                    data = e["data"]
                    if len(data) % (2 * itemsize):
                        raise KitError(f"partition {p}: {log} qsl_idx {local}: payload of {len(data) // 2} bytes "
                                       f"is not a whole number of {ref['payload_dtype']}")
                    g = start + local
                    digest = hashlib.sha256(data.encode()).digest()
                    if local in first_payload:
                        # LoadGen's MultiStream queries hold 8 samples: a partition whose size is not a
                        # multiple of 8 gets some twice, with the same answer. Keep the first, as the
                        # MLCommons scripts do; a repeat with another answer means a nondeterministic SUT.
                        if first_payload[local] != digest:
                            raise KitError(f"partition {p}: {log} has qsl_idx {local} twice with different payloads "
                                           f"(the model answered the same sample differently); rerun the partition")
                        repeats += 1
                        continue
                    if seen[g]:
                        raise KitError(f"partition {p}: {log} has global qsl_idx {g}, which another partition "
                                       f"already holds")
                    seen[g] = True
                    first_payload[local] = digest
                    order.append((local, off))
                # Sorted by qsl_idx within the partition: LoadGen's completion order varies between
                # runs, so this makes the merged log canonical (a resumed run is byte-identical).
                order.sort()
                with open(log, "rb") as raw:
                    for local, off in order:
                        e = entry_at(raw, off, f"partition {p}: {log}")
                        out = {"seq_id": w.n, "qsl_idx": start + local if probe_ids is None else probe_ids[start + local]}
                        out.update((k, v) for k, v in e.items() if k not in ("seq_id", "qsl_idx"))
                        w.write(out)
                count = len(order)
                parts_info.append({"partition": p, "dir": str(d.resolve()), "range": [start, stop],
                                   "entries": count, "repeats": repeats, "host": m.get("host"), "device": m.get("device"),
                                   "timings": m.get("timings", {}), "accuracy_log_sha256": h.hexdigest(),
                                   "manifest_sha256": sha256_file(d / rundir.MANIFEST)})
            w.close()
        if not seen.all():
            gap = int(np.flatnonzero(~seen)[0])
            raise KitError(f"global qsl_idx {gap} (and {int((~seen).sum()) - 1} more) missing from the partition "
                           f"logs; the run is incomplete")
        if merged.exists():
            print(f"note: existing {merged} kept as {_backup(merged)}", file=sys.stderr)
        os.replace(tmp, merged)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    info = {k: ref[k] for k in ("model", "n_count", "n_partitions", "payload_dtype", "config", "config_hash",
                                "dataset", "model_path")}
    # what gather vouches for: check and status verify it before they score or report (verify below)
    info.update({"partitions": parts_info, "run_dirs": [str(Path(r).resolve()) for r in run_dirs],
                 "merged_log": MERGED, "repeats": sum(x["repeats"] for x in parts_info),
                 "merged": {"sha256": file_sha256(merged), "size": merged.stat().st_size, "entries": int(seen.sum())}})
    atomic_write_json(out_dir / IDENTITY, {"dataset": read_identity(found[min(found)][0]).get("dataset")})
    atomic_write_json(out_dir / GATHER_INFO, info)
    return merged


def verify(run_dir: Path) -> dict:
    """gather.json of run_dir, once its record holds: the merged log is the one gather wrote (sha256,
    size) and every partition it merged that is on this machine (at its recorded dir or in run_dir)
    still has the manifest and accuracy log it had then.
    KitError in one line otherwise. check and status call it before they score or report."""
    run_dir = Path(run_dir)
    info_f, merged = run_dir / GATHER_INFO, run_dir / MERGED
    again = f"gather again: `{KIT_CLI} gather --force {run_dir}`"
    if not merged.exists() or not info_f.exists():
        raise KitError(f"{run_dir} has no {MERGED} / {GATHER_INFO}; run `{KIT_CLI} gather {run_dir}` first")
    info = rundir.read_json(info_f)
    rec = info.get("merged")
    if not isinstance(rec, dict) or not {"sha256", "size", "entries"} <= set(rec):
        raise KitError(f"{info_f} does not record the merged log's sha256 and entries (an older kit wrote it); {again}")
    size = merged.stat().st_size
    if size != rec["size"] or file_sha256(merged) != rec["sha256"]:
        short = " (shorter)" if size < rec["size"] else ""
        raise KitError(f"{merged} is not the log gather wrote ({size} bytes{short}, gather.json vouched for "
                       f"{rec['size']} bytes and {rec['entries']} entries, sha256 {rec['sha256'][:12]}..); {again}")
    for part in info.get("partitions", []):
        p, d = part["partition"], Path(part["dir"])
        if not d.is_dir() and (run_dir / str(p)).is_dir():
            d = run_dir / str(p)  # a copy of the whole run (a published log, another node): its own partitions
        if not d.is_dir():
            continue  # only the gathered dir was copied here (`gather --out` on another node): its record stands
        man, log = d / rundir.MANIFEST, d / ACCURACY_LOG
        if not man.is_file() or not log.is_file():
            raise KitError(f"partition {p}: {man if not man.is_file() else log} is gone since gather (the partition "
                           f"is being rerun or was emptied); the merged log no longer matches it: {again}")
        if sha256_file(man) != part.get("manifest_sha256"):
            raise KitError(f"partition {p}: {man} changed since gather (another run or an edit replaced it); "
                           f"the merged log no longer matches its partitions: {again}")
        if file_sha256(log) != part.get("accuracy_log_sha256"):
            raise KitError(f"partition {p}: {log} changed since gather; {again}")
    return info


def is_current(out_dir: Path, run_dirs: list[Path]) -> bool:
    """True when the merged log still is what gather vouched for and was gathered from exactly the
    partitions now complete in run_dirs (a partition rerun since, even to the same bytes, is not)."""
    try:
        info = verify(out_dir)
        found = find_partitions(run_dirs)
    except KitError:
        return False
    have = {pi["partition"]: str(Path(pi["dir"]).resolve()) for pi in info.get("partitions", [])}
    return have == {p: str(d.resolve()) for p, (d, _) in found.items()}
