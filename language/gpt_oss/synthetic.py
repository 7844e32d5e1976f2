"""Synthetic gpt-oss-120b set: a tokenizer with o200k_harmony's special tokens (in their id
order; <|return|> its EOS, <|endoftext|> its pad, as the checkpoint's) trained here, a tiny random
GptOssForCausalLM (sliding + full attention layers, attention sinks, 4 experts) in the HF checkpoint
layout, prompts rendered in the harmony format (language/gpt_oss/harmony.py, reasoning effort high)
and tokenised, the accuracy set's parquet layout with the accuracy set's datasets (aime25,
gpqa_diamond, livecodebench_v6, in turn); answers = the model's own fp32 batch-1 greedy output.

So that every rule scores exactly on the model's own output, the tiny model writes only digits,
newlines, the letters A-J, the phrases the extractors look for ("\\boxed{", "}", "Answer: ",
"```python\\n", "\\n```") and harmony's channel markers (<|channel|>, final, analysis, <|message|>,
<|end|>, <|start|>, assistant), so outputs carry final sections; a candidate prompt is kept only
when the rule of a set still short of rows extracts an answer from its output (decoded keeping the
special tokens, as the reference decodes); the ground truth is that answer (LiveCodeBench: a
question_id whose tests, in livecodebench/test.jsonl, the extracted program - lines of digits -
passes: no input, no output; its private cases pickled as the release ships them)."""
from __future__ import annotations

import base64
import json
import pickle
import re
import zlib
from pathlib import Path

import numpy as np

from language.synthtext import lexicon, sentence

from . import harmony

MAX_NEW = 24
PHRASES = ("\\boxed{", "}", "Answer: ", "```python\n", "\n```")
ROLES = ("assistant", "analysis", "final")
MARKERS = (harmony.CHANNEL, harmony.MESSAGE, harmony.END, harmony.START)
LETTERS = tuple("ABCDEFGHIJ")
SETS = ("aime25", "gpqa_diamond", "livecodebench_v6")
KIND = {"aime25": "aime", "gpqa_diamond": "gpqa", "livecodebench_v6": "livecodebench"}
CODE = re.compile(r"^[1-9\n]+$")


def _gain(text: str) -> float:
    if text in PHRASES:
        return 1.6
    if text in MARKERS or text in ROLES:
        return 1.3
    if text in LETTERS:
        return 1.0
    if text and set(text) <= set("123456789\n") and len(text) <= 2:
        return 1.0
    return 0.0


def tokenizer(rng, words, model_dir: Path):
    from language.synthllm import train_bpe

    tok = train_bpe(rng, words, model_dir, 600, harmony.SPECIAL, [], bos_token=harmony.START_OF_TEXT,
                    eos_token=harmony.RETURN, pad_token=harmony.END_OF_TEXT)
    tok.add_tokens(list(PHRASES) + list(ROLES))
    tok.save_pretrained(str(model_dir))
    return tok


def _private(cases: list) -> str:
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import pandas as pd
    from transformers import GenerationConfig, GptOssConfig

    from evalkit.synth import distinct
    from language.llm import Prompt
    from language.synthllm import ground_truth, padded_vocab, synth_dirs, tiny_causal_lm, write_generation_cap

    from . import answers
    from .benchmark import ACCURACY_SET

    ds_dir, model_dir = synth_dirs(out)
    rng = np.random.default_rng([seed, 120])
    words = lexicon(rng, 300)
    tok = tokenizer(rng, words, model_dir)
    stops = [tok.convert_tokens_to_ids(t) for t in (harmony.RETURN, harmony.END_OF_TEXT, harmony.CALL)]
    cfg = GptOssConfig(
        vocab_size=padded_vocab(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=32, max_position_embeddings=131072, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=stops, pad_token_id=tok.pad_token_id,
        architectures=["GptOssForCausalLM"])
    tiny_causal_lm(cfg, seed, tok, model_dir, _gain, eos_gain=1.0)
    # the checkpoint's stop ids, as openai/gpt-oss-120b's generation_config.json lists them
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=stops,
                     pad_token_id=tok.pad_token_id).save_pretrained(str(model_dir))

    n_all, n = n, distinct(n)  # rows answered; beyond them the set repeats them (scale variant)
    slots = {k: list(range(i, n, len(SETS))) for i, k in enumerate(SETS)}
    cands = []
    for _ in range(80 * n):
        question = " ".join(sentence(rng, words) for _ in range(int(rng.integers(1, 3))))
        cands.append({"question": question, "input_tokens": harmony.prompt_ids(tok, question, "high")})
    prompts = [Prompt(np.asarray(c["input_tokens"], dtype=np.int64), None, MAX_NEW) for c in cands]
    filled = dict.fromkeys(SETS, 0)
    truth: dict[int, tuple[str, object]] = {}

    def keep(t, ids, i):
        # a prompt's set is chosen after its answer: the first set (rarest answers first) still short
        # of rows whose rule extracts an answer from the text decoded as the reference decodes it
        text = t.decode(ids.tolist(), skip_special_tokens=False)
        for name in ("livecodebench_v6", "gpqa_diamond", "aime25"):
            if filled[name] == len(slots[name]):
                continue
            got = answers.parse(KIND[name], text)
            if got is None or got == "" or (name == "livecodebench_v6" and not CODE.match(got)):
                continue
            filled[name] += 1
            truth[i] = (name, got)
            return True
        return False

    kept = ground_truth(bench, model_dir, prompts, keep, n, "gpt-oss-120b", seed)
    table, payloads, problems = [None] * n, [None] * n, []
    for name in SETS:
        for slot, (c, ids) in zip(slots[name], [(c, ids) for c, ids in kept if truth[c][0] == name]):
            row = dict(cands[c], dataset=name)
            if name == "livecodebench_v6":
                qid = f"synthetic_lcb_{slot}"
                row["ground_truth"] = qid
                problems.append({"question_id": qid, "question_title": f"synthetic {slot}", "platform": "synthetic",
                                 "public_test_cases": json.dumps([{"input": "", "output": "", "testtype": "stdin"}]),
                                 "private_test_cases": _private([{"input": "\n", "output": "\n", "testtype": "stdin"}]),
                                 "metadata": "{}"})
            else:
                row["ground_truth"] = str(truth[c][1])
            row["ref_output"] = tok.decode(ids.tolist(), skip_special_tokens=False)
            table[slot], payloads[slot] = row, ids
    by_id = {p["question_id"]: p for p in problems}
    for k in range(n, n_all):  # row k is a copy of row k % n; a LiveCodeBench copy has its own problem id
        row = dict(table[k % n])
        if row["dataset"] == "livecodebench_v6":
            row["ground_truth"] = qid = f"synthetic_lcb_{k}"
            problems.append(dict(by_id[table[k % n]["ground_truth"]], question_id=qid, question_title=f"synthetic {k}"))
        table.append(row)
        payloads.append(payloads[k % n])
    pd.DataFrame(table).to_parquet(ds_dir / f"{ACCURACY_SET}.parquet", index=False)  # published as parquet
    lcb = ds_dir / "livecodebench"
    lcb.mkdir(exist_ok=True)
    (lcb / "test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    write_generation_cap(ds_dir, MAX_NEW)
    return payloads
