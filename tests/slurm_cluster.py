"""A real two-node Slurm cluster on this machine, for tests: munged, slurmctld and two slurmd
(`slurmd -N n1`, `-N n2`) on 127.0.0.1 with their own ports, config, state and logs under one
temp dir, stopped by PID. Node names n1/n2 resolve nowhere, as on many real clusters; only
their NodeAddr (127.0.0.1) does.

Debian's `slurm-wlm` and `munge` are installed with apt-get when missing (CI runs as root);
not root and not installed: the tests skip, saying why."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from s3server import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "sinfo", "srun")
NODES = ("n1", "n2")


def _have_all() -> bool:
    dirs = os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]
    return all(shutil.which(x, path=os.pathsep.join(dirs)) for x in DAEMONS + CLIENTS)


def install() -> str | None:
    """Install slurm-wlm and munge if missing. Returns a skip reason, or None when ready;
    raises RuntimeError when the install itself fails (a broken CI must not pass)."""
    if _have_all():
        return None
    if os.geteuid() != 0:
        return ("Slurm tests need slurm-wlm and munge: not installed and not root to apt-get them "
                "(apt-get install slurm-wlm munge, or run the tests as root)")
    if not shutil.which("apt-get"):
        raise RuntimeError("slurm-wlm/munge missing and no apt-get to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"]
    cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if cp.returncode != 0:  # a clean machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=900)
        cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if cp.returncode != 0 or not _have_all():
        raise RuntimeError(f"apt-get install slurm-wlm munge failed:\n{cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")
    return None


def _exe(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket.2"

    # ------------------------------------------------------------------ start / stop

    def start(self, timeout: float = 60) -> "Cluster":
        r = self.root
        for d in ("munge", "state", "log", "spool/n1", "spool/n2"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        # munged wants its files owned by the user it runs as; root runs it here, so --force.
        self._spawn("munged", [_exe("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={r / 'munge' / 'munged.pid'}",
                               f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'seed'}"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged socket")
        ctld_port = free_port()
        node_ports = {n: free_port() for n in NODES}
        self.conf.write_text("\n".join([
            "ClusterName=evalkit-test",
            "SlurmctldHost=localhost(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log'}/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "MinJobAge=300",
            "KillWait=5",
            *[f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname=localhost Port={node_ports[n]} CPUs=1 "
              f"State=UNKNOWN" for n in NODES],
            f"PartitionName=test Nodes={','.join(NODES)} Default=YES MaxTime=INFINITE State=UP",
            ""]))
        self._spawn("slurmctld", [_exe("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        for n in NODES:
            self._spawn(f"slurmd-{n}", [_exe("slurmd"), "-D", "-N", n, "-f", str(self.conf)])
        self._wait(lambda: self._idle() == len(NODES), timeout, "both nodes idle")
        return self

    def stop(self) -> None:
        # slurmd first (their job steps go with them), then the controller, then munged.
        for name in [f"slurmd-{n}" for n in NODES] + ["slurmctld", "munged"]:
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                            stdin=subprocess.DEVNULL)
        log.close()

    def _wait(self, ready, timeout: float, what: str) -> None:
        t_end = time.monotonic() + timeout
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > t_end:
                self.stop()
                raise RuntimeError(f"Slurm test cluster: no {what} ({'exited: ' + ', '.join(dead) if dead else 'timeout'})"
                                   f"\n{self.logs()}")
            time.sleep(0.3)

    def _idle(self) -> int:
        cp = subprocess.run([_exe("sinfo"), "-h", "-N", "-o", "%N %T"], env=self.env(), capture_output=True, text=True)
        return sum(1 for line in cp.stdout.splitlines() if line.split()[1:] == ["idle"])

    # ------------------------------------------------------------------ use

    def env(self, **extra) -> dict:
        e = dict(os.environ, SLURM_CONF=str(self.conf))
        e["PATH"] = e.get("PATH", "") + ":/usr/sbin:/sbin"
        e.update({k: str(v) for k, v in extra.items()})
        return e

    def logs(self) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            out.append(f"--- {f.name}\n" + f.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def sbatch(self, args: list[str], cwd: Path, env: dict, timeout: float = 300) -> tuple[int, str, float]:
        """Submit `sbatch ARGS` from cwd and wait for the job: (exit code, the job's output file,
        seconds it ran by Slurm's StartTime/EndTime). Polls scontrol: `sbatch --wait` polls at up
        to 10 s intervals, too coarse for timing a job."""
        out = self.root / f"job-{time.monotonic_ns()}.out"
        cp = subprocess.run([_exe("sbatch"), "--parsable", f"--output={out}", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
        if cp.returncode != 0 or not cp.stdout.strip().split(";")[0].isdigit():
            raise RuntimeError(f"sbatch failed: {cp.stdout}{cp.stderr}\n{self.logs()}")
        job = cp.stdout.strip().split(";")[0]
        t_end = time.monotonic() + timeout
        while True:
            info = self.job(job)
            if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                        "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"):
                break
            if time.monotonic() > t_end:
                subprocess.run([_exe("scancel"), job], env=self.env())
                raise RuntimeError(f"job {job} still {info.get('JobState')} after {timeout} s\n{self.logs()}")
            time.sleep(0.3)
        rc, sig = (int(x) for x in info["ExitCode"].split(":"))
        ran = (_ts(info["EndTime"]) - _ts(info["StartTime"])) if info.get("StartTime") != "Unknown" else 0.0
        text = out.read_text(errors="replace") if out.exists() else ""
        return rc or (128 + sig if sig else 0), text, ran

    def job(self, job: str) -> dict:
        cp = subprocess.run([_exe("scontrol"), "show", "job", "--oneliner", job], env=self.env(),
                            capture_output=True, text=True)
        return dict(f.split("=", 1) for f in cp.stdout.split() if "=" in f)


def _ts(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
