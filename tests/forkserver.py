"""A fork server for `python -m evalkit` in tests: one process imports the heavy libraries once, and
each command runs in a forked child of it, as a fresh `python -m evalkit` would (the kit's own modules
imported afresh, its own cwd, environment, stdout and stderr files, exit code). It saves a process
start and torch/transformers imports per command; what the command does is unchanged."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# -----------------------------------------------------------------------------
SERVER = r'''
import importlib, json, os, runpy, signal, sys, traceback
root = os.path.realpath(sys.argv[1])
import evalkit.cli  # first: it sets the HF environment the libraries read when they import
for m in ("numpy", "torch", "mlperf_loadgen", "safetensors.torch", "transformers", "diffusers", "PIL.Image",
          "soundfile", "pandas", "pyarrow.parquet", "nibabel", "scipy.linalg", "tokenizers", "cv2"):
    try:
        importlib.import_module(m)
    except Exception:
        pass
# the kit's own modules are imported afresh by each child, as `python -m evalkit` does
for name, mod in list(sys.modules.items()):
    f = os.path.realpath(getattr(mod, "__file__", None) or "/")
    if f.startswith(root + os.sep) and not f.startswith(os.path.realpath(sys.prefix) + os.sep):
        del sys.modules[name]
out = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
requests = os.fdopen(os.dup(0))
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
def kit_module(name):
    top = name.split(".")[0]
    return os.path.isdir(os.path.join(root, top)) or os.path.isfile(os.path.join(root, top + ".py"))
out.write("ready\n"); out.flush()
for line in requests:
    req = json.loads(line)
    if "preimport" in req:  # what a model's clean run imported: its children start with it loaded
        for name in req["preimport"]:
            if name not in sys.modules and not kit_module(name) and name not in ("__main__", "conftest"):
                try:
                    importlib.import_module(name)
                except BaseException:
                    pass
        out.write(json.dumps({"rc": 0}) + "\n"); out.flush()
        continue
    pid = os.fork()
    if pid == 0:
        code = 120
        try:
            requests.close(); out.close()
            os.chdir(req["cwd"])
            os.environ.clear(); os.environ.update(req["env"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                os.dup2(os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
            signal.alarm(req["timeout"])
            sys.argv = ["evalkit", *req["args"]]
            try:
                runpy.run_module("evalkit", run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
                if req.get("modules_out"):
                    with open(req["modules_out"], "w") as f:
                        f.write("\n".join(sorted(sys.modules)))
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n"); out.flush()
'''


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class Server:
    def __init__(self, env: dict, scratch: Path, timeout: int = 600):
        self.env, self.scratch, self.n, self.timeout = env, scratch, 0, timeout
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT)], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the fork server did not start")

    def _ask(self, req: dict) -> int:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["rc"]

    def evalkit(self, *args, timeout: int | None = None, warm: bool = False) -> Result:
        """`python -m evalkit ARGS` in a forked child. warm: afterwards the server imports what that
        run imported (third-party modules only), so later children start with them loaded."""
        self.n += 1
        out, err = self.scratch / f"{self.n}.out", self.scratch / f"{self.n}.err"
        mods = self.scratch / f"{self.n}.modules"
        rc = self._ask({"args": [str(a) for a in args], "cwd": str(ROOT), "env": self.env, "timeout": timeout or self.timeout,
                        "stdout": str(out), "stderr": str(err), "modules_out": str(mods) if warm else None})
        if warm and mods.is_file():
            self._ask({"preimport": mods.read_text().split()})
        return Result(rc, out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(60)
