"""`python -m evalkit`: exit 1 means a scored FAIL and nothing else (errors.py lists the codes).

A Python without the kit's dependencies (the system one, or an env that lacks a model's
modules) gets one line naming the command that picks the right env, exit 2; any other
unexpected exception keeps its traceback but exits 2, never Python's default 1.
"""
import os
import sys
import traceback
from pathlib import Path

KIT = Path(__file__).resolve().parent.parent


def _missing_module(e: ImportError) -> str:
    name = e.name or str(e)
    env = os.environ.get("EVALKIT_ENV")
    if not env:  # not started by bin/evalkit: point at it
        return (f"this Python ({sys.executable}) lacks {name}: use {KIT}/bin/evalkit, which picks the kit's env")
    model = os.environ.get("EVALKIT_ENV_MODEL")
    build = (f"`cd {KIT} && DATA=synthetic scripts/build_{model}_env.sh` (the {model} env)"
             if model and (KIT / "scripts" / f"build_{model}_env.sh").is_file() else "")
    dev = f"`cd {KIT} && make dev` (the developer env: every model's dependencies)"
    return f"the env {env} (picked by bin/evalkit) lacks {name}: build {build + ' or ' if build else ''}{dev}"


def _external(e: ModuleNotFoundError) -> bool:
    """A third-party module (numpy, torch, transformers...), not one of the kit's own folders."""
    root = (e.name or "").split(".")[0]
    return bool(root) and not (KIT / root).exists()


def _run() -> int:
    try:
        from .cli import main
    except ImportError as e:
        print(f"error: {_missing_module(e)}", file=sys.stderr)
        return 2
    try:
        return main()
    except ModuleNotFoundError as e:  # a model's own dependency, imported when the model loads
        if not _external(e):
            traceback.print_exc()
        else:
            print(f"error: {_missing_module(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:  # a bug, not a verdict: keep the traceback, never the FAIL code 1
        traceback.print_exc()
        return 2


sys.exit(_run())
