"""Runs ONE LiveCodeBench program against its tests, inside the kit's sandbox (copied into the box,
run as `python3 -I lcb_runner.py TIMEOUT`; never imported by the kit). Stdlib only.

Judged as LiveCodeBench's testing_util.run_test judges (the DeepSeek-R1 / gpt-oss references call
it with timeout=60): the program gets LCB's import header; a problem with a `func_name` is
call-based (Solution().<func_name>(*inputs), each input line JSON, a tuple result compared as a
list, equal to the JSON output); otherwise stdin/stdout (a trailing `if __name__ == "__main__":`
unwrapped, the top-level code run as one function per test with the input as stdin; the output's
stripped lines must equal the expected ones, or parse to the same Decimals token by token). Tests
run in order and stop at the first failure; each has `TIMEOUT` seconds (SIGALRM). The verdict is the
last stdout line: "<key> passed" or "<key> failed: why"; the key (box file verdict.key) keeps a
program from printing a verdict of its own.
"""
import ast
import io
import json
import signal
import sys

IMPORTS = """from string import *
from re import *
from datetime import *
from collections import *
from heapq import *
from bisect import *
from copy import *
from math import *
from random import *
from statistics import *
from itertools import *
from functools import *
from operator import *
from io import *
from sys import *
import string
import re
import datetime
import collections
import heapq
import bisect
import copy
import math
import random
import statistics
import itertools
import functools
import operator
import io
import sys
import json
from typing import *
sys.setrecursionlimit(50000)
"""


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _unwrap_main(code):
    """LCB's clean_if_name: a last top-level `if __name__ == "__main__":` becomes its body."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.If) and ast.unparse(last.test).strip() in ('__name__ == "__main__"', "__name__ == '__main__'"):
        tree.body = tree.body[:-1] + last.body
        return ast.unparse(tree)
    return code


def _as_function(code):
    """LCB's make_function: imports stay at the top, the rest becomes wrapped_function()."""
    tree = ast.parse(code)
    imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
    rest = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
    fn = ast.FunctionDef(name="wrapped_function", args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[],
                         kw_defaults=[], defaults=[]), body=rest or [ast.Pass()], decorator_list=[], type_params=[])
    return IMPORTS + "\n" + ast.unparse(ast.Module(body=imports, type_ignores=[])) + "\n" + \
        ast.unparse(ast.fix_missing_locations(ast.Module(body=[fn], type_ignores=[])))


def _lines(text):
    return [x.strip() for x in text.strip().split("\n")]


def _decimals(line):
    from decimal import Decimal, InvalidOperation
    try:
        return True, [Decimal(t) for t in line.split()]
    except (InvalidOperation, ValueError):
        return False, []


def _same_output(got, want):
    a, b = _lines(got), _lines(want)
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x == y:
            continue
        ok1, d1 = _decimals(x)
        ok2, d2 = _decimals(y)
        if not (ok1 and ok2 and d1 == d2):
            return False
    return True


def _run(code, tests, fn_name, timeout):
    signal.signal(signal.SIGALRM, _alarm)
    module = {"__name__": "lcb_program"}
    try:
        signal.alarm(timeout)
        src = IMPORTS + "\n" + code if fn_name else _as_function(_unwrap_main(code))
        exec(compile(src, "program.py", "exec"), module)
        signal.alarm(0)
    except _Timeout:
        return "failed: timed out compiling"
    except BaseException as e:  # noqa: BLE001 - any failure of the program is its verdict
        signal.alarm(0)
        return f"failed: compile error {type(e).__name__}: {e}"
    for i, t in enumerate(tests):
        stdout, stdin = sys.stdout, sys.stdin
        try:
            signal.alarm(timeout)
            if fn_name:
                method = getattr(module["Solution"](), fn_name)
                inputs = [json.loads(x) for x in t["input"].split("\n")]
                got = method(*inputs)
                signal.alarm(0)
                if isinstance(got, tuple):
                    got = list(got)
                if got != json.loads(t["output"]):
                    return f"failed: test {i}: wrong answer"
            else:
                sys.stdin, sys.stdout = io.StringIO(t["input"]), io.StringIO()
                try:
                    module["wrapped_function"]()
                except SystemExit:
                    pass
                got = sys.stdout.getvalue()
                signal.alarm(0)
                sys.stdout, sys.stdin = stdout, stdin
                if not _same_output(got, t["output"]):
                    return f"failed: test {i}: wrong answer"
        except _Timeout:
            return f"failed: test {i}: over {timeout} s"
        except BaseException as e:  # noqa: BLE001
            return f"failed: test {i}: {type(e).__name__}: {e}"
        finally:
            signal.alarm(0)
            sys.stdout, sys.stdin = stdout, stdin
    return "passed"


def main():
    timeout = int(sys.argv[1])
    import os

    with open("verdict.key") as f:
        key = f.read().strip()
    os.remove("verdict.key")  # the program cannot read it and print a verdict of its own
    with open("problem.json") as f:
        problem = json.load(f)
    verdict = _run(problem["code"], problem["tests"], problem.get("func_name"), timeout)
    sys.stdout = sys.__stdout__
    print(f"\n{key} {verdict}", flush=True)


if __name__ == "__main__":
    main()
