"""MBXP pass rate: generated programs run against their tests in a sandbox.

What runs is what the Mixtral reference (`evaluate_mbxp.py` over mxeval) builds: the response
cut at the first "```", per-language clean-up (Python: lstrip; Go: package/imports/main
removed; Scala: object wrapper removed), "\\_" -> "_", then prompt-less `solution + test`
(Python: solution + "\\n" + test + "\\n" + f"check({entry_point})"). A problem passes when the
program (and its compile step) exits 0 within the time limit. Only the languages the reference
evaluates count (cpp, python, php, javascript, ruby, typescript); the others are skipped by
its rule, and a counted language whose toolchain is missing makes the result INCOMPLETE.

The sandbox (one per program, each in its own temp dir):
* a fresh user + mount + network namespace (`unshare`): no network (only a loopback that is
  down); every mount remounted read-only except the program's own dir, so a write outside
  it fails; all capabilities dropped before the program starts (it cannot remount);
* rlimits: address space (memory), CPU seconds, file size, no core files; node languages get
  V8's heap limit instead of an address-space limit (V8 reserves far more than it uses);
* wall-clock limit: the whole process group is killed.
Where unprivileged namespaces are not available, programs run with the rlimits and their own
dir only, and a warning says so once (README).
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

EVALUATED = ("cpp", "python", "php", "javascript", "ruby", "typescript")  # the reference's list
EXTENSION = {"cpp": ".cpp", "python": ".py", "php": ".php", "javascript": ".js", "ruby": ".rb", "typescript": ".ts",
             "go": ".go", "java": ".java", "kotlin": ".kt", "scala": ".scala", "swift": ".swift", "perl": ".pl",
             "csharp": ".cs"}
NODE_LANGS = ("javascript", "typescript")
COMPILE_TIMEOUT = 100.0  # mxeval's compile limit

# The jail: bind the program dir onto itself (its own rw mount), remount every other mount
# read-only, drop every capability, run. $1 = the dir, the rest = the command.
_JAIL = r'''
box="$1"; shift
mount --bind "$box" "$box" || exit 97
for m in $(awk '{print $2}' /proc/self/mounts); do
  [ "$m" = "$box" ] || mount -o remount,bind,ro "$m" 2>/dev/null || true
done
cd "$box" || exit 97
exec setpriv --no-new-privs --bounding-set -all --inh-caps -all -- "$@"
'''
_isolation: bool | None = None


def isolation_available() -> bool:
    """Whether the namespace jail works here (probed once)."""
    global _isolation
    if _isolation is None:
        ok = bool(shutil.which("unshare") and shutil.which("setpriv"))
        if ok:
            d = tempfile.mkdtemp(prefix="evalkit-mbxp-probe-")
            try:
                cp = subprocess.run(_jail_argv(d, ["true"]), capture_output=True, timeout=30)
                ok = cp.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            finally:
                shutil.rmtree(d, ignore_errors=True)
        if not ok:
            print("warning: MBXP programs run without network/filesystem isolation (unshare of user, mount and "
                  "network namespaces is not available here); only their time and memory are limited",
                  file=sys.stderr)
        _isolation = ok
    return _isolation


def _jail_argv(box: str, argv: list[str]) -> list[str]:
    return ["unshare", "--user", "--map-root-user", "--mount", "--net", "--", "sh", "-c", _JAIL, "jail", box, *argv]


def toolchain(lang: str) -> list[str] | None:
    """Executables a language needs; None when one is missing here."""
    need = {"python": [sys.executable], "cpp": ["g++"], "javascript": ["node"], "typescript": ["tsc", "node"],
            "php": ["php"], "ruby": ["ruby"]}.get(lang)
    if need is None:
        return None
    found = [n if os.path.isabs(n) and os.access(n, os.X_OK) else shutil.which(n) for n in need]
    return None if not all(found) else found


def missing_toolchains(langs) -> dict[str, str]:
    """{language: what is missing} for the counted languages among `langs`."""
    names = {"cpp": "g++", "javascript": "node", "typescript": "tsc + node", "php": "php", "ruby": "ruby",
             "python": "python"}
    return {lang: names[lang] for lang in sorted(set(langs)) if lang in EVALUATED and toolchain(lang) is None}


# --------------------------------------------------------------------------------------- programs
def _golang(code: str) -> str:
    code = code.replace("package main", "")
    code = re.sub(r"^import \(\n(.+)((?:\n.+)+)\n\)", "", code, flags=re.MULTILINE)
    code = re.sub(r"^import \".*\"", "", code)
    return re.sub(r"^func main.*^}", "", code, flags=re.MULTILINE | re.DOTALL)


def _scala(code: str) -> str:
    code = code.replace("object Main extends App {", "")
    return "".join(code.splitlines(True)[:-1])


def solution(lang: str, response: str) -> str:
    """The response as the reference turns it into code."""
    cut = response.find("```")
    code = response if cut < 0 else response[:cut]
    if lang == "go":
        code = _golang(code)
    elif lang == "python":
        code = code.lstrip()
    elif lang == "scala":
        code = _scala(code)
    return code.replace("\\_", "_")


def program(lang: str, response: str, test: str, entry_point: str) -> str:
    code = solution(lang, response)
    if lang == "python":
        return code + "\n" + test + "\n" + f"check({entry_point})"
    return code + test


@dataclass
class Limits:
    timeout: float = 20.0       # seconds per run (the reference's)
    memory_mb: int = 2048


def _limit(memory_mb: int | None, cpu_s: float):
    def apply():
        if memory_mb:
            b = memory_mb << 20
            resource.setrlimit(resource.RLIMIT_AS, (b, b))
        cpu = int(cpu_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _run(box: str, argv: list[str], timeout: float, memory_mb: int | None, isolate: bool) -> tuple[int | None, str]:
    """(exit code or None on timeout, stderr tail) of argv in `box`."""
    cmd = _jail_argv(box, argv) if isolate else argv
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": box, "TMPDIR": box, "LANG": "C.UTF-8"}
    p = subprocess.Popen(cmd, cwd=box, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_limit(memory_mb, timeout))
    try:
        _, err = p.communicate(timeout=timeout)
        return p.returncode, err.decode(errors="replace")[-500:]
    except subprocess.TimeoutExpired:
        return None, "timed out"
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the program's children too, also after a normal exit
        except ProcessLookupError:
            pass
        p.wait()


def run_program(lang: str, code: str, limits: Limits = Limits(), isolate: bool | None = None) -> tuple[bool, str]:
    """Compile (where the language does) and run one program in the sandbox: (passed, why)."""
    tools = toolchain(lang)
    if tools is None:
        return False, f"no {lang} toolchain"
    if isolate is None:
        isolate = isolation_available()
    box = tempfile.mkdtemp(prefix=f"evalkit-mbxp-{lang}-")
    try:
        src = "main" + EXTENSION[lang]
        with open(os.path.join(box, src), "w") as f:
            f.write(code)
        mem = None if lang in NODE_LANGS else limits.memory_mb
        node = [tools[-1], f"--max-old-space-size={limits.memory_mb}"] if lang in NODE_LANGS else None
        steps: list[tuple[list[str], float]] = []
        if lang == "python":
            steps = [([tools[0], "-I", src], limits.timeout)]
        elif lang == "cpp":
            steps = [([tools[0], src, "-o", "main_cpp"], COMPILE_TIMEOUT), (["./main_cpp"], limits.timeout)]
        elif lang == "javascript":
            steps = [(node + [src], limits.timeout)]
        elif lang == "typescript":
            steps = [([tools[0], src, "--target", "es5", "--lib", "es2016"], COMPILE_TIMEOUT),
                     (node + ["main.js"], limits.timeout)]
        else:  # php, ruby
            steps = [([tools[0], src], limits.timeout)]
        for i, (argv, t) in enumerate(steps):
            rc, err = _run(box, argv, t, mem, isolate)
            compile_step = i < len(steps) - 1
            if lang == "typescript" and compile_step:
                # tsc exits 2 when it reports type errors but still writes the JS (mxeval runs it then)
                if not os.path.exists(os.path.join(box, "main.js")):
                    return False, f"compile failed: {err}"
                continue
            if rc != 0:
                return False, ("compile failed: " if compile_step else "") + (err or f"exit {rc}")
        return True, "passed"
    finally:
        shutil.rmtree(box, ignore_errors=True)


def evaluate(problems: list[dict], workers: int = 0, limits: Limits = Limits()) -> dict:
    """problems: {lang, response, test, entry_point}. Returns {"pass_rate", "passed", "counted",
    "skipped": {lang: n}, "by_lang": {lang: [passed, total]}}; languages outside EVALUATED are
    skipped as the reference does. The caller checks missing_toolchains first."""
    counted = [p for p in problems if p["lang"] in EVALUATED]
    skipped: dict[str, int] = {}
    for p in problems:
        if p["lang"] not in EVALUATED:
            skipped[p["lang"]] = skipped.get(p["lang"], 0) + 1
    if not workers:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    isolation_available()  # probe (and warn) once, before the pool

    def one(p):
        return run_program(p["lang"], program(p["lang"], p["response"], p["test"], p["entry_point"]), limits)[0]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, counted))
    by_lang: dict[str, list[int]] = {}
    for p, ok in zip(counted, results):
        s = by_lang.setdefault(p["lang"], [0, 0])
        s[0] += int(ok)
        s[1] += 1
    passed = sum(results)
    return {"pass_rate": 100.0 * passed / len(counted) if counted else 0.0, "passed": passed,
            "counted": len(counted), "skipped": skipped, "by_lang": by_lang}
