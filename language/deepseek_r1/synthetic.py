"""Synthetic DeepSeek-R1 set: a DeepSeek-shaped BPE tokenizer (its special tokens and chat
template) and a tiny random DeepseekV3ForCausalLM (MLA attention, shared + routed experts) built
here, the published pickle columns, rows AIME / MATH500 / GPQA / MMLU-Pro / LiveCodeBench in turn,
answers = the model's own fp32 batch-1 greedy output.

So that every rule scores exactly on the model's own output, the tiny model writes only digits,
newlines, the letters A-J and the phrases the reference's extractors look for ("\\boxed{",
"}", "Answer: ", "ANSWER: ", "```python\\n", "\\n```", added tokens), and a candidate prompt is kept
only when the rule of a set still short of rows extracts an answer from its output (its set is
chosen after its answer: the prompts are sentences of no set in particular); the ground truth is that answer
(LiveCodeBench: a question_id whose tests, in livecodebench/test.jsonl, the extracted program -
lines of digits - passes: no input, no output; its private cases pickled as the release ships them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from language.synthtext import lexicon, sentence

MAX_NEW = 24
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
SPECIAL = (BOS, EOS, "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>")
PHRASES = ("\\boxed{", "}", "Answer: ", "ANSWER: ", "```python\n", "\n```")
LETTERS = tuple("ABCDEFGHIJ")
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
                 "{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}")
SETS = ("aime", "math500", "gpqa", "mmlu_pro", "livecodebench")
PHRASE_GAIN = 1.6


def _gain(text: str) -> float:
    if text in PHRASES:
        return PHRASE_GAIN
    if text in LETTERS:
        return 1.0
    if text and set(text) <= set("123456789\n") and len(text) <= 2:
        return 1.0
    return 0.0


def tokenizer(rng, words, model_dir: Path):
    from language.synthllm import train_bpe

    tok = train_bpe(rng, words, model_dir, 600, SPECIAL, [], bos_token=BOS, eos_token=EOS)
    tok.add_tokens(list(PHRASES))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(model_dir))
    return tok


def prompt_ids(tok, question: str) -> list[int]:
    out = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import pandas as pd
    from transformers import DeepseekV3Config

    from language.frames import write_table
    from language.llm import Prompt
    from language.reasoning.synthetic import answered_rows, write_problems
    from language.synthllm import padded_vocab, synth_dirs, tiny_causal_lm, write_generation_cap

    from . import answers

    ds_dir, model_dir = synth_dirs(out)
    rng = np.random.default_rng([seed, 671])
    words = lexicon(rng, 300)
    tok = tokenizer(rng, words, model_dir)
    cfg = DeepseekV3Config(
        vocab_size=padded_vocab(tok), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, first_k_dense_replace=1, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
        n_group=1, topk_group=1, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=16,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=2048, rope_scaling=None,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
        architectures=["DeepseekV3ForCausalLM"])
    tiny_causal_lm(cfg, seed, tok, model_dir, _gain, eos_gain=1.0)

    from evalkit.synth import distinct

    n_all, n = n, distinct(n)  # rows answered; beyond them the set repeats them (scale variant)
    cands = []
    for c in range(80 * n):
        question = " ".join(sentence(rng, words) for _ in range(int(rng.integers(1, 3))))
        cands.append({"question": question, "text_input": question, "tok_input": prompt_ids(tok, question)})
    prompts = [Prompt(np.asarray(c["tok_input"], dtype=np.int64), None, MAX_NEW) for c in cands]
    # ~1 in 100 candidates ends in a LiveCodeBench program: generated 64 at a time (the kept ones at batch 1)
    table, payloads, problems = answered_rows(
        bench, model_dir, tok, cands, prompts, SETS, ("livecodebench", "gpqa", "aime", "math500", "mmlu_pro"),
        "livecodebench", lambda kind, text: answers.parse(kind, text.strip()), n, n_all, seed,
        skip_special_tokens=True, row_extra=lambda row: row.update(tok_input_len=len(row["tok_input"])), batch=64)
    write_table(pd.DataFrame(table), ds_dir, bench.pickle_name)
    write_problems(ds_dir, problems)
    write_generation_cap(ds_dir, MAX_NEW)
    return payloads
