"""MBXP pass rate: generated programs run against their tests in a sandbox.

What runs is what the Mixtral reference (`evaluate_mbxp.py` over mxeval) builds: the response
cut at the first "```", per-language clean-up (Python: lstrip; Go: package/imports/main
removed; Scala: object wrapper removed), "\\_" -> "_", then prompt-less `solution + test`
(Python: solution + "\\n" + test + "\\n" + f"check({entry_point})"). It is judged as mxeval
judges it: Python is exec'ed (no `__name__ == "__main__"`) under mxeval's reliability guard
(mxeval_runner.py: `exit`, `quit`, os.getcwd/remove/kill... disabled; `sys.exit(0)` is a failure);
TypeScript counts as compiled only when tsc exits with exactly 2; every other step passes when it
exits 0 within its time limit. Only the languages the reference evaluates count (cpp, python, php,
javascript, ruby, typescript); the others are skipped by its rule, and a counted language whose
toolchain is missing makes the result INCOMPLETE. The node languages need the pinned npm packages
(NODE_PACKAGES: lodash for JavaScript's tests, typescript's tsc) in <env>/mbxp-node, which the
Mixtral env build and `make test` install (`python -m language.mixtral.mbxp install-node`).

Each program runs in the kit's sandbox (evalkit/sandbox.py: bubblewrap namespaces, a private
read-only filesystem with the program's own dir, nobody's uid under root, process / memory / CPU /
file-size / output / wall limits), each step (compile, run) in a fresh one. Node languages get
V8's heap limit instead of an address-space limit (V8 reserves far more than it uses). Without a
working bwrap no program runs: incomplete() says so and `check` reports INCOMPLETE.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
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
_NEED = {"python": ["python3"], "cpp": ["g++"], "javascript": ["node"], "typescript": ["node"], "php": ["php"],
         "ruby": ["ruby"]}
# npm packages the node languages need, pinned; the reference's setup (mxeval language_setup/ubuntu.sh) installs
# them unpinned (lodash: every JavaScript test starts with `const _ = require("lodash")`; TypeScript: tsc).
NODE_PACKAGES = {"lodash": "4.17.21", "typescript": "5.5.4"}
_NODE_NEED = {"javascript": ("lodash",), "typescript": ("typescript",)}
NODE_DIR = "mbxp-node"  # under the prefix of the env that runs the kit: <env>/mbxp-node/node_modules/<package>
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mxeval_runner.py")  # Python: mxeval's judging
_ETC = {"php": ["/etc/php"]}  # config a toolchain reads from /etc (php: the ini files that load its extensions)


def toolchain(lang: str) -> list[str] | None:
    """Executables a language needs, as host paths the sandbox can bind; None when one is missing here
    or unreadable by the programs' uid. Python: the kit's own interpreter (its stdlib only), else a python3
    the uid can read (a root kit's ~/.pyenv python is not)."""
    need = _NEED.get(lang)
    if need is None:
        return None
    found = [sandbox.python() if n == "python3" else sandbox.runnable([shutil.which(n)]) for n in need]
    return None if None in found else found


def node_dir(prefix: str | None = None) -> str:
    """Where the kit's npm packages live: <env prefix>/mbxp-node, the env that runs the kit (its build and
    `make test` fill it: install_node_packages)."""
    return os.path.join(prefix or sys.prefix, NODE_DIR)


def node_package(name: str, prefix: str | None = None) -> str | None:
    """The dir of the pinned npm package `name` when that version is installed and the programs' uid can
    read it, else None."""
    d = os.path.join(node_dir(prefix), "node_modules", name)
    try:
        with open(os.path.join(d, "package.json")) as f:
            version = json.load(f).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    ok = version == NODE_PACKAGES[name] and sandbox.reachable(d) and sandbox.reachable(os.path.join(d, "package.json"))
    return d if ok else None


def node_install_command(prefix: str | None = None) -> str:
    """The one command that installs the pinned npm packages where the kit looks for them."""
    pkgs = " ".join(f"{k}@{v}" for k, v in NODE_PACKAGES.items())
    return f"npm install --prefix {shlex.quote(node_dir(prefix))} --no-audit --no-fund {pkgs}"


def install_node_packages(prefix: str | None = None) -> str:
    """Install the pinned npm packages (NODE_PACKAGES) into node_dir(prefix) unless they are there; the
    Mixtral env build and `make test` run this. Returns what it did (one line); KitError when npm fails."""
    import subprocess

    missing = [k for k in NODE_PACKAGES if node_package(k, prefix) is None]
    if not missing:
        return f"npm packages {', '.join(NODE_PACKAGES)} are in {node_dir(prefix)}"
    if not shutil.which("npm"):
        raise KitError(f"npm is not installed; install it with `{_npm_hint()}`, then `{node_install_command(prefix)}`")
    cp = subprocess.run(shlex.split(node_install_command(prefix)) + ["--loglevel=error"], capture_output=True,
                        text=True)
    if cp.returncode != 0:
        raise KitError(f"`{node_install_command(prefix)}` failed: {(cp.stderr.strip().splitlines() or ['?'])[-1]}")
    still = [k for k in NODE_PACKAGES if node_package(k, prefix) is None]
    if still:
        uid = sandbox.program_uid()
        raise KitError(f"{', '.join(still)} installed in {node_dir(prefix)} but not readable by uid {uid} (the MBXP "
                       "programs' uid): put the env where every user can read it")
    return f"installed {', '.join(f'{k}@{v}' for k, v in NODE_PACKAGES.items())} into {node_dir(prefix)}"


def _npm_hint() -> str:
    return ("" if os.geteuid() == 0 else "sudo ") + "apt-get install -y npm"


def missing_toolchains(langs) -> dict[str, str]:
    """{language: what is missing} for the counted languages among `langs`."""
    names = {"cpp": "g++", "javascript": "node", "typescript": "node", "php": "php", "ruby": "ruby",
             "python": "python"}
    out = {}
    for lang in sorted(set(langs)):
        if lang not in EVALUATED:
            continue
        need = [names[lang]] if toolchain(lang) is None else []
        need += [f"{k} {NODE_PACKAGES[k]}" for k in _NODE_NEED.get(lang, ()) if node_package(k) is None]
        if need:
            out[lang] = " + ".join(need)
    return out


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
    npm = any(k in v for v in missing.values() for k in NODE_PACKAGES)
    how = "Install the toolchains (README, Mixtral)"
    if npm:  # the pinned npm packages: one command, pasted as is
        cmd = node_install_command()
        how += f"; the npm packages with `{cmd if shutil.which('npm') else _npm_hint() + ' && ' + cmd}`"
    return (", ".join(f"{counts[k]} {k} program(s) need {v}" for k, v in missing.items())
            + f" (not installed{unreadable}); the pass rate cannot be computed, so there is no PASS. {how} and "
            "rerun `evalkit check`.")


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


def _python_verdict(r, key: str) -> tuple[bool, str]:
    """mxeval's verdict from the runner's keyed stdout line; no line (os._exit, a crash, the wall limit): no pass."""
    for line in r.stdout.decode(errors="replace").splitlines():
        if line.startswith(key + " "):
            verdict = line[len(key) + 1:]
            return verdict == "passed", verdict
    return False, r.killed or (r.stderr.decode(errors="replace")[-500:] or f"exit {r.rc} without a verdict")


def run_program(lang: str, code: str, limits: Limits = Limits()) -> tuple[bool, str]:
    """Compile (where the language does) and run one program, each step in a fresh sandbox: (passed, why),
    judged as mxeval judges it: Python exec'ed by mxeval_runner.py under mxeval's reliability guard;
    TypeScript compiled only when tsc exits with exactly 2 (mxeval's rule: its programs never type-check
    without node's type declarations, and tsc exits 2 when it reports errors but writes the JS); the rest
    pass when every step exits 0 within its time limit."""
    tools = toolchain(lang)
    if tools is None:
        return False, f"no {lang} toolchain"
    pkgs = {k: node_package(k) for k in _NODE_NEED.get(lang, ())}
    if None in pkgs.values():
        return False, f"no {', '.join(k for k, v in pkgs.items() if v is None)} in {node_dir()}"
    why = sandbox.unavailable()
    if why:
        return False, f"not run: {why}"
    ro = sandbox.roots(tools) + [p for p in _ETC.get(lang, []) if os.path.exists(p)]
    env = None
    if lang in NODE_LANGS:  # the kit's npm packages, read-only; node finds lodash through NODE_PATH
        ro.append(node_dir())
        env = {"NODE_PATH": os.path.join(node_dir(), "node_modules")}
    with sandbox.box(f"evalkit-mbxp-{lang}-") as box:
        src = "main" + EXTENSION[lang]
        with open(os.path.join(box, src), "w") as f:
            f.write(code)
        node = [tools[-1], f"--max-old-space-size={limits.memory_mb}"] if lang in NODE_LANGS else None
        steps: list[tuple[list[str], float]] = []
        key = ""
        if lang == "python":
            key = secrets.token_hex(16)
            with open(os.path.join(box, "verdict.key"), "w") as f:
                f.write(key)
            shutil.copyfile(RUNNER, os.path.join(box, "mxeval_runner.py"))
            # mxeval: its own timer at `timeout`, the process killed at timeout + 1
            steps = [([tools[0], "-I", "mxeval_runner.py", repr(float(limits.timeout))], limits.timeout + 1)]
        elif lang == "cpp":
            steps = [([tools[0], src, "-o", "main_cpp"], COMPILE_TIMEOUT), (["./main_cpp"], limits.timeout)]
        elif lang == "javascript":
            steps = [(node + [src], limits.timeout)]
        elif lang == "typescript":
            tsc = os.path.join(pkgs["typescript"], "bin", "tsc")
            steps = [(node + [tsc, src, "--target", "es5", "--lib", "es2016"], COMPILE_TIMEOUT),
                     (node + ["main.js"], limits.timeout)]
        else:  # php, ruby
            steps = [([tools[0], src], limits.timeout)]
        for i, (argv, t) in enumerate(steps):
            mem = None if lang in NODE_LANGS else limits.memory_mb
            r = sandbox.run(argv, box, sandbox.Limits(wall_s=t, memory_mb=mem, tasks=limits.tasks), ro=ro, env=env)
            if lang == "python":
                return _python_verdict(r, key)
            err = r.killed or r.stderr.decode(errors="replace")[-500:]
            compile_step = i < len(steps) - 1
            if lang == "typescript" and compile_step:
                if r.killed or r.rc != 2:  # mxeval: compiled = (tsc's exit code == 2)
                    tail = r.killed or (r.stdout + r.stderr).decode(errors="replace")[-500:]
                    return False, f"compile failed: tsc exit {r.rc} (mxeval counts only 2 as compiled) {tail}".strip()
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


def main(argv=None) -> int:
    """`python -m language.mixtral.mbxp install-node [PREFIX]`: the pinned npm packages into PREFIX/mbxp-node
    (default: this Python's env), what the Mixtral env build and `make test` run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "install-node" or len(args) > 2:
        print("usage: python -m language.mixtral.mbxp install-node [ENV_PREFIX]", file=sys.stderr)
        return 2
    try:
        print(install_node_packages(args[1] if len(args) > 1 else None), file=sys.stderr)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
