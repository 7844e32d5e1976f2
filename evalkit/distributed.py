"""`torchrun ... -m evalkit run`: one partition per rank, results collected on rank 0.

Each rank runs partition offset + RANK in a worker subprocess (launcher.run_local),
so a worker killed by an exception, OOM or SIGKILL leaves its rank alive to report
it. Coordination goes through torchrun's c10d TCPStore, never through collectives:
a dead rank cannot block anyone. Every rank bumps a heartbeat counter; a rank whose
counter stops moving for --dist_timeout seconds counts as dead (counters, not
timestamps, so node clocks need not agree). File bytes go over a gloo process group
(gloo also on GPU nodes: only files travel, never tensors of the model).

Shared filesystem or not: rank 0 writes a token with a fresh nonce into its run
dir; a rank that finds that token in its own run dir shares the filesystem and
writes in place, any other rank sends its finished partition dir to rank 0, which
installs it with one directory rename, so gather never sees half a partition.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from . import rendezvous, rundir
from .errors import KitError
from .util import sha256_file

TOKEN = ".evalkit-rank0-token"
CHUNK = 16 << 20          # bytes per gloo message: bounded memory whatever the log size
HEARTBEAT_S = 2.0
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env() -> dict | None:
    """torchrun's per-worker variables, or None when not started by torchrun."""
    if not all(k in os.environ for k in ENV_KEYS):
        return None
    e = os.environ
    return {"rank": int(e["RANK"]), "world_size": int(e["WORLD_SIZE"]), "local_rank": int(e["LOCAL_RANK"]),
            "local_world_size": int(e.get("LOCAL_WORLD_SIZE", "1")),
            "node_rank": int(e.get("GROUP_RANK", "0")), "master_addr": e["MASTER_ADDR"],
            "master_port": int(e["MASTER_PORT"]), "restart": e.get("TORCHELASTIC_RESTART_COUNT", "0"),
            "agent_store": e.get("TORCHELASTIC_USE_AGENT_STORE", "False") == "True"}


class StoreLost(KitError):
    """The store is gone (rank 0's node died): nothing more can be reported through it."""


class _Ranks:
    """The c10d store plus heartbeat bookkeeping of every rank."""

    def __init__(self, env: dict, init_timeout: float, dist_timeout: float):
        import torch.distributed as dist

        self.env, self.rank, self.world = env, env["rank"], env["world_size"]
        self.dist_timeout = dist_timeout
        where = f"{env['master_addr']}:{env['master_port']}"
        # One deadline for every wait below: TCPStore's own timeout is not one (its client
        # retries a failed connect once more), so it connects only to an address known to answer.
        deadline = time.monotonic() + init_timeout
        limit = f"--init_timeout {init_timeout:g} s"
        hosting = self.rank == 0 and not env["agent_store"]  # else torchrun's agent serves the store
        if not hosting:
            rendezvous.reach(env["master_addr"], env["master_port"], deadline, f"rank {self.rank}", limit)
        try:
            base = dist.TCPStore(env["master_addr"], env["master_port"], self.world, is_master=hosting,
                                 timeout=timedelta(seconds=max(deadline - time.monotonic(), 1.0)),
                                 wait_for_workers=False)
            self.store = dist.PrefixStore(f"evalkit/{env['restart']}/", base)
            # Every rank checks in before the process group forms, so a missing one is named
            # at the deadline instead of timing out inside gloo.
            self.store.set(f"joined/{self.rank}", "1")
            keys = [f"joined/{r}" for r in range(self.world)]
            while not self.store.check(keys):
                if time.monotonic() > deadline:
                    missing = [r for r in range(self.world) if not self.store.check([f"joined/{r}"])]
                    raise KitError(f"rank {self.rank}: {self.world - len(missing)} of {self.world} ranks joined "
                                   f"the rendezvous at {where} within {limit} (missing rank "
                                   f"{', '.join(map(str, missing))}); check that every node started")
                time.sleep(0.1)
            base.set_timeout(timedelta(seconds=init_timeout))   # the default of later blocking store calls
            dist.init_process_group("gloo", store=dist.PrefixStore("pg", self.store), rank=self.rank,
                                    world_size=self.world, timeout=timedelta(seconds=init_timeout))
        except RuntimeError as e:  # DistNetworkError/DistStoreError: the store went away meanwhile
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KitError(f"rank {self.rank}: cannot reach the rendezvous at {where} or not every one of "
                           f"{self.world} ranks joined within {limit} ({first}); "
                           f"check MASTER_ADDR/MASTER_PORT and that every node started") from None
        self._seen: dict[int, tuple[int, float]] = {}
        self.beat_error: StoreLost | None = None
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()

    def _op(self, fn, *args):
        try:
            return fn(*args)
        except RuntimeError as e:
            raise StoreLost(f"rank {self.rank}: lost the rendezvous store at {self.env['master_addr']}:"
                            f"{self.env['master_port']} (rank 0 or its node died?): {str(e).strip()[:200]}") from None

    def _heartbeat(self):
        while not self._stop.is_set():
            try:
                self._op(self.store.add, f"hb/{self.rank}", 1)
            except StoreLost as e:
                self.beat_error = e  # the main thread meets the same error on its next store call
                return
            self._stop.wait(HEARTBEAT_S)

    def stale(self, r: int) -> bool:
        """True once rank r's heartbeat has not moved for dist_timeout seconds."""
        now = time.monotonic()
        n = self._op(self.store.add, f"hb/{r}", 0)
        last = self._seen.get(r)
        if last is None or last[0] != n:
            self._seen[r] = (n, now)
            return False
        return now - last[1] > self.dist_timeout

    def has(self, key: str) -> bool:
        return self._op(self.store.check, [key])

    def get(self, key: str):
        return json.loads(self._op(self.store.get, key).decode())

    def put(self, key: str, obj) -> None:
        self._op(self.store.set, key, json.dumps(obj))

    def wait(self, key: str, watch: int, what: str):
        """Value of key once set; KitError when rank `watch` dies first."""
        while not self.has(key):
            if self.stale(watch):
                raise KitError(f"rank {self.rank}: rank {watch} stopped responding (no heartbeat for "
                               f"--dist_timeout {self.dist_timeout:g} s) while waiting for {what}")
            time.sleep(0.2)
        return self.get(key)

    def close(self):
        import torch.distributed as dist
        self._stop.set()
        self._beat.join()
        dist.destroy_process_group()


