"""Mixtral-8x7B: GSM8K extraction by the reference's rules, the MBXP sandbox, the MBXP stop
sequence and trimming, INCOMPLETE when a toolchain is missing, a K=2 run and the v4.1 targets.
The contract test covers synth / 1 vs 3 partitions / index shift / payload dtype."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from evalkit.errors import KitError

from conftest import evalkit

N = 8  # conftest.SYNTH_N: the set the contract test uses too


@pytest.fixture(scope="module")
def synth(synthetic) -> Path:
    return synthetic("mixtral", N)


@pytest.mark.parametrize("text,gt,ok", [
    ("She has 3 apples and buys 5 more. The answer is 8.", "8", True),
    ("The answer is 1,250 dollars, not 99", "1250", True),          # first number after the delimiter, commas out
    ("So 4 + 4 = 8. The answer is: 8\nQ: next question 12", "8", True),
    ("Total 7, then 12 and finally 42.", "42", True),                # no delimiter: the last number
    ("It is 6\nQ: The answer is 9", "6", True),                      # only the text before \nQ:
    ("The answer is -3.5", "-3.5", True),
    ("The answer is 7.0", "7", True),                                # compared as floats
    ("no number here", "0", False),
    ("The answer is 10", "1O", False),                               # unparsable truth never matches
])
def test_gsm8k_extraction(text, gt, ok):
    from language.mixtral import gsm8k

    assert gsm8k.correct(text, gt) is ok


def test_gsm8k_extract_values():
    from language.mixtral import gsm8k

    assert gsm8k.extract("The answer is 1,234.") == "1234"
    assert gsm8k.extract("a 1 b 2. The answer is x") == "2"        # delimiter without a number: last number
    assert gsm8k.extract("") == ""


def _lim():
    from language.mixtral import mbxp

    return mbxp.Limits(timeout=3.0, memory_mb=512)


def test_mbxp_program_as_the_reference_builds_it():
    from language.mixtral import mbxp

    prog = mbxp.program("python", "  def f(x):\n    return x\\_1\n```\nexplanation", "def check(c):\n    pass", "f")
    assert prog == "def f(x):\n    return x_1\n\ndef check(c):\n    pass\ncheck(f)"
    assert mbxp.program("cpp", "int f(){return 1;}\n```", "\nint main(){}", "f") == "int f(){return 1;}\n\nint main(){}"


def test_mbxp_sandbox_pass_fail_timeout():
    from language.mixtral import mbxp

    test = "def check(candidate):\n    assert candidate(2) == 3"
    good = mbxp.program("python", "def inc(x):\n    return x + 1\n", test, "inc")
    bad = mbxp.program("python", "def inc(x):\n    return x - 1\n", test, "inc")
    assert mbxp.run_program("python", good, _lim()) == (True, "passed")
    assert not mbxp.run_program("python", bad, _lim())[0]
    t = time.time()
    ok, why = mbxp.run_program("python", "while True:\n    pass\n", _lim())
    assert not ok and why == "timed out" and time.time() - t < 15
    ok, why = mbxp.run_program("python", "x = bytearray(1 << 30)\n", _lim())  # over the memory limit
    assert not ok and "MemoryError" in why


@pytest.mark.skipif(not shutil.which("g++"), reason="g++ not installed")
def test_mbxp_sandbox_cpp():
    from language.mixtral import mbxp

    test = "\nint main(){ assert(inc(2) == 3); }\n"
    assert mbxp.run_program("cpp", "#include <cassert>\nint inc(int x){ return x + 1; }" + test, _lim())[0]
    assert not mbxp.run_program("cpp", "#include <cassert>\nint inc(int x){ return x; }" + test, _lim())[0]


@pytest.mark.skipif(not shutil.which("node"), reason="node not installed")
def test_mbxp_sandbox_javascript():
    from language.mixtral import mbxp

    test = "\nconst assert = require('assert');\nassert.deepEqual(inc(2), 3);\n"
    assert mbxp.run_program("javascript", "function inc(x) { return x + 1; }" + test, _lim()) == (True, "passed")
    assert not mbxp.run_program("javascript", "function inc(x) { return x; }" + test, _lim())[0]


def test_mbxp_sandbox_blocks_network_and_outside_writes(tmp_path):
    """The MBXP path goes through the core sandbox (tests/test_sandbox.py attacks it in depth)."""
    from language.mixtral import mbxp

    outside = tmp_path / "escaped.txt"
    sock = "import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', 9))\n"
    ok, why = mbxp.run_program("python", sock, _lim())
    assert not ok and "refused" in why.lower(), why  # its own loopback: nothing listens there
    ok, why = mbxp.run_program("python", f"open({str(outside)!r}, 'w').write('x')\n", _lim())
    assert not ok and "FileNotFoundError" in why and not outside.exists(), why  # the host tree is not there
    ok, why = mbxp.run_program("python", "open('inside.txt', 'w').write('x')\n"
                               "assert open('inside.txt').read() == 'x'\n", _lim())
    assert ok, why  # its own dir is writable (os.getcwd is one of the functions mxeval's guard disables)


# --- MBXP judged as mxeval judges it (issue 25 items 1 and 2) ------------------------------------
_NO_NODE = pytest.mark.skipif(not shutil.which("node"), reason="node not installed")
INC_TEST = "def check(candidate):\n    assert candidate(2) == 3"
GOOD_PY = "def inc(x):\n    return x + 1\n"
BAD_PY = "def inc(x):\n    return x - 1\n"


@pytest.mark.parametrize("name,solution,passes", [pytest.param(*c, id=c[0]) for c in [
    ("failing __main__ block", GOOD_PY + "if __name__ == '__main__':\n    assert inc(2) == 0\n", True),
    ("input() in __main__", GOOD_PY + "if __name__ == '__main__':\n    print(inc(int(input())))\n", True),
    ("prints a lot", GOOD_PY + "print('x' * 100000)\nimport sys\nprint('y', file=sys.stderr)\n", True),
    ("sys.exit(0) at top level", BAD_PY + "import sys\nsys.exit(0)\n", False),
    ("exit() at top level", BAD_PY + "exit()\n", False),
    ("quit() at top level", BAD_PY + "quit()\n", False),
    ("os._exit(0) at top level", BAD_PY + "import os\nos._exit(0)\n", False),
    ("forged verdict", BAD_PY + "import os\nos.write(1, b'passed\\n')\nos._exit(0)\n", False),
    ("correct, sys.exit(0) after the test", None, False),
    ("input() at top level", GOOD_PY + "n = input()\n", False),
    ("os.getcwd() (guarded)", GOOD_PY + "import os\nos.getcwd()\n", False),
]])
def test_mbxp_python_judged_as_mxeval(name, solution, passes):
    """mxeval exec's the program (no __main__) after its reliability guard; any exception, SystemExit
    included, is a failure, and so is a process that ends without a verdict."""
    from language.mixtral import mbxp

    if solution is None:  # check() passed, then SystemExit(0): mxeval's exec raised, so a failure
        prog = mbxp.program("python", GOOD_PY, INC_TEST, "inc") + "\nimport sys\nsys.exit(0)\n"
    else:
        prog = mbxp.program("python", solution, INC_TEST, "inc")
    ok, why = mbxp.run_program("python", prog, _lim())
    assert ok is passes, (name, why)
    if passes:
        assert why == "passed"


def test_mbxp_python_timeout_is_mxevals_timer():
    from language.mixtral import mbxp

    t = time.time()
    ok, why = mbxp.run_program("python", "import time\ntime.sleep(60)\n", _lim())
    assert not ok and why == "timed out" and time.time() - t < 10, why
    # a program that swallows the timer's exception and goes on is killed at timeout + 1 (mxeval's join)
    ok, why = mbxp.run_program("python", "import time\nwhile True:\n    try:\n        time.sleep(60)\n"
                               "    except Exception:\n        pass\n", _lim())
    assert not ok and why == "timed out", why


@_NO_NODE
def test_mbxp_javascript_lodash():
    """Every MBXP JavaScript test starts with `const _ = require("lodash")`: the kit's pinned lodash
    (make test / the Mixtral env build install it) is found in the sandbox."""
    from language.mixtral import mbxp

    test = ('\nconst _ = require("lodash")\n\nfunction compare(a, b){\n    return _.isEqual(a, b)\n}\n\n'
            "var x0 = inc(2);\nif(!compare(x0, 3)){\n    throw 'Error at 1th assert statement.'\n}\n")
    assert mbxp.incomplete(["javascript"]) is None, mbxp.incomplete(["javascript"])
    assert mbxp.run_program("javascript", "function inc(x) { return x + 1; }" + test, _lim()) == (True, "passed")
    ok, why = mbxp.run_program("javascript", "function inc(x) { return x; }" + test, _lim())
    assert not ok and "1th assert" in why, why
    ok, why = mbxp.run_program("javascript", 'require("left-pad")\n', _lim())  # only what the kit installed
    assert not ok and "MODULE_NOT_FOUND" in why, why


@_NO_NODE
@pytest.mark.parametrize("name,code,passes", [pytest.param(*c, id=c[0]) for c in [
    # MBXP's TypeScript tests import node's assert without its type declarations: tsc reports the error,
    # writes the JS and exits 2, the only exit code mxeval counts as compiled
    ("mbxp-style, right", "const inc = function (x: number) : number { return x + 1; }\n"
                          "import * as assert from 'assert'\nassert.deepEqual(inc(2), 3, 'failed');\n", True),
    ("mbxp-style, wrong", "const inc = function (x: number) : number { return x; }\n"
                          "import * as assert from 'assert'\nassert.deepEqual(inc(2), 3, 'failed');\n", False),
    ("type error, right at run time", "let y: string = 3 as any as number;\nif (y as any !== 3) { throw 'no'; }\n", True),
    # a program that type-checks cleanly: tsc exits 0 and mxeval never runs it
    ("clean compile (tsc exit 0)", "const inc = (x: number): number => x + 1;\nif (inc(2) !== 3) { throw 'no'; }\n",
     False),
]])
def test_mbxp_typescript_compiled_only_on_tsc_exit_2(name, code, passes):
    from language.mixtral import mbxp

    assert mbxp.incomplete(["typescript"]) is None, mbxp.incomplete(["typescript"])
    ok, why = mbxp.run_program("typescript", code, _lim())
    assert ok is passes, (name, why)
    if name.startswith("clean"):
        assert "tsc exit 0" in why, why


@_NO_NODE
def test_mbxp_missing_lodash_is_incomplete_with_a_command_that_works(request, tmp_path, monkeypatch):
    """No lodash: one INCOMPLETE line naming the command that installs it; pasted, that command works."""
    import subprocess
    import sys

    from language.mixtral import mbxp

    top = Path(tempfile.mkdtemp(prefix="evalkit-node-"))  # not under pytest's tmp: nobody (the programs' uid) reads it
    top.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    prefix = top / "env"
    monkeypatch.setattr(sys, "prefix", str(prefix))
    why = mbxp.incomplete(["javascript", "javascript", "python"])
    assert why and "\n" not in why and "2 javascript program(s) need lodash 4.17.21" in why, why
    assert "python" not in why.split(";")[0], why
    cmd = why.split("`")[1]
    assert cmd == mbxp.node_install_command(), why
    if not shutil.which("npm"):
        pytest.skip("npm not installed")
    cp = subprocess.run(cmd, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)  # pasted
    assert cp.returncode == 0, cp.stderr
    assert mbxp.incomplete(["javascript", "typescript"]) is None
    assert mbxp.node_package("lodash") == str(prefix / "mbxp-node" / "node_modules" / "lodash")


def test_no_bwrap_is_incomplete_never_pass(synth, monkeypatch):
    """Without bubblewrap no program runs (never a weaker sandbox): INCOMPLETE, one line naming the install."""
    from evalkit import sandbox
    from language.mixtral import mbxp
    from language.mixtral.benchmark import BENCHMARK as b

    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")
    sandbox.reset()
    try:
        pairs = [(k, np.array([5, 6], np.int32)) for k in range(N)]
        with pytest.raises(KitError, match="^MBXP INCOMPLETE: [0-9]+ program.s. not run: bubblewrap") as e:
            b.score(pairs, synth / "dataset", N, synth / "model")
        assert f"`{sandbox.install_hint()}`" in str(e.value) and "\n" not in str(e.value), e.value
        assert mbxp.run_program("python", "pass\n", _lim())[0] is False
    finally:
        sandbox.reset()


def test_stop_sequence_and_trim():
    import torch

    from language.llm import Prompt, StopSequences
    from language.mixtral.benchmark import BENCHMARK as b

    proc = StopSequences([(7, 8), None], eos=2, prompt_len=1)
    ids = torch.tensor([[5, 7, 8], [5, 7, 8]])
    scores = proc(ids, torch.zeros(2, 10))
    assert scores[0].argmax() == 2 and torch.isinf(scores[0, 3]) and not torch.isinf(scores[1]).any()
    stop = Prompt(np.array([1]), (7, 8))
    assert b.trim(np.array([4, 7, 8, 9, 7, 8, 2, 2]), stop, 2, 2).tolist() == [4, 7, 8]
    assert b.trim(np.array([4, 5, 0, 2, 2, 2]), Prompt(np.array([1])), 2, 2).tolist() == [4, 5]
    import pandas as pd

    from language.mixtral.benchmark import MBXP_STOP

    assert b.stop_of(pd.Series({"dataset": "MBXP", "tok_stop_sequence": [5, 6]})) == (5, 6)
    assert b.stop_of(pd.Series({"dataset": "MBXP", "tok_stop_sequence": float("nan")})) == MBXP_STOP
    assert b.stop_of(pd.Series({"dataset": "GSM8K", "tok_stop_sequence": [5, 6]})) is None


def test_stop_sequence_counts_only_generated_tokens():
    """The reference cuts only the generated tokens at the stop sequence (postProcess after the prompt):
    a prompt ending with it, or a stop sequence that starts in the prompt, ends nothing."""
    import torch

    from language.llm import StopSequences

    proc = StopSequences([(7, 8)], eos=2, prompt_len=3)
    for ids in ([[5, 7, 8]], [[7, 8, 9, 7]], [[5, 9, 7, 8]]):  # prompt only; generated 9, 7; straddling 7 | 8
        scores = proc(torch.tensor(ids), torch.zeros(1, 10))
        assert not torch.isinf(scores).any(), ids
    scores = proc(torch.tensor([[5, 7, 8, 7, 8]]), torch.zeros(1, 10))  # generated 7, 8
    assert scores[0].argmax() == 2 and torch.isinf(scores[0, 3])


def test_two_devices_per_partition_run_and_v41_targets(synth, tmp_path):
    cp = evalkit("run", "mixtral", "--dataset", synth / "dataset", "--model_path", synth / "model",
                 "--log_path", tmp_path / "k2", "--devices_per_partition", 2, "--n_devices", 4, "--batch_size", 3)
    assert cp.returncode == 0 and "RESULT: PASS" in cp.stdout, cp.stdout + cp.stderr
    info = json.loads((tmp_path / "k2" / "gather.json").read_text())
    assert len(info["partitions"]) == 2
    assert "cpu,cpu" in (tmp_path / "k2" / "0" / "partition.json").read_text()
    cp = evalkit("check", tmp_path / "k2", "--targets_version", "v4.1")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert json.loads((tmp_path / "k2" / "accuracy.json").read_text())["checker_name"] == "mixtral-8x7b@v4.1"


def test_missing_toolchain_is_incomplete_never_pass(synth, tmp_path, monkeypatch):
    import pandas as pd

    from language.mixtral import mbxp
    from language.mixtral.benchmark import BENCHMARK as b, PICKLE

    ds = tmp_path / "dataset"
    shutil.copytree(synth / "dataset", ds)
    pq = ds / (Path(PICKLE).stem + ".parquet")
    df = pd.read_parquet(pq)
    i = int(np.flatnonzero(df["dataset"] == "MBXP")[0])
    df.loc[i, "id"] = "php_" + df.loc[i, "id"].split("_", 1)[1]
    df.to_parquet(pq, index=False)
    (ds / PICKLE).unlink()
    monkeypatch.setattr(mbxp, "toolchain", lambda lang: None if lang == "php" else ["x"])
    pairs = [(k, np.array([5, 6], np.int32)) for k in range(N)]
    with pytest.raises(KitError, match="INCOMPLETE") as e:
        b.score(pairs, ds, N, synth / "model")
    assert "php" in str(e.value) and "\n" not in str(e.value)
