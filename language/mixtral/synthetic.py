"""Synthetic 3-part set for Mixtral: a Llama-shaped BPE tokenizer and a tiny random
MixtralForCausalLM built here, the published pickle columns, answers = the model's own fp32
batch-1 greedy output, rows OpenOrca / GSM8K / MBXP in turn.

So that all three metrics are exact on the model's own output, the tiny model only ever writes
lines of digits (its lm_head is restricted to tokens made of 1-9 and newlines): such a text is
a valid Python program (expression statements), always holds a number, and still differs from
prompt to prompt. GSM8K's `gt_output` is the number the reference rules extract from it; an
MBXP row's test (Python) passes only when the program's text before the test is exactly the
model's own solution (it hashes its own source)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from language.synthtext import lexicon, sentence

from . import gsm8k, mbxp

MAX_NEW = 24
DIGITS = set("123456789\n")   # no 0: "0123" is not a Python literal
STOP_TEXT = "\n```\n"
MARK = "#SYNTH-END"
NEWLINE_GAIN = 3.0
CHAT = "<s> [INST] {question} [/INST]"
TEST = (MARK + "\ndef check(candidate):\n    import hashlib, sys\n"
        "    body = open(sys.argv[0]).read().split({mark!r})[0]\n"
        "    assert hashlib.sha256(body.strip().encode()).hexdigest() == {digest!r}\n\n"
        "def {entry}():\n    pass\n")


def _gain(text: str) -> float:
    """Only digit/newline tokens; newlines boosted so that answers are several numbers."""
    if not text or not set(text) <= DIGITS:
        return 0.0
    return NEWLINE_GAIN if "\n" in text else 1.0


def _numbers_line(rng) -> str:
    return "\n".join("".join(str(int(d)) for d in rng.integers(1, 10, int(rng.integers(1, 5))))
                     for _ in range(int(rng.integers(2, 6))))


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import pandas as pd
    from transformers import MixtralConfig

    from language.frames import write_table
    from language.llm import Prompt
    from evalkit.synth import distinct
    from language.synthllm import (ground_truth, llama_style_tokenizer, padded_vocab, synth_dirs, tiny_causal_lm,
                                   write_generation_cap)

    from .benchmark import KINDS

    ds_dir, model_dir = synth_dirs(out)
    rng = np.random.default_rng([seed, 87])
    words = lexicon(rng, 300)
    extra = [_numbers_line(rng) for _ in range(300)] + ["[INST] [/INST] The answer is", STOP_TEXT]
    tok = llama_style_tokenizer(rng, words, model_dir, extra)
    cfg = MixtralConfig(vocab_size=padded_vocab(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=2048, sliding_window=None, bos_token_id=1, eos_token_id=2,
                        tie_word_embeddings=False, architectures=["MixtralForCausalLM"])
    tiny_causal_lm(cfg, seed, tok, model_dir, _gain, eos_gain=2.0)
    stop = tok(STOP_TEXT, add_special_tokens=False)["input_ids"]

    # rows OpenOrca, GSM8K, MBXP in turn; candidates of each kind until its rows are filled
    n_all, n = n, distinct(n)  # answers generated; beyond them the set repeats them (evalkit.synth.distinct)
    slots = {kind: list(range(k, n, len(KINDS))) for k, kind in enumerate(KINDS)}
    cands = []
    for c in range(4 * n):
        kind = KINDS[c % len(KINDS)]
        question = " ".join(sentence(rng, words) for _ in range(int(rng.integers(1, 4))))
        text = CHAT.format(question=question)
        cands.append({"dataset": kind, "question": question, "input": text,
                      "tok_input": tok(text, add_special_tokens=False)["input_ids"]})
    prompts = [Prompt(np.asarray(c["tok_input"], dtype=np.int64), tuple(stop) if c["dataset"] == "MBXP" else None,
                      MAX_NEW) for c in cands]
    filled = dict.fromkeys(KINDS, 0)

    def keep(t, ids, i):
        # two numbers per answer: ROUGE-2 needs two words, GSM8K one number
        kind = cands[i]["dataset"]
        if filled[kind] == len(slots[kind]) or len(gsm8k.find_numbers(t.decode(ids.tolist(), skip_special_tokens=True))) < 2:
            return False
        filled[kind] += 1
        return True

    kept = ground_truth(bench, model_dir, prompts, keep, n, "mixtral", seed)
    table, payloads = [None] * n, [None] * n
    for kind in KINDS:
        for slot, (c, ids) in zip(slots[kind], [(c, ids) for c, ids in kept if cands[c]["dataset"] == kind]):
            row = dict(cands[c])
            answer = tok.decode(ids.tolist(), skip_special_tokens=True)
            row["id"] = f"synthetic_{slot}"
            row["ref_output"] = answer
            if kind == "GSM8K":
                row["gt_output"] = gsm8k.extract(answer)
            elif kind == "MBXP":
                entry = f"synth_{slot}"
                row["id"] = f"python_{entry}"
                digest = hashlib.sha256(mbxp.solution("python", answer).strip().encode()).hexdigest()
                row["gt_output"] = TEST.format(mark=MARK, digest=digest, entry=entry)
            else:
                row["gt_output"] = answer
            row.update(stop_sequence=STOP_TEXT if kind == "MBXP" else "",
                       tok_stop_sequence=stop if kind == "MBXP" else [],
                       tok_input_len=len(row["tok_input"]), tok_ref_output=ids.tolist(), tok_ref_output_len=len(ids))
            table[slot], payloads[slot] = row, ids
    for slot in range(n, n_all):  # the scale variant's copies, each with its own id (and MBXP entry)
        row = dict(table[slot % n])
        row["id"] = f"synthetic_{slot}"
        if row["dataset"] == "MBXP":
            entry = f"synth_{slot}"
            row["id"] = f"python_{entry}"
            digest = hashlib.sha256(mbxp.solution("python", row["ref_output"]).strip().encode()).hexdigest()
            row["gt_output"] = TEST.format(mark=MARK, digest=digest, entry=entry)
        table.append(row)
        payloads.append(payloads[slot % n])
    write_table(pd.DataFrame(table), ds_dir, bench.pickle_name)
    write_generation_cap(ds_dir, MAX_NEW)
    return payloads
