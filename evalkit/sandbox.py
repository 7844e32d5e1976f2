"""The sandbox for generated code: every program a scorer runs (MBXP today) runs here and nowhere else.

One program = one bubblewrap (`bwrap`) sandbox, built as follows.
* Namespaces: new user, pid, net, ipc, uts and cgroup namespaces (--unshare-all), none creatable
  inside (--disable-userns), a new session (no terminal injection). bwrap's own init is pid 1; when
  the program's main process ends bwrap returns, its init dies with it (--die-with-parent) and the
  kernel kills whatever is left in the pid namespace (a double-forked setsid daemon included);
  run() returns only after that (the init's pidfd). The same happens when the kit dies while the
  program runs. Not covered: a kit SIGKILLed in the milliseconds between starting prlimit and
  bwrap's setting its parent-death signal (bwrap does not check that its parent is still there):
  that one sandbox outlives it, bounded by its CPU-seconds limit only (seen once in ~10 runs of a
  test that killed the kit as soon as prlimit showed; the test now waits for the program).
* Filesystem: a fresh tmpfs root, read-only after set-up, holding read-only binds of /usr (and the
  /bin, /lib*, /sbin links), /etc/ld.so.cache, /etc/alternatives and the install dirs of the
  toolchains the caller names; the program's dir at /box (its cwd, the only writable disk), a small
  tmpfs /tmp, a /proc of its own processes, a minimal read-only /dev. Not there: the host's /tmp,
  /run, /root, /home, the kit's tree, the rest of /etc (/etc/shadow...), any filesystem socket; the
  network namespace has only its own loopback (no host TCP/UDP port, no abstract socket).
* uid: when the kit runs as root the program runs as nobody (65534) on the host: the setuid happens
  before bwrap starts, and its user namespace maps that one uid only.
* Limits (set by prlimit before bwrap): processes + threads of that uid (RLIMIT_NPROC: counted per
  uid on the host, so shared by the programs running at once), address space, CPU seconds, file
  size, open files, no core file; wall time and the size of stdout/stderr read back (over either,
  the whole sandbox is killed).
Without a bwrap that works here nothing runs: unavailable() says why, callers report INCOMPLETE.
"""
from __future__ import annotations

import os
import re
import resource
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

BWRAP = "bwrap"
PRLIMIT = "prlimit"                # util-linux: sets the rlimits, then execs bwrap
NOBODY = 65534                     # the programs' host uid (and gid) when the kit runs as root
INSTALL = "apt-get install -y bubblewrap"
BOX = "/box"                       # the program's dir, inside
_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # usr-merge links (or dirs: bound)
_ETC = ("/etc/ld.so.cache", "/etc/alternatives")                    # all of /etc a toolchain reads


@dataclass(frozen=True)
class Limits:
    wall_s: float = 20.0
    memory_mb: int | None = 2048   # address space of each process; None: none (V8 reserves far more than it uses)
    tasks: int = 64                # processes + threads the uid may add, all programs running at once together
    cpu_s: float | None = None     # CPU seconds of each process (default: wall_s + 2)
    file_mb: int = 64              # largest file it may write
    output_bytes: int = 1 << 20    # stdout and stderr each: more and it is killed
    tmp_mb: int = 64               # its /tmp (RAM)


@dataclass
class Result:
    rc: int | None                 # the program's exit code (128 + signal when killed by one); None: we killed it
    stdout: bytes
    stderr: bytes
    killed: str = ""               # why we killed it: "timed out", "output over N bytes", "not run: ..."

    @property
    def ok(self) -> bool:
        return self.rc == 0


def program_uid() -> int:
    """The host uid programs run as: nobody when the kit is root, else the kit's own."""
    return NOBODY if os.geteuid() == 0 else os.getuid()


def install_hint() -> str:
    return INSTALL if os.geteuid() == 0 else "sudo " + INSTALL


_lock = threading.Lock()
_why: list[str | None] = []        # unavailable()'s answer, once probed
_active = 0                        # runs in flight in this process
_base_tasks = 0                    # the uid's tasks when none of ours ran (its RLIMIT_NPROC count starts there)


def unavailable() -> str | None:
    """None when programs can run in the sandbox here, else why not and what to do (one line). Probed once."""
    with _lock:
        if _why:
            return _why[0]
    why = None
    if not shutil.which(BWRAP):
        why = f"bubblewrap (bwrap) is not installed; install it with `{install_hint()}`"
    elif not shutil.which(PRLIMIT):
        why = f"prlimit is not installed; install it with `{install_hint().replace('bubblewrap', 'util-linux')}`"
    else:
        with box() as d:
            r = run(["true"], d, Limits(wall_s=30, memory_mb=None))
        if not r.ok:
            err = (r.stderr.decode(errors="replace").strip().splitlines() or [r.killed or f"exit {r.rc}"])[-1]
            why = (f"bwrap cannot build its sandbox here ({err}): it needs unprivileged user namespaces "
                   "(README: MBXP sandbox)")
    with _lock:
        if not _why:
            _why.append(why)
        return _why[0]


