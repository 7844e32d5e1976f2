"""Several `evalkit` commands in ONE interpreter, each through the CLI's own entry point (evalkit.cli.main).

A launch of one partition on one device runs in the launching process anyway (launcher.run_local), so
`evalkit_each([run p0, run p1, ...])` goes down the code path of the separate commands, paying the
interpreter start and the torch import once instead of once per command: for tests whose point is what
the runs leave behind (gather's partition order, a damaged partition, a report's rows), not the launch.
Every launch path (workers, resume, torchrun, Slurm) keeps its own tests with one process per command.
"""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT, kit_env

_EACH = """
import json, sys
from evalkit.cli import main
for argv in json.loads(sys.argv[1]):
    rc = main(argv)
    if rc:
        sys.exit(f"evalkit {' '.join(argv)}: exit {rc}")
"""


def evalkit_each(*argvs, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `evalkit ARGV` for each ARGV in order, in one Python; stop at the first non-zero exit (raised)."""
    cp = subprocess.run([sys.executable, "-c", _EACH, json.dumps([[str(a) for a in argv] for argv in argvs])],
                        cwd=ROOT, env=kit_env(), capture_output=True, text=True, timeout=timeout)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    return cp
