"""README.md and docs/ stay true to the kit: every relative link and #anchor resolves, and every command
in their code blocks parses (make lines with `make -n` plus the Makefile's own targets and pattern rules,
`bin/evalkit` / `python -m evalkit` / torchrun lines with the kit's argparse parser, scripts/*.sh with
`--help` and the flags it lists, python files and modules by existence). `make` lines written inline in
the prose are checked too. The checker itself is tested on a crafted page: a broken link, a missing
anchor, a misspelled target, a misspelled variable and an unknown flag each fail it."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


# ------------------------------------------------------------------ markdown


FENCE = re.compile(r"^ {0,3}(```|~~~)")


def split_code(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code lines) as (line number, text). Code: fenced blocks, and indented blocks
    (4+ spaces after a blank line, outside list items)."""
    prose, code = [], []
    fenced, indented, prev_blank, in_list = False, False, True, False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            code.append((n, line))
            continue
        blank = not line.strip()
        if re.match(r"^\s*([*+-]|\d+\.)\s", line) and not line.startswith("    "):
            in_list = True
        elif not blank and not line.startswith(" "):
            in_list = False
        if line.startswith("    ") and (indented or (prev_blank and not in_list)):
            indented = True
            code.append((n, line[4:]))
        else:
            indented = indented and blank
            prose.append((n, line))
        prev_blank = blank
    return prose, code


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: rendered text, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link's text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            k = seen.get(s, 0)
            seen[s] = k + 1
            out.add(s if k == 0 else f"{s}-{k}")
    return out


LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def link_errors(path: Path, root: Path = ROOT) -> list[str]:
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    errs = []
    for n, line in prose:
        line = re.sub(r"`[^`]*`", "", line)   # inline code is not a link
        for m in LINK.finditer(line):
            target = m.group(1)
            where = f"{path.relative_to(root)}:{n}: link {target}"
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if root.resolve() not in (dest, *dest.parents):
                errs.append(f"{where}: leaves the repository")
            elif not dest.exists():
                errs.append(f"{where}: {dest.relative_to(root.resolve())} does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                errs.append(f"{where}: no heading #{anchor} in {dest.relative_to(root.resolve())}")
    return errs


# ------------------------------------------------------------------ commands


def commands(path: Path) -> list[tuple[int, str, bool]]:
    """(line, command, inline) for every command line of the page's code blocks (continuations
    joined), and every `make ...` written inline in its prose."""
    prose, code = split_code(path.read_text(encoding="utf-8"))
    out, buf, start = [], "", 0
    for n, line in code:
        if not buf:
            start = n
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append((start, buf.strip(), False))
        buf = ""
    for n, line in prose:
        for m in re.finditer(r"`(make [^`]*)`", line):
            out.append((n, m.group(1), True))
    return out


def placeholders(cmd: str) -> str | None:
    """The command with its documentation placeholders made concrete: `<model>` is resnet, other
    `<x>` a word, `[optional]` parts kept (first alternative of a|b), `...` dropped. None when the
    line is a template that cannot be made concrete (`log_<model> | log_all`)."""
    cmd = cmd.replace("<model>", "resnet")
    cmd = re.sub(r"<([\w -]+)>", lambda m: "x-" + m.group(1).replace(" ", "-"), cmd)
    cmd = re.sub(r"\[([^\]]*)\]", lambda m: re.sub(r"\|[^\s\]]+", "", m.group(1)), cmd)
    cmd = re.sub(r"(^|\s)\.\.\.(?=\s|$)", " ", cmd)
    return cmd


def split_shell(cmd: str) -> list[list[str]]:
    """Simple commands of a shell line (comments dropped; split at && || ; | &)."""
    lex = shlex.shlex(cmd, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    parts, cur = [], []
    for tok in lex:
        if tok and set(tok) <= set(";&|"):
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    parts.append(cur)
    return [p for p in parts if p]


@lru_cache(maxsize=None)
def make_rules() -> tuple[frozenset, tuple]:
    """(explicit targets, pattern-rule prefixes) from make's database of the kit's Makefile."""
    cp = subprocess.run(["make", "-pq", "-f", "Makefile"], cwd=ROOT,   # -q: the default goal does not run
                        capture_output=True, text=True, timeout=60, env=make_env())
    explicit, patterns = set(), set()
    for line in cp.stdout.splitlines():
        m = re.match(r"^([^\s#:=%][^:=]*?|[^\s#:=]*%[^\s:=]*):(?!=)", line)
        if not m or line.startswith(("\t", ".")) and not line.startswith(".PHONY"):
            continue
        if line.startswith(".PHONY:"):
            explicit.update(line.split(":", 1)[1].split())
            continue
        for t in m.group(1).split():
            if "%" in t:
                if not t.startswith("%"):   # a catch-all `%:` rule does not make any name a target
                    patterns.add(t)
            else:
                explicit.add(t)
    return frozenset(explicit), tuple(sorted(patterns))


def make_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    # make -n prints recipes; only $(MAKE) lines run (with -n passed on). Nothing can build anyway:
    env.update(ENV_DIR="/nonexistent/evalkit-docs-test", PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    return env


def is_target(name: str) -> bool:
    explicit, patterns = make_rules()
    if name in explicit:
        return True
    for p in patterns:
        pre, _, post = p.partition("%")
        if name.startswith(pre) and name.endswith(post) and len(name) > len(pre) + len(post):
            return True
    return False


def check_make(args: list[str]) -> str | None:
    targets = [a for a in args if "=" not in a and not a.startswith("-")]
    for t in targets:
        if not is_target(t):
            return f"make has no target {t!r}"
    if targets == args:   # bare targets: make's database above is the whole check
        return None
    return make_dry_run(tuple(args))


@lru_cache(maxsize=None)
def make_dry_run(args: tuple) -> str | None:
    """`make -n ARGS` (variables as given: a misspelled one is refused while the Makefile is read)."""
    cp = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env=make_env())
    if cp.returncode != 0 or "No rule to make target" in cp.stderr:
        return f"make -n {' '.join(args)} exits {cp.returncode}: {cp.stderr.strip()[-400:]}"
    return None


def check_evalkit(args: list[str]) -> str | None:
    """Parse with the kit's own argparse (evalkit.cli.main with its dispatch replaced: nothing runs)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from evalkit import cli
    real = cli._dispatch
    cli._dispatch = lambda a: 0
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            rc = cli.main([str(a) for a in args])
    except SystemExit as e:
        rc = e.code
    finally:
        cli._dispatch = real
    if rc not in (0, None):
        return f"evalkit {' '.join(args)}: {err.getvalue().strip()}"
    for a in args:   # argparse takes a prefix of a flag; the docs spell flags whole
        flag = str(a).split("=")[0]
        if flag.startswith("--") and flag != "--" and flag not in all_flags():
            return f"evalkit {' '.join(map(str, args))}: {flag} is not a whole flag of bin/evalkit"
    return None


@lru_cache(maxsize=None)
def all_flags() -> frozenset:
    return frozenset(cli_flags())


@lru_cache(maxsize=None)
def script_help(script: str) -> tuple[int, str]:
    cp = subprocess.run([script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                        env=make_env())
    return cp.returncode, cp.stdout + cp.stderr


def check_script(argv: list[str]) -> str | None:
    script = argv[0]
    if not (ROOT / script).is_file():
        return f"{script} does not exist"
    if script.endswith(".sbatch"):
        return None
    rc, text = script_help(script)
    if rc != 0:
        return f"{script} --help exits {rc}: {text.strip()[-300:]}"
    rest = argv[1:]
    own, extra = (rest[:rest.index("--")], rest[rest.index("--") + 1:]) if "--" in rest else (rest, [])
    for a in own:
        if a.startswith("-") and a.split("=")[0] not in text:
            return f"{script}: {a} is not in its --help"
    m = re.match(r"scripts/eval_(.+)\.sh$", script)
    if m and extra:
        return check_evalkit(["run", m.group(1), *extra])
    return None


PY = re.compile(r"^(\S*/)?python3?(\.\d+)?$")
# A line the checks below look into: the kit's commands, after any VAR=value prefixes.
KIT_COMMAND = re.compile(r"^([A-Za-z_]\w*=\S*\s+)*(make|\S*bin/evalkit|\S*python3?(\.\d+)?|\S*torchrun|sbatch|scripts/\S+)(\s|$)")


def check_command(words: list[str]) -> str | None:
    """None when fine or not the kit's command; else what is wrong."""
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    if not words:
        return None
    w0 = words[0]
    if w0 == "make":
        return check_make(words[1:])
    if w0.endswith("bin/evalkit"):
        return check_evalkit(words[1:])
    if w0 == "torchrun" or w0.endswith("/torchrun") or PY.match(w0):
        if "-m" in words:
            i = words.index("-m")
            mod, rest = words[i + 1], words[i + 2:]
            if mod == "evalkit":
                return check_evalkit(rest)
            base = ROOT.joinpath(*mod.split("."))
            if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                return f"no module {mod} in the kit"
            return None
        if PY.match(w0) and len(words) > 1 and words[1].endswith(".py"):
            return None if (ROOT / words[1]).is_file() else f"{words[1]} does not exist"
        return None
    if w0 == "sbatch":
        script = next((w for w in words[1:] if w.endswith(".sbatch")), None)
        if script and not (ROOT / script).is_file():
            return f"{script} does not exist"
        if "MODEL" in env and not (ROOT / f"scripts/eval_{env['MODEL']}.sh").is_file():
            return f"MODEL={env['MODEL']}: no scripts/eval_{env['MODEL']}.sh"
        return None
    if w0.startswith("scripts/"):
        return check_script(words)
    return None


def command_errors(path: Path, root: Path = ROOT) -> tuple[list[str], int]:
    errs, checked = [], 0
    for n, cmd, inline in commands(path):
        if not KIT_COMMAND.match(cmd):   # output shown, a layout, git/pip/apt lines: not the kit's commands
            continue
        concrete = placeholders(cmd)
        if inline and ("|" in cmd or "..." in cmd):   # a template in prose (`make log_<model> | log_all`)
            continue
        try:
            parts = split_shell(concrete)
        except ValueError as e:   # unbalanced quotes
            errs.append(f"{path.relative_to(root)}:{n}: {cmd!r}: {e}")
            continue
        for words in parts:
            err = check_command(list(words))
            checked += 1
            if err:
                errs.append(f"{path.relative_to(root)}:{n}: {cmd!r}: {err}")
    return errs, checked


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    assert not link_errors(page), "\n".join(link_errors(page))


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_parse(page):
    errs, _ = command_errors(page)
    assert not errs, "\n".join(errs)


def test_every_page_is_linked_and_every_model_has_one():
    linked = set()
    for page in pages():
        prose, _ = split_code(page.read_text(encoding="utf-8"))
        for _, line in prose:
            for m in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
                t = m.group(1).partition("#")[0]
                if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t):
                    linked.add((page.parent / t).resolve())
    orphans = [str(p.relative_to(ROOT)) for p in pages()[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages no page links to: {orphans}"
    from evalkit import registry
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [m for m in registry.names()
               if not (ROOT / "docs" / "models" / f"{m}.md").is_file() or f"| `{m}` |" not in readme]
    assert not missing, f"models without docs/models/<model>.md or a README Models row: {missing}"


def test_the_checker_fails_on_broken_docs(tmp_path):
    """The checks above can fail: a crafted page with one mistake of each kind is caught, each by
    name, and its correct twin lines pass."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## Real heading\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# T\n\nSee [ok](docs/other.md#real-heading), [gone](docs/nope.md), [bad anchor](docs/other.md#nope),\n"
        "[self](#t) and `[not a link](nowhere.md)`.\n\n"
        "```\n"
        "make resnet DATA=synthetic N_COUNT=8      # fine\n"
        "make resnt DATA=synthetic                 # misspelled target\n"
        "make data_add_resnet SRC=/x\n"
        "bin/evalkit run resnet --n_count 8 --data synthetic\n"
        "bin/evalkit run resnet --ncount 8         # misspelled flag\n"
        "bin/evalkit statuss RUN                   # misspelled subcommand\n"
        "bin/evalkit status RUN --stall_minute 5   # a prefix argparse would take\n"
        "scripts/eval_resnet.sh --n_count 8 -- --option channels_last=true\n"
        "scripts/eval_resnet.sh --n_cuont 8        # not in its --help\n"
        "scripts/eval_nope.sh                      # no such script\n"
        "git commit -m 'not the kit'               # not checked\n"
        "```\n"
        "Inline: `make nonsense_target`.\n")
    links = link_errors(page, tmp_path)
    assert len(links) == 2 and "docs/nope.md does not exist" in links[0] and "no heading #nope" in links[1], links
    errs, checked = command_errors(page, tmp_path)
    assert checked == 11, checked   # the git line is not one of the kit's commands
    want = ["make has no target 'resnt'", "--ncount", "invalid choice: 'statuss'", "--stall_minute is not a whole flag", "--n_cuont is not in its --help",
            "scripts/eval_nope.sh does not exist", "make has no target 'nonsense_target'"]
    assert len(errs) == len(want), "\n".join(errs)
    for w, e in zip(want, errs):
        assert w in e, (w, e)


def test_a_misspelled_variable_in_the_docs_fails():
    """`make -n` carries the variables given and the Makefile refuses an unknown command-line variable
    while it is read (issue 29 item 1), so a misspelled one in a docs command fails the check."""
    assert check_make(["resnet", "DATA=synthetic", "N_COUNT=8"]) is None
    err = check_make(["resnet", "DATA=synthetic", "NCOUNT=8"])
    assert err is not None and "unknown variable NCOUNT" in err, err


def cli_flags() -> set[str]:
    """Every --flag of every bin/evalkit subcommand (the internal _worker aside), from the parser itself."""
    import argparse

    from evalkit import cli
    grabbed = {}

    def grab(self, args=None, namespace=None):
        grabbed["parser"] = self
        raise SystemExit(0)

    real = cli._Parser.parse_args
    cli._Parser.parse_args = grab
    try:
        cli.main([])
    except SystemExit:
        pass
    finally:
        cli._Parser.parse_args = real
    flags = set()

    def walk(p):
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    if not name.startswith("_"):
                        walk(sp)
            else:
                flags.update(o for o in a.option_strings if o.startswith("--") and o != "--help")
    walk(grabbed["parser"])
    return flags


def test_variables_page_names_every_variable_and_flag():
    """docs/variables.md: every command-line variable the Makefile accepts (its KIT_VARS list) and every
    flag of every bin/evalkit subcommand."""
    cp = subprocess.run(["make", "-pq", "-f", "Makefile"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                        env=make_env())
    m = re.search(r"^KIT_VARS :?= (.*)$", cp.stdout, re.M)
    if m:
        names = m.group(1).split()
    else:   # a Makefile without the list: the variables it exports
        names = [v for line in re.findall(r"^export (.*)$", cp.stdout, re.M) for v in line.split()]
    assert len(names) > 20, "cannot find the Makefile's variables"
    page = (ROOT / "docs" / "variables.md").read_text(encoding="utf-8")
    missing = [v for v in names if f"`{v}`" not in page]
    assert not missing, f"make variables not in docs/variables.md: {missing}"
    flags = cli_flags()
    assert {"--n_count", "--log_path", "--targets_version", "--stall_minutes"} <= flags, flags
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", page))
    assert not missing, f"bin/evalkit flags not in docs/variables.md: {missing}"