# ------------------------------------------------------------------ file transfer

def _file_list(part_dir: Path) -> list[dict]:
    return [{"name": f.name, "size": f.stat().st_size, "sha256": sha256_file(f)}
            for f in sorted(part_dir.iterdir()) if f.is_file()]


def _stream(part_dir: Path, files: list[dict]) -> None:
    import torch
    import torch.distributed as dist

    try:
        for meta in files:
            with open(part_dir / meta["name"], "rb") as fh:
                while chunk := fh.read(CHUNK):
                    dist.send(torch.frombuffer(bytearray(chunk), dtype=torch.uint8), dst=0)
    except RuntimeError as e:  # gloo: peer gone or timed out
        raise KitError(f"sending {part_dir} to rank 0 failed: {str(e).strip()[:200]}") from None


def _receive(ranks: _Ranks, src: int, run_dir: Path, p: int, files: list[dict]) -> None:
    """Write rank src's partition p into run_dir/p: temp dir, checked, then one rename."""
    import torch
    import torch.distributed as dist

    tmp = run_dir / f".{p}.incoming-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        ranks.put(f"go/{src}", True)
        for meta in files:
            h = hashlib.sha256()
            left = meta["size"]
            with open(tmp / meta["name"], "wb") as fh:
                while left:
                    buf = torch.empty(min(CHUNK, left), dtype=torch.uint8)
                    dist.recv(buf, src=src)
                    data = buf.numpy().tobytes()
                    h.update(data)
                    fh.write(data)
                    left -= len(data)
            if h.hexdigest() != meta["sha256"]:
                raise KitError(f"partition {p} from rank {src}: {meta['name']} arrived corrupted (sha256 differs)")
        if rundir.read_manifest(tmp) is None:
            raise KitError(f"partition {p} from rank {src} arrived without a complete {rundir.MANIFEST}")
        dest = run_dir / str(p)
        old = None
        if dest.exists():
            if rundir.read_manifest(dest) is not None:
                raise KitError(f"partition {p} from rank {src}: {dest} already holds a complete partition; "
                               f"it is kept and the copy from rank {src} dropped")
            old = run_dir / f".{p}.unfinished-{uuid.uuid4().hex[:8]}"
            os.replace(dest, old)   # leftovers of an unfinished attempt on this node
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp)
        raise