def reset() -> None:
    """Probe again at the next unavailable() (tests)."""
    with _lock:
        _why.clear()


# --------------------------------------------------------------------------------- what it sees
def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def roots(executables) -> list[str]:
    """Host dirs to bind read-only so that these executables run inside: for each one outside /usr,
    its install prefix (the dir above its bin/, else its dir), for the path as named and its target."""
    out: list[str] = []
    for exe in executables:
        for p in dict.fromkeys((os.path.abspath(exe), os.path.realpath(exe))):
            d = os.path.dirname(p)
            if _under(os.path.realpath(d), "/usr") or any(_under(p, r) for r in out):
                continue
            pre = os.path.dirname(d) if os.path.basename(d) == "bin" else d
            out = [r for r in out if not _under(r, pre)] + [pre]
    return out


def reachable(path: str) -> bool:
    """Whether the programs' uid can reach and read `path` on the host (a dir bwrap binds, a tool)."""
    if os.geteuid() != 0:
        return os.access(path, os.R_OK)

    def may(p: str, bit: int) -> bool:  # nobody's permission bits on p (root's own test says yes to all)
        try:
            st = os.stat(p)
        except OSError:
            return False
        shift = 6 if st.st_uid == NOBODY else 3 if st.st_gid == NOBODY else 0
        return bool(st.st_mode & (bit << shift))

    real = os.path.realpath(path)
    parts = real.strip("/").split("/")
    dirs = ["/"] + ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
    return all(may(d, 1) for d in dirs) and may(real, 4) and may(path, 4)


def runnable(candidates) -> str | None:
    """The first of these executables (None entries skipped) that the programs' uid can run inside the
    sandbox: executable, readable, and its install prefix bindable; None when none is."""
    for c in candidates:
        if c and os.access(c, os.X_OK) and reachable(c) and all(reachable(r) for r in roots([c])):
            return c
    return None


def python() -> str | None:
    """A python3 sandboxed programs can run: the kit's own interpreter (its stdlib only), else the
    system's (a root kit's ~/.pyenv python is not readable by the programs' uid)."""
    return runnable((os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3"))


def _view(box: str, ro, limits: Limits) -> list[str]:
    """bwrap's filesystem arguments: the tree the program sees."""
    a = ["--tmpfs", "/", "--ro-bind", "/usr", "/usr", "--size", str(limits.tmp_mb << 20), "--tmpfs", "/tmp"]
    for d in _LINKS:
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    for p in (*_ETC, *ro):
        if os.path.exists(p) and not _under(p, "/usr"):
            a += ["--ro-bind", p, p]
    return a + ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--bind", box, BOX,
                "--remount-ro", "/", "--chdir", BOX]


@contextmanager
def box(prefix: str = "evalkit-box-"):
    """A fresh host dir for one program (bound at /box), owned by the programs' uid; removed after."""
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        os.chmod(d, 0o755)  # the uid (nobody) must reach it; what it writes there is nobody's
        if os.geteuid() == 0:
            os.chown(d, NOBODY, NOBODY)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------------------- running
def _tasks(uid: int) -> int:
    """Processes + threads of `uid` on the host: what RLIMIT_NPROC counts."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as f:
                    s = f.read()
            except OSError:
                continue
            u = re.search(r"^Uid:\s+(\d+)", s, re.MULTILINE)
            t = re.search(r"^Threads:\s+(\d+)", s, re.MULTILINE)
            if u and t and int(u[1]) == uid:
                n += int(t[1])
    return n


def _prlimit(prlimit: str, limits: Limits, nproc: int) -> list[str]:
    """prlimit (util-linux) setting the limits, then exec'ing bwrap: all inside inherit them. Never above
    a hard limit the kit has (nobody could not raise it); no Python between fork and exec."""
    cpu = int(limits.cpu_s if limits.cpu_s is not None else limits.wall_s + 2)
    want = {"nproc": nproc, "cpu": cpu, "core": 0, "fsize": limits.file_mb << 20, "nofile": 1024}
    if limits.memory_mb:
        want["as"] = limits.memory_mb << 20
    args = [prlimit]
    for name, v in want.items():
        hard = resource.getrlimit(getattr(resource, f"RLIMIT_{name.upper()}"))[1]
        v = v if hard == resource.RLIM_INFINITY else min(v, hard)
        args.append(f"--{name}={v}:{v}")
    return [*args, "--"]


_SETUP_TRIES = 6  # bwrap could not fork or make its namespaces (EAGAIN): tried again after 0.05, 0.1, ... 1.6 s
_SETUP_EAGAIN = re.compile(rb"\Abwrap: [^\n]*Resource temporarily unavailable\n?\Z")


def run(argv: list[str], box_dir: str, limits: Limits = Limits(), ro=(), env: dict | None = None) -> Result:
    """Run argv (cwd /box = box_dir) in a new sandbox; `ro`: host paths also bound read-only, at the
    same path (the roots() of its toolchain). Returns when everything it started is gone.

    When bwrap itself cannot fork or make the namespaces (EAGAIN: the uid's processes of programs that
    just ended are counted against RLIMIT_NPROC until the kernel frees them, which lags when hundreds
    of programs run in a row, e.g. 1,459 LiveCodeBench rows in 52 s), the program never started: it
    is run again, up to _SETUP_TRIES times, instead of being judged on bwrap's error."""
    for k in range(_SETUP_TRIES):
        r = _run_once(argv, box_dir, limits, ro, env)
        if r.stdout or not _SETUP_EAGAIN.match(r.stderr) or k == _SETUP_TRIES - 1:
            return r
        time.sleep(0.05 * 2 ** k)
    return r


def _run_once(argv: list[str], box_dir: str, limits: Limits, ro, env: dict | None) -> Result:
    global _active, _base_tasks
    uid = program_uid()
    with _lock:
        if not _active:
            _base_tasks = _tasks(uid)
        _active += 1
        nproc = _base_tasks + limits.tasks
    try:
        tools = [shutil.which(BWRAP), shutil.which(PRLIMIT)]
        if not all(tools):
            return Result(None, b"", b"", f"not run: no {BWRAP if not tools[0] else PRLIMIT} here")
        r_info, w_info = os.pipe()
        cmd = [*_prlimit(tools[1], limits, nproc), tools[0], "--unshare-all", "--unshare-user", "--disable-userns",
               "--die-with-parent", "--new-session", "--hostname", "box", *_view(box_dir, ro, limits),
               "--info-fd", str(w_info), "--", *argv]
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": BOX, "TMPDIR": "/tmp", "LANG": "C.UTF-8",
                   **(env or {})}
        drop = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
        try:  # the uid drop happens in the child before prlimit runs
            p = subprocess.Popen(cmd, cwd="/", env=environ, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, pass_fds=(w_info,), start_new_session=True, **drop)
        except OSError as e:
            os.close(r_info)
            return Result(None, b"", str(e).encode(), f"not run: {e}")
        finally:
            os.close(w_info)
        return _collect(p, r_info, limits)
    finally:
        with _lock:
            _active -= 1


