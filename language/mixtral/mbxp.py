"""MBXP pass rate: generated programs run against their tests in a sandbox.

What runs is what the Mixtral reference (`evaluate_mbxp.py` over mxeval) builds: the response
cut at the first "```", per-language clean-up (Python: lstrip; Go: package/imports/main
removed; Scala: object wrapper removed), "\\_" -> "_", then prompt-less `solution + test`
(Python: solution + "\\n" + test + "\\n" + f"check({entry_point})"). A problem passes when the
program (and its compile step) exits 0 within the time limit. Only the languages the reference
evaluates count (cpp, python, php, javascript, ruby, typescript); the others are skipped by
its rule, and a counted language whose toolchain is missing makes the result INCOMPLETE.

Each program runs in the kit's sandbox (evalkit/sandbox.py: bubblewrap namespaces, a private
read-only filesystem with the program's own dir, nobody's uid under root, process / memory / CPU /
file-size / output / wall limits), each step (compile, run) in a fresh one. Node languages get
V8's heap limit instead of an address-space limit (V8 reserves far more than it uses). Without a
working bwrap no program runs: incomplete() says so and `check` reports INCOMPLETE.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from evalkit import sandbox
from evalkit.errors import KitError

EVALUATED = ("cpp", "python", "php", "javascript", "ruby", "typescript")  # the reference's list
EXTENSION = {"cpp": ".cpp", "python": ".py", "php": ".php", "javascript": ".js", "ruby": ".rb", "typescript": ".ts",
             "go": ".go", "java": ".java", "kotlin": ".kt", "scala": ".scala", "swift": ".swift", "perl": ".pl",
             "csharp": ".cs"}
NODE_LANGS = ("javascript", "typescript")
COMPILE_TIMEOUT = 100.0  # mxeval's compile limit

TASKS = 64  # processes + threads per program at once (measured peaks with bwrap's: python 6, cpp 12, node 14)
_NEED = {"python": ["python3"], "cpp": ["g++"], "javascript": ["node"], "typescript": ["tsc", "node"], "php": ["php"],
         "ruby": ["ruby"]}
_ETC = {"php": ["/etc/php"]}  # config a toolchain reads from /etc (php: the ini files that load its extensions)


def toolchain(lang: str) -> list[str] | None:
    """Executables a language needs, as host paths the sandbox can bind; None when one is missing here
    or unreadable by the programs' uid. Python: the kit's own interpreter (its stdlib only), else a python3
    the uid can read (a root kit's ~/.pyenv python is not)."""
    need = _NEED.get(lang)
    if need is None:
        return None
    found = []
    for n in need:
        cands = [shutil.which(n)]
        if lang == "python":
            cands = [os.path.realpath(sys.executable), *cands, "/usr/bin/python3"]
        ok = [c for c in cands if c and os.access(c, os.X_OK) and sandbox.reachable(c)
              and all(sandbox.reachable(r) for r in sandbox.roots([c]))]
        if not ok:
            return None
        found.append(ok[0])
    return found


def missing_toolchains(langs) -> dict[str, str]:
    """{language: what is missing} for the counted languages among `langs`."""
    names = {"cpp": "g++", "javascript": "node", "typescript": "tsc + node", "php": "php", "ruby": "ruby",
             "python": "python"}
    return {lang: names[lang] for lang in sorted(set(langs)) if lang in EVALUATED and toolchain(lang) is None}


def incomplete(langs) -> str | None:
    """Why the counted programs among `langs` cannot all run here (one line, after `MBXP INCOMPLETE: `), or None."""
    langs = [lang for lang in langs if lang in EVALUATED]
    if not langs:
        return None
    why = sandbox.unavailable()
    if why:
        return (f"{len(langs)} program(s) not run: {why}, then rerun `evalkit check` (no program runs outside the "
                "sandbox); the pass rate cannot be computed, so there is no PASS.")
    missing = missing_toolchains(langs)
    if not missing:
        return None
    counts = {lang: langs.count(lang) for lang in missing}
    uid = sandbox.program_uid()
    unreadable = "" if uid == os.getuid() else f", or not readable by uid {uid}"
    return (", ".join(f"{counts[k]} {k} program(s) need {v}" for k, v in missing.items())
            + f" (not installed{unreadable}); the pass rate cannot be computed, so there is no PASS. Install the "
            "toolchains (README, Mixtral) and rerun `evalkit check`.")


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


@dataclass(frozen=True)
class Limits:
    timeout: float = 20.0       # seconds per run (the reference's)
    memory_mb: int = 2048
    tasks: int = TASKS          # processes + threads of all programs running at once (evaluate: TASKS per worker)


def run_program(lang: str, code: str, limits: Limits = Limits()) -> tuple[bool, str]:
    """Compile (where the language does) and run one program, each step in a fresh sandbox: (passed, why)."""
    tools = toolchain(lang)
    if tools is None:
        return False, f"no {lang} toolchain"
    why = sandbox.unavailable()
    if why:
        return False, f"not run: {why}"
    ro = sandbox.roots(tools) + [p for p in _ETC.get(lang, []) if os.path.exists(p)]
    with sandbox.box(f"evalkit-mbxp-{lang}-") as box:
        src = "main" + EXTENSION[lang]
        with open(os.path.join(box, src), "w") as f:
            f.write(code)
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
            mem = None if lang in NODE_LANGS else limits.memory_mb
            r = sandbox.run(argv, box, sandbox.Limits(wall_s=t, memory_mb=mem, tasks=limits.tasks), ro=ro)
            err = r.killed or r.stderr.decode(errors="replace")[-500:]
            compile_step = i < len(steps) - 1
            if lang == "typescript" and compile_step:
                # tsc exits 2 when it reports type errors but still writes the JS (mxeval runs it then)
                if not os.path.lexists(os.path.join(box, "main.js")):
                    return False, f"compile failed: {err}"
                continue
            if not r.ok:
                return False, ("compile failed: " if compile_step else "") + (err or f"exit {r.rc}")
        return True, "passed"


def evaluate(problems: list[dict], workers: int = 0, limits: Limits = Limits()) -> dict:
    """problems: {lang, response, test, entry_point}. Returns {"pass_rate", "passed", "counted",
    "skipped": {lang: n}, "by_lang": {lang: [passed, total]}}; languages outside EVALUATED are
    skipped as the reference does. The caller checks incomplete() first."""
    counted = [p for p in problems if p["lang"] in EVALUATED]
    skipped: dict[str, int] = {}
    for p in problems:
        if p["lang"] not in EVALUATED:
            skipped[p["lang"]] = skipped.get(p["lang"], 0) + 1
    if not workers:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, workers)
    why = incomplete(p["lang"] for p in counted)
    if why:  # callers check first; never a pass rate with programs left unrun
        raise KitError("MBXP INCOMPLETE: " + why)
    limits = replace(limits, tasks=limits.tasks * workers)  # RLIMIT_NPROC counts them all (one uid)

    def one(p):
        return run_program(p["lang"], program(p["lang"], p["response"], p["test"], p["entry_point"]), limits)[0]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, counted))
    by_lang: dict[str, list[int]] = {}
    for p, ok in zip(counted, results):
        s = by_lang.setdefault(p["lang"], [0, 0])
        s[0] += int(ok)
        s[1] += 1
    passed = sum(results)
    return {"pass_rate": 100.0 * passed / len(counted) if counted else 0.0, "passed": passed,
            "counted": len(counted), "skipped": skipped, "by_lang": by_lang}
