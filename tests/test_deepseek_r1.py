"""DeepSeek-R1 (issue 27 part B): the reference's answer extraction and exact-match rules per set,
PRM800K's MATH grading, LiveCodeBench programs in the sandbox (60 s per test, INCOMPLETE without
it), the LiveCodeBench release's pickled private tests read by the safe loader, the v6.1 targets and
the checker's patterns. The synthetic set's PASS over 1 vs 3 partitions, the index shift and the
bad-input cases come from test_contract / test_bad_input_contract (it is registered)."""
from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest


def test_multiple_choice_rules():
    from language.deepseek_r1.answers import parse

    assert parse("gpqa", "I think ANSWER: B ... Final Answer: (c)") == "C"  # the last, case-insensitive
    assert parse("gpqa", "ANSWER: E") is None  # GPQA stops at D
    assert parse("gpqa", "ANSWER: Ab") is None  # a letter followed by a letter is a word
    assert parse("mmlu_pro", "so it must be J. Hmm, or maybe H") == "H"  # MMLU-Pro: last standalone letter
    assert parse("gpqa", "so it must be B") is None  # GPQA has no such fallback
    assert parse("mmlu_pro", "['ANSWER: I']") == "I"  # the ['...'] artifact removed


def test_aime_math_and_code_rules():
    from language.deepseek_r1.answers import correct, kind_of, parse

    assert parse("aime", "Answer: 12 and \\boxed{ 34 }") == 34  # boxed wins
    assert parse("aime", "Answer: 7.5") is None and parse("aime", "Answer: 1000") is None
    assert parse("aime", "answer: 7\nAnswer: 8") == 8
    assert parse("math500", "\\boxed{1} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"  # last, braces balanced
    assert parse("math500", "\\boxed{\\frac{1}{2}") is None  # unbalanced
    assert parse("livecodebench", "```python\nprint(1)\n```\n```python\nprint(2)\n```") == "print(1)"  # the first
    assert correct("aime", 34, "034") and not correct("aime", None, "34")
    assert correct("gpqa", "c", "C") and not correct("gpqa", "E", "E")
    assert correct("math500", "0.5", "\\frac{1}{2}")
    assert kind_of("aime1983", "row 0") == "aime" and kind_of("MMLU_Pro", "row 1") == "mmlu_pro"
    from evalkit.errors import KitError

    with pytest.raises(KitError, match="row 7: dataset 'squad' has no evaluator"):
        kind_of("squad", "row 7")


@pytest.mark.parametrize("given,truth,ok", [
    ("\\frac{1}{2}", "0.5", True), ("1/2", "\\frac12", True), ("2", "2.0", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True), ("(1,2)", "(1, 2)", True), ("x+1", "1+x", True),
    ("10\\%", "10", True), ("1,000", "1000", True), ("\\text{(A)}", "(A)", True), ("5 \\text{ cm}", "5", True),
    ("3", "4", False), ("2/4", "1/2", False),     # an unreduced fraction is not the reduced one
    ("(1,2)", "[1,2]", False), ("1.5", "1", False), ("2^{10}", "1024", False),  # big exponents are never evaluated
])
def test_prm800k_grading(given, truth, ok):
    from language.reasoning.math_grader import grade_answer

    assert grade_answer(given, truth) is ok


def _problem(qid, public, private, meta="{}", pickled=True):
    priv = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(private)))).decode() if pickled else json.dumps(private)
    return json.dumps({"question_id": qid, "public_test_cases": json.dumps(public), "private_test_cases": priv,
                       "metadata": meta}) + "\n"


@pytest.fixture
def lcb_dir(tmp_path):
    d = tmp_path / "livecodebench"
    d.mkdir()
    io = [{"input": "3\n", "output": "6\n", "testtype": "stdin"}]
    (d / "test.jsonl").write_text(
        _problem("double", io, [{"input": "5", "output": "10", "testtype": "stdin"}])
        + _problem("add", [{"input": "1\n2", "output": "[3]", "testtype": "functional"}], [], '{"func_name": "f"}',
                   pickled=False))
    return tmp_path


