"""Runs one MBXP Python program the way mxeval's `check_correctness` judges it, inside the kit's sandbox.

The kit copies this file into the program's sandbox dir next to `main.py` (the program text: solution,
test, `check(entry_point)`) and a one-time `verdict.key`, and runs `python -I mxeval_runner.py SECONDS`.
What mxeval does, and so what this does:
* the text is exec'ed with a fresh globals dict: `__name__` is not "__main__", so a
  `if __name__ == "__main__":` block never runs;
* before that, its reliability guard: `exit`, `quit` and `help` are None, the os functions that kill,
  fork, remove, rename, chmod/chown or change/read the working dir are None, `shutil.rmtree/move/chown`
  and `subprocess.Popen` are None, `resource`, `psutil`, `joblib`, `ipdb` and `tkinter` cannot be
  imported, faulthandler is off, OMP_NUM_THREADS=1;
* stdout and stderr go to a write-only buffer that is also stdin (`input()` raises);
* a SIGALRM timer of SECONDS raises a timeout inside the program;
* the verdict: "passed" when exec returns, "timed out" on the timer, "failed: <exception>" on any
  BaseException (SystemExit from `sys.exit(0)` included); a process that dies without a verdict
  (`os._exit`, a crash, the sandbox's wall limit) is not a pass.
The verdict goes to the original stdout, on one line that starts with the key read from `verdict.key`
(removed before the program runs), so that nothing the program prints reads as a verdict.
"""
import builtins
import faulthandler
import io
import os
import signal
import sys

KEY_FILE = "verdict.key"
PROGRAM = "main.py"

# What mxeval's reliability_guard sets to None (mxeval/execution.py), by module.
GUARD = {
    "os": ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
           "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
           "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"),
    "shutil": ("rmtree", "move", "chown"),
    "subprocess": ("Popen",),
    "builtins": ("exit", "quit", "help"),
}
NO_IMPORT = ("ipdb", "joblib", "resource", "psutil", "tkinter")


class TimedOut(Exception):
    pass


class WriteOnly(io.StringIO):
    """Takes the program's output; reading from it raises (mxeval's WriteOnlyStringIO)."""

    def read(self, *args, **kwargs):
        raise OSError

    def readline(self, *args, **kwargs):
        raise OSError

    def readlines(self, *args, **kwargs):
        raise OSError

    def readable(self, *args, **kwargs):
        return False


def guard() -> None:
    import shutil
    import subprocess

    faulthandler.disable()
    os.environ["OMP_NUM_THREADS"] = "1"
    mods = {"os": os, "shutil": shutil, "subprocess": subprocess, "builtins": builtins}
    for mod, names in GUARD.items():
        for name in names:
            setattr(mods[mod], name, None)
    for name in NO_IMPORT:
        sys.modules[name] = None


def main() -> None:
    seconds = float(sys.argv[1])
    with open(KEY_FILE) as f:
        key = f.read().strip()
    os.unlink(KEY_FILE)
    with open(PROGRAM) as f:
        text = f.read()
    out = os.dup(1)
    sys.argv = [PROGRAM]

    def on_alarm(signum, frame):
        raise TimedOut()

    guard()
    sink = WriteOnly()
    sys.stdout = sys.stderr = sys.stdin = sink
    try:
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            exec(text, {})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        verdict = "passed"
    except TimedOut:
        verdict = "timed out"
    except BaseException as e:  # noqa: B036 - mxeval counts every exception, SystemExit included, as a failure
        verdict = f"failed: {type(e).__name__}: {e}"
    os.write(out, f"{key} {verdict}".replace("\n", " ").encode(errors="replace")[:4000] + b"\n")
    os._exit(0)  # threads the program left running do not matter (mxeval's verdict is already taken)


if __name__ == "__main__":
    main()
