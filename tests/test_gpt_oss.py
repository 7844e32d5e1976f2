"""gpt-oss-120b (issue 27): the harmony prompt rendering against the published example, the
reference's answer extraction per dataset (harmony final section first), its repeats-weighted
exact_match, the accuracy/performance set selection with each set's output limit, the v6.1 targets
and the checker's patterns, and the openai backend's stop ids (the checkpoint's, not only EOS).
The synthetic set's PASS over 1 vs 3 partitions, the index shift and the bad-input cases come from
test_contract / test_bad_input_contract (it is registered)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import SYNTH_N, one_line_error, evalkit

# openai-harmony's published example conversation (its README / format guide), system message
PUBLISHED_SYSTEM = ("<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
                    "Knowledge cutoff: 2024-06\nCurrent date: 2025-06-28\n\nReasoning: high\n\n"
                    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>")


@pytest.fixture(scope="module")
def synth(synthetic):
    from evalkit import registry

    return synthetic("gpt-oss-120b", min(registry.get("gpt-oss-120b").synthetic_n, SYNTH_N))  # the contract's set


def test_harmony_rendering_matches_the_published_format():
    from language.gpt_oss import harmony

    text = harmony.render_prompt("What is the weather like in SF?", "high", instructions="Always respond in riddles",
                                 date="2025-06-28")
    assert text == (PUBLISHED_SYSTEM + "<|start|>developer<|message|># Instructions\n\nAlways respond in riddles"
                    "<|end|><|start|>user<|message|>What is the weather like in SF?<|end|><|start|>assistant")
    low = harmony.render_prompt("q", "low")  # the performance set's effort; no date, no developer message
    assert low == ("<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
                   "Knowledge cutoff: 2024-06\n\nReasoning: low\n\n# Valid channels: analysis, commentary, final. "
                   "Channel must be included for every message.<|end|><|start|>user<|message|>q<|end|>"
                   "<|start|>assistant")
    with pytest.raises(ValueError, match="reasoning effort 'max'"):
        harmony.render_prompt("q", "max")


def test_harmony_tokens_are_the_checkpoints_special_tokens(synth):
    from transformers import AutoTokenizer

    from language.gpt_oss import harmony

    tok = AutoTokenizer.from_pretrained(str(synth / "model"))
    ids = harmony.prompt_ids(tok, "two words", "high")
    for marker in (harmony.START, harmony.MESSAGE, harmony.END):  # one id each, never split into bytes
        assert tok.convert_tokens_to_ids(marker) in ids
    assert ids[0] == tok.convert_tokens_to_ids(harmony.START) and tok.decode(ids).endswith("<|start|>assistant")
    assert tok.eos_token == harmony.RETURN and tok.pad_token == harmony.END_OF_TEXT


def test_answer_rules_read_the_final_section():
    from language.gpt_oss.answers import final_section, kind_of, parse

    out = "<|channel|>analysis<|message|>maybe ANSWER: A<|end|><|start|>assistant<|channel|>final<|message|>**C**<|return|>"
    assert final_section(out) == "**C**"
    assert parse("gpqa", out) == "C"  # the final section's leading letter, bold removed; not the analysis
    assert parse("gpqa", "<|channel|>final 明<|message|>The answer: B.") == "B"  # a corrupt marker still matches
    assert parse("gpqa", "<|channel|>final<|message|>Hmm, answer is not clear<|return|>") is None
    assert parse("gpqa", "thinking... FINAL ANSWER: (d)") == "D"  # no final section: the whole text
    assert parse("mmlu_pro", "<|channel|>final<|message|>so it is, I think, (J) or H") == "H"  # last standalone
    assert parse("aime", "analysis \\boxed{12} <|channel|>final<|message|>Answer: 7") == 12  # whole text, boxed wins
    code = "```python\nprint(1)\n```<|channel|>final<|message|>```py\nprint(2)\n```\n```\nprint(3)\n```"
    assert parse("livecodebench", code) == "print(3)"  # final section, its last block, "py" line dropped
    assert parse("livecodebench", "```python\nprint(1)\n``` and ```python\nprint(4)\n```") == "print(4)"  # last
    assert kind_of("gpqa_diamond", "r") == "gpqa" and kind_of("livecodebench_v6", "r") == "livecodebench"
    assert kind_of("MMLU", "r") == "mmlu"


def test_exact_match_weights_datasets_by_their_repeats():
    from language.gpt_oss.benchmark import exact_match

    names = ["aime25"] * 8 + ["gpqa_diamond"] * 5 + ["livecodebench_v6"] * 3 + ["other"]
    right = [True] * 4 + [False] * 4 + [True] * 5 + [False] * 3 + [True]
    # (4/8 + 5/5 + 0/3 + 1/1) / (8/8 + 5/5 + 3/3 + 1/1) = 2.5 / 4; unweighted it would be 10/17
    assert exact_match(names, right) == pytest.approx(62.5)


def test_sets_are_chosen_by_the_dataset_dir_with_their_output_limits(synth, tmp_path):
    import pandas as pd

    from evalkit.errors import KitError
    from language.gpt_oss.benchmark import BENCHMARK as b

    ds = b.open_dataset(synth / "dataset")
    assert ds.stem == "acc_eval_inputs" and ds.load(0).cap == 24  # the synthetic cap under 32,768
    perf = tmp_path / "perf"
    perf.mkdir()
    df = pd.read_parquet(synth / "dataset" / "acc_eval_inputs.parquet")[["input_tokens"]]
    df.to_parquet(perf / "perf_eval_ref.parquet")  # the performance set: prompts only
    p = b.open_dataset(perf)
    assert p.size == len(df) and p.load(1).cap == 10240 and b.fingerprint(perf, synth / "model")["set"] == "perf_eval_ref"
    with pytest.raises(KitError, match="lacks column"):  # no accuracy on the performance set
        b.score([(0, np.asarray(p.load(0).ids[:3], np.int32))], perf, 1, synth / "model")
    acc = tmp_path / "acc"  # the download's acc/: the accuracy set beside TEST07's GPQA set; the former is run
    shutil.copytree(synth / "dataset", acc)
    shutil.copy(acc / "acc_eval_inputs.parquet", acc / "acc_eval_compliance_gpqa.parquet")
    assert b.open_dataset(acc).stem == "acc_eval_inputs"
    shutil.copy(synth / "dataset" / "acc_eval_inputs.parquet", perf)
    with pytest.raises(KitError, match="keep one set per dataset dir"):
        b.open_dataset(perf)
    cp = evalkit("run", "gpt-oss-120b", "--dataset", tmp_path / "absent", "--model_path", synth / "model",
                 "--log_path", tmp_path / "run")
    assert "acc/ (accuracy) or perf/ (performance)" in one_line_error(cp)


def test_targets_and_checker_patterns():
    from evalkit import targets
    from language.gpt_oss.benchmark import BENCHMARK as b

    t = targets.get("gpt-oss-120b")
    assert [(x.metric, x.kind, x.value) for x in t.bounds] == [
        ("exact_match", "min", round(83.13 * 0.99, 10)), ("TOKENS_PER_SAMPLE", "max", round(9999 * 1.1, 10))]
    assert "v6.1" in t.source and b.dataset_size == 4395 and b.performance_sample_count == 6396
    assert b.options["max_new_tokens"] == 32768
    text = "\n".join(b.accuracy_lines({"exact_match": 83.5, "TOKENS_PER_SAMPLE": 9000.5, "GEN_NUM": 4395}))
    assert text == "{'exact_match': 83.5, 'tokens_per_sample': 9000.5, 'num-samples': 4395}"
    assert targets.parse_accuracy_txt(text, "exact_match") == [83.5]
    assert targets.parse_accuracy_txt(text, "TOKENS_PER_SAMPLE") == [9000.5]


def test_served_answers_stop_on_the_checkpoints_stop_ids(synth):
    """TokenTextIO (BACKEND=openai): the server is asked to stop on every stop id of the checkpoint's
    generation_config.json, an answer ending on one (here <|call|>, not the tokenizer's EOS) gets no
    EOS appended, and the trim cuts after the first stop id, as the in-process generator does."""
    from language.gpt_oss import harmony
    from language.gpt_oss.benchmark import BENCHMARK as b

    io = b.text_io(synth / "model", {})
    tok = io.tok
    ret, eot, call = (tok.convert_tokens_to_ids(t) for t in (harmony.RETURN, harmony.END_OF_TEXT, harmony.CALL))
    prompt = b.open_dataset(synth / "dataset").load(0)
    assert io.request(prompt)["generation"]["eos_token_id"] == [ret, eot, call]
    assert io.payload("", [5, 7, call], "stop", prompt).tolist() == [5, 7, call]
    assert io.payload("", [5, eot, 9, 9], "length", prompt).tolist() == [5, eot]
    assert io.payload("", [5, 7], "stop", prompt).tolist() == [5, 7, ret]  # text gives no id: the EOS