def test_livecodebench_programs_in_the_sandbox(lcb_dir):
    from evalkit import sandbox
    from language.reasoning import livecodebench as lcb

    if sandbox.unavailable():
        pytest.fail(f"the sandbox does not run here: {sandbox.unavailable()}")
    assert lcb.TIMEOUT_S == 60  # the reference's per-test limit
    probs = lcb.load_problems(lcb_dir, {"double", "add"})
    assert probs["double"]["tests"][1] == {"input": "5", "output": "10"}  # the pickled private case
    items = [("a = int(input())\nprint(a * 2)", "double"),        # stdin, both tests
             ("print(6)", "double"),                               # passes the public test only
             ("class Solution:\n    def f(self, a, b):\n        return (a + b,)", "add"),  # call-based, tuple = list
             ("print(6)", "missing"), (None, "double")]
    assert lcb.evaluate(items, lcb_dir) == [True, False, True, False, False]
    ok, why = lcb.run_one("while True:\n    pass", probs["double"], timeout=1)
    assert not ok and why == "failed: test 0: over 1 s"
    ok, why = lcb.run_one("import os\nprint(os.listdir('/'))\nprint(open('/etc/shadow').read())", probs["double"])
    assert not ok and "FileNotFoundError" in why  # the host's /etc is not there


def test_livecodebench_without_the_sandbox_is_incomplete(lcb_dir, monkeypatch):
    from evalkit import sandbox
    from evalkit.errors import KitError
    from language.reasoning import livecodebench as lcb

    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap (bwrap) is not installed")
    with pytest.raises(KitError, match=r"^LiveCodeBench INCOMPLETE: 1 program\(s\) not run: bubblewrap"):
        lcb.evaluate([("print(6)", "double")], lcb_dir)
    assert lcb.evaluate([(None, "double")], lcb_dir) == [False]  # nothing to run: no answer is simply wrong


def test_a_hostile_private_test_pickle_is_refused(tmp_path):
    from evalkit.errors import KitError
    from language.reasoning import livecodebench as lcb

    class Boom:
        def __reduce__(self):
            import os
            return (os.system, ("touch /tmp/pwned",))

    d = tmp_path / "livecodebench"
    d.mkdir()
    priv = base64.b64encode(zlib.compress(pickle.dumps(Boom()))).decode()
    (d / "test.jsonl").write_text(json.dumps({"question_id": "x", "public_test_cases": "[]",
                                              "private_test_cases": priv, "metadata": "{}"}) + "\n")
    with pytest.raises(KitError, match=r"test.jsonl line 1: .*(os|posix).*system"):
        lcb.load_problems(tmp_path, {"x"})


def test_targets_and_checker_patterns():
    from evalkit import targets
    from language.deepseek_r1.benchmark import BENCHMARK as b

    t = targets.get("deepseek-r1")
    assert [(x.metric, x.kind, x.value) for x in t.bounds] == [
        ("exact_match", "min", round(81.3582 * 0.99, 10)), ("TOKENS_PER_SAMPLE", "min", round(3886.2274 * 0.9, 10)),
        ("TOKENS_PER_SAMPLE", "max", round(3886.2274 * 1.1, 10))]
    assert "v6.1" in t.source and b.dataset_size == 4388 and b.options["max_new_tokens"] == 20000
    text = "\n".join(b.accuracy_lines({"exact_match": 81.5, "TOKENS_PER_SAMPLE": 3900.25, "GEN_NUM": 4388}))
    assert text == "{'exact_match': 81.5, 'tokens_per_sample': 3900.25, 'num-samples': 4388}"
    assert targets.parse_accuracy_txt(text, "exact_match") == [81.5]
    assert targets.parse_accuracy_txt(text, "TOKENS_PER_SAMPLE") == [3900.25]


def test_livecodebench_tests_are_read_when_the_set_opens(lcb_dir):
    """Before any model loads: every LiveCodeBench row's problem is in livecodebench/test.jsonl."""
    import pandas as pd

    from evalkit.errors import KitError
    from language.deepseek_r1.benchmark import BENCHMARK as b, PICKLE
    from language.frames import write_table

    df = pd.DataFrame({"tok_input": [[1, 2], [3, 4]], "dataset": ["gpqa", "livecodebench"],
                       "ground_truth": ["A", "double"]})
    write_table(df, lcb_dir, PICKLE)
    assert b.open_dataset(lcb_dir).size == 2
    write_table(df.assign(ground_truth=["A", "triple"]), lcb_dir, PICKLE)
    with pytest.raises(KitError, match=r"livecodebench/test.jsonl: no problem 'triple' \(the ground_truth of row 1"):
        b.open_dataset(lcb_dir)