# ------------------------------------------------------------------ the run

def _resume_command(spec, env: dict) -> str:
    from .launcher import resume_command
    cmd = resume_command(spec)
    if env["world_size"] > env["local_world_size"]:
        return f"{cmd}   (on every node its own command; this is node {env['node_rank']}'s)"
    return cmd


def _own_partition(plan, env: dict, info: dict) -> dict:
    """Run (or skip) this rank's partition; returns its result record."""
    from .launcher import cpu_cores, run_local

    spec, chash = plan.spec, plan.config_hash
    p = spec.partition_offset + env["rank"]
    res = {"rank": env["rank"], "partition": p, "host": socket.gethostname(), "status": "done", "error": None}
    if chash != info["config_hash"]:
        res.update(status="failed", error=f"rank {env['rank']} on {res['host']} has run config hash {chash}, "
                   f"rank 0 has {info['config_hash']}: same dataset, checkpoint, --n_count and options on every node")
        return res
    have = info["complete"].get(str(p))
    if have is not None:
        if have != chash:
            res.update(status="failed", error=f"partition {p} in rank 0's run dir was made with another config "
                       f"(hash {have}, this run {chash}); use a new LOG_PATH")
        else:
            res["status"] = "skipped"
        return res
    from .launcher import worker_devices
    kind = spec.device.split(":")[0]
    K = spec.devices_per_partition
    device, _ = worker_devices(spec, first=env["local_rank"] * K)[0]  # this rank's K local devices
    wspec = dataclasses.replace(
        spec, partition_offset=p, device=device,
        threads=spec.threads or (max(1, cpu_cores() // env["local_world_size"]) if kind == "cpu" else 0))
    try:
        run_local(dataclasses.replace(plan, spec=wspec), isolate=True)
    except KitError as e:
        res.update(status="failed", error=str(e))
    return res


def run(req, no_check: bool, init_timeout: float, dist_timeout: float) -> int:
    """One rank's whole run; rank 0 also collects, gathers and checks. Returns the exit code."""
    from .plan import resolve

    env = torchrun_env()
    try:  # every rank checks the request at once; rank 0's error reaches the others through the store
        plan, err = resolve(req, world_size=env["world_size"]), None
    except KitError as e:
        plan, err = None, e
    ranks = _Ranks(env, init_timeout, dist_timeout)
    try:
        if env["rank"] == 0:
            return _rank0(ranks, plan, err, env, no_check)
        return _rank_n(ranks, plan, err, env, req.log_path is not None)
    finally:
        ranks.close()


def _rank0(ranks: _Ranks, plan, err, env, no_check) -> int:
    from .launcher import finish_run

    verdict = 2
    try:
        if err is not None:
            ranks.put("plan", {"error": str(err)})
            raise err
        spec = plan.spec
        run_dir = Path(spec.log_path)
        run_dir.mkdir(parents=True, exist_ok=True)
        nonce = uuid.uuid4().hex
        (run_dir / TOKEN).write_text(nonce)
        from .quantize import artifact_files, prepare
        try:  # a quantized run calibrates once, here on rank 0; every rank gets the artifact below
            plan = prepare(plan, world_size=env["world_size"])
        except KitError as e:
            ranks.put("plan", {"error": str(e)})
            raise
        spec = plan.spec
        info = {"log_path": str(run_dir), "token": nonce, "config_hash": plan.config_hash,
                "complete": {str(p): m["config_hash"] for p, (_, m) in rundir.complete_partitions([run_dir]).items()}}
        if spec.quant_artifact:
            import base64
            info["quant"] = {"artifact": spec.quant_artifact, "files": {
                n: base64.b64encode(d).decode() for n, d in artifact_files(run_dir, spec.quant_artifact).items()}}
        ranks.put("plan", info)
        # `evalkit status` prints it for failed/missing partitions
        rundir.record_launch(run_dir, list(range(spec.partition_offset, spec.partition_offset + env["world_size"])),
                             spec.n_partitions, _resume_command(spec, env), plan.config_hash, list(plan.bounds))
        results = {0: _own_partition(plan, env, info)}
        pending = set(range(1, env["world_size"]))
        while pending:
            for r in sorted(pending):
                if ranks.has(f"result/{r}"):
                    res = ranks.get(f"result/{r}")
                    if res.get("files"):
                        try:
                            _receive(ranks, r, run_dir, res["partition"], res["files"])
                            ranks.put(f"received/{r}", {"ok": True})
                        except (KitError, RuntimeError, OSError) as e:
                            ranks.put(f"received/{r}", {"ok": False, "error": str(e)})
                            res.update(status="failed", error=f"transfer to rank 0 failed: {e}")
                    results[r] = res
                    pending.discard(r)
                elif ranks.stale(r):
                    results[r] = {"rank": r, "partition": spec.partition_offset + r, "status": "failed",
                                  "error": f"rank {r} stopped responding (no heartbeat for --dist_timeout "
                                           f"{ranks.dist_timeout:g} s: the process or its node died)"}
                    pending.discard(r)
            time.sleep(0.2)
        failed = [results[r] for r in sorted(results) if results[r]["status"] == "failed"]
        for r in sorted(results):
            res = results[r]
            print(f"rank {r}: partition {res['partition']} {res['status']}"
                  + (f" on {res.get('host')}" if res.get("host") else ""), file=sys.stderr)
        if failed:
            detail = "; ".join(f"partition {f['partition']} (rank {f['rank']}): {f['error']}" for f in failed)
            raise KitError(f"{len(failed)} of {env['world_size']} partitions failed: {detail}. Finished partitions "
                           f"are kept in {run_dir}; resume the failed ones with: {_resume_command(spec, env)}")
        verdict = finish_run(plan, no_check)
        return verdict
    except KitError as e:
        # Printed before the verdict goes out: once another rank exits non-zero torchrun may stop this one.
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        ranks.put("verdict", verdict)
        # Keep serving until every live rank read the verdict (the store may live in this process).
        for r in range(1, env["world_size"]):
            while not ranks.has(f"ack/{r}") and not ranks.stale(r):
                time.sleep(0.2)


def _rank_n(ranks: _Ranks, plan, err, env, log_path_given: bool) -> int:
    rank = env["rank"]
    res = {"rank": rank, "partition": None, "host": socket.gethostname(), "status": "failed", "error": None}
    try:
        info = ranks.wait("plan", 0, "rank 0's plan")
        if "error" in info:
            raise KitError(f"rank 0 failed before the run: {info['error']}")
        if err is not None:
            raise err
        if not log_path_given:  # one run dir name on every node: rank 0's timestamp
            plan = dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, log_path=Path(info["log_path"])))
        if "quant" in info:  # rank 0's calibration artifact: this node evaluates exactly that model
            import base64

            from .plan import resolve
            from .quantize import receive_files
            receive_files(Path(plan.spec.log_path), {n: base64.b64decode(d) for n, d in info["quant"]["files"].items()})
            plan = resolve(dataclasses.replace(plan.spec, quant_artifact=info["quant"]["artifact"]),
                           world_size=env["world_size"])
        res["partition"] = plan.spec.partition_offset + rank
        res = _own_partition(plan, env, info)
        log_path = Path(plan.spec.log_path)
        tok = log_path / TOKEN
        shared = tok.exists() and tok.read_text() == info["token"]
        part_dir = log_path / str(res["partition"])
        if res["status"] == "done" and not shared:
            res["files"] = _file_list(part_dir)
        ranks.put(f"result/{rank}", res)
        if res.get("files"):
            ranks.wait(f"go/{rank}", 0, "rank 0 to take the partition files")
            _stream(part_dir, res["files"])
            got = ranks.wait(f"received/{rank}", 0, "rank 0 to store the partition files")
            if not got["ok"]:
                res.update(status="failed", error=got["error"])
        verdict = ranks.wait("verdict", 0, "rank 0's gather and check")
        ranks.put(f"ack/{rank}", True)
        print(f"rank {rank}: partition {res['partition']} {res['status']}"
              + (f" ({res['error']})" if res["error"] else "")
              + f"; rank 0 exit code {verdict}", file=sys.stderr)
        return verdict if verdict else (2 if res["status"] == "failed" else 0)
    except KitError as e:
        if not isinstance(e, StoreLost):
            if not ranks.has(f"result/{rank}"):
                res.update(status="failed", error=str(e))
                ranks.put(f"result/{rank}", res)
            ranks.put(f"ack/{rank}", True)
        raise