def _sigkill(pidfd: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:  # gone already
        pass


def _collect(p: subprocess.Popen, r_info: int, limits: Limits) -> Result:
    """Read stdout/stderr (up to the cap) until the program ends or a limit is hit, then make sure
    the whole sandbox is gone."""
    out, err, info = bytearray(), bytearray(), bytearray()
    bufs = {p.stdout.fileno(): out, p.stderr.fileno(): err, r_info: info}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    deadline, killed, pidfd = time.monotonic() + limits.wall_s, "", None
    try:
        while sel.get_map() and not killed:
            left = deadline - time.monotonic()
            if left <= 0:
                killed = "timed out"
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                buf += chunk
                if key.fd == r_info and pidfd is None:  # {"child-pid": N}: bwrap's init, pid 1 inside
                    m = re.search(rb'"child-pid":\s*(\d+)', info)
                    if m:
                        try:
                            pidfd = os.pidfd_open(int(m[1]))
                        except OSError:
                            pass
                if len(buf) > limits.output_bytes:
                    del buf[limits.output_bytes:]
                    killed = f"output over {limits.output_bytes} bytes"
        if not killed:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed = "timed out"
        if killed:
            # Kill bwrap's init, pid 1 inside: the kernel kills the rest of its pid namespace. The process
            # group (the outer bwrap) is the fallback while the init is not known yet.
            if pidfd is not None:
                _sigkill(pidfd)
            try:
                p.wait(10 if pidfd is not None else 0)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)  # not reaped yet: the group id is still its
        p.wait()
        # The outer bwrap returns as soon as the program's main process ends; its init dies with it
        # (--die-with-parent) and the kernel then kills the rest of the pid namespace (a daemon that
        # let go of our pipes included). The init's pidfd turns readable only after all of that.
        if pidfd is not None and not select.select([pidfd], [], [], 10)[0]:
            _sigkill(pidfd)
            select.select([pidfd], [], [], 10)
    finally:
        sel.close()
        for fd in (r_info, pidfd):
            if fd is not None:
                os.close(fd)
        p.stdout.close()
        p.stderr.close()
    return Result(None if killed else p.returncode, bytes(out), bytes(err), killed)
