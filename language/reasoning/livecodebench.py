"""LiveCodeBench: the extracted programs run against their problems' tests, only in the kit's
sandbox (evalkit/sandbox.py), with the reference's limits: 60 s per test (the references call
LiveCodeBench with timeout=60), the whole program (timeout + 1) x tests + 5 s (LCB's own bound).

Tests: LiveCodeBench's code_generation_lite release file, `livecodebench/test.jsonl` in the dataset
dir (the release the model's reference loads: DeepSeek-R1 release_v1, gpt-oss-120b release_v6): one problem per line with question_id,
public_test_cases (JSON list of {input, output, testtype}), private_test_cases (the same list as
JSON, or base64 of zlib of a pickled JSON string: read by evalkit/safeload with nothing allowed
but plain values) and metadata (JSON; func_name for call-based problems). The row's ground_truth
is its question_id. Without a sandbox or a python3 it can run, nothing runs: the caller reports
LiveCodeBench INCOMPLETE and there is no PASS."""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evalkit import sandbox
from evalkit.errors import KitError

TESTS = Path("livecodebench") / "test.jsonl"
TIMEOUT_S = 60            # per test (reference: timeout=60)
RUNNER = Path(__file__).with_name("lcb_runner.py")
MEMORY_MB = 4096
TASKS = 16


def _private(text: str, where: str) -> list:
    try:
        return json.loads(text)
    except ValueError:
        pass
    from evalkit import safeload

    try:
        raw = zlib.decompress(base64.b64decode(text.encode("utf-8")))
    except (ValueError, zlib.error) as e:
        raise KitError(f"{where}: private_test_cases is neither JSON nor base64-zlib ({e})") from None
    inner = safeload.loads(raw, safeload.AllowList("LiveCodeBench test cases", {}), source=where)
    if not isinstance(inner, str):
        raise KitError(f"{where}: private_test_cases unpickles to {type(inner).__name__}, not a JSON string")
    try:
        return json.loads(inner)
    except ValueError as e:
        raise KitError(f"{where}: private_test_cases is not JSON ({e})") from None


def load_problems(dataset_dir: Path, wanted: set[str]) -> dict[str, dict]:
    """question_id -> {"tests": [{input, output}], "func_name": str | None} for the wanted ids."""
    f = Path(dataset_dir) / TESTS
    if not f.is_file():
        raise KitError(f"{f} not found: LiveCodeBench rows need the problems' tests (code_generation_lite "
                       f"release test.jsonl) in the dataset dir")
    out: dict[str, dict] = {}
    try:
        _read(f, wanted, out)
    except UnicodeDecodeError as e:
        raise KitError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start}); it is not the LiveCodeBench release") from None
    return out


def _read(f: Path, wanted: set[str], out: dict) -> None:
    with open(f, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{f} line {n}"
            try:
                row = json.loads(line)
                qid = str(row["question_id"])
            except (ValueError, KeyError, TypeError) as e:
                raise KitError(f"{where}: not a LiveCodeBench problem ({type(e).__name__}: {e})") from None
            if qid not in wanted:
                continue
            try:
                tests = json.loads(row["public_test_cases"]) + _private(row["private_test_cases"], where)
                meta = json.loads(row.get("metadata") or "{}")
                tests = [{"input": str(t["input"]), "output": str(t["output"])} for t in tests]
            except (ValueError, KeyError, TypeError) as e:
                raise KitError(f"{where} ({qid}): bad test cases ({type(e).__name__}: {e})") from None
            if not tests:
                raise KitError(f"{where} ({qid}): no test cases")
            out[qid] = {"tests": tests, "func_name": meta.get("func_name")}


def incomplete(n: int) -> str | None:
    """Why n programs cannot run here (one line), or None."""
    if not n:
        return None
    why = sandbox.unavailable()
    if why:
        return f"{n} program(s) not run: {why}; no program runs outside the sandbox, so there is no PASS"
    if sandbox.python() is None:
        return f"{n} program(s) not run: no python3 the sandbox's uid can read; there is no PASS"
    return None


def run_one(code: str, problem: dict, timeout: int = TIMEOUT_S, tasks: int = TASKS) -> tuple[bool, str]:
    exe = sandbox.python()
    if exe is None:
        return False, "no python3"
    with sandbox.box("evalkit-lcb-") as box:
        key = secrets.token_hex(16)
        for name, text in (("verdict.key", key), ("problem.json", json.dumps({"code": code, **problem}))):
            with open(os.path.join(box, name), "w") as f:
                f.write(text)
        shutil.copyfile(RUNNER, os.path.join(box, "lcb_runner.py"))
        wall = (timeout + 1) * len(problem["tests"]) + 5
        r = sandbox.run([exe, "-I", "lcb_runner.py", str(timeout)], box,
                        sandbox.Limits(wall_s=wall, memory_mb=MEMORY_MB, tasks=tasks, cpu_s=wall), ro=sandbox.roots([exe]))
    for line in r.stdout.decode(errors="replace").splitlines()[::-1]:
        if line.startswith(key + " "):
            verdict = line[len(key) + 1:]
            return verdict == "passed", verdict
    return False, r.killed or r.stderr.decode(errors="replace")[-300:] or f"exit {r.rc} without a verdict"


def evaluate(items: list[tuple[str | None, str]], dataset_dir: Path, workers: int = 0) -> list[bool]:
    """items: (extracted code or None, question_id) -> passed, in order. KitError 'LiveCodeBench
    INCOMPLETE' when programs cannot run here."""
    runnable = [(c, q) for c, q in items if c]
    why = incomplete(len(runnable))
    if why:
        raise KitError("LiveCodeBench INCOMPLETE: " + why)
    problems = load_problems(Path(dataset_dir), {str(q) for _, q in runnable})
    workers = max(1, workers or len(os.sched_getaffinity(0)))

    def one(item):
        code, qid = item
        if not code or str(qid) not in problems:  # the reference: an unknown question_id is wrong
            return False
        return run_one(code, problems[str(qid)], tasks=TASKS * workers)[0]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, items))
