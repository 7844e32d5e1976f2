"""Synthetic OpenOrca set for Llama-2: a Llama-shaped BPE tokenizer and a tiny random
LlamaForCausalLM built here, the published pickle columns, `output` = the model's own fp32
batch-1 greedy answer. Generation is capped (generation.json) to keep the set fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from language.synthtext import lexicon, paragraph, sentence

MAX_NEW = 24          # generation cap of the synthetic set (generation.json)
SYSTEM = "You are an AI assistant. Provide a detailed answer so user don't need to search outside to understand the answer."
CHAT = "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]"


def _words(text: str) -> int:
    return sum(1 for w in "".join(c if c.isalnum() else " " for c in text).split())


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import pandas as pd
    from transformers import LlamaConfig

    from language.frames import write_table
    from language.llm import Prompt
    from evalkit.synth import distinct, tile
    from language.synthllm import (ground_truth, llama_style_tokenizer, padded_vocab, synth_dirs, tiny_causal_lm,
                                   write_generation_cap)

    ds_dir, model_dir = synth_dirs(out)
    rng = np.random.default_rng([seed, 70])
    words = lexicon(rng, 300)
    tok = llama_style_tokenizer(rng, words, model_dir, [SYSTEM, "[INST] <<SYS>> <</SYS>> [/INST]"])
    cfg = LlamaConfig(vocab_size=padded_vocab(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    tiny_causal_lm(cfg, seed, tok, model_dir, lambda t: float(any(c.isalnum() for c in t)), eos_gain=2.0)

    rows = []
    m = distinct(n)  # answers generated; beyond them the set repeats them (evalkit.synth.distinct)
    for i in range(4 * m):
        question = f"{sentence(rng, words)} {paragraph(rng, words, int(rng.integers(1, 6)))}"
        text = CHAT.format(system=SYSTEM, question=question)
        rows.append({"id": f"synthetic.{i}", "system_prompt": SYSTEM, "question": question, "input": text,
                     "tok_input": tok(text, add_special_tokens=False)["input_ids"]})
    prompts = [Prompt(np.asarray(r["tok_input"], dtype=np.int64), None, MAX_NEW) for r in rows]
    # ROUGE-2 of an answer needs two words: keep prompts whose answer has them
    kept = ground_truth(bench, model_dir, prompts,
                        lambda t, ids, i: _words(t.decode(ids.tolist(), skip_special_tokens=True)) >= 2, m,
                        "llama2", seed)
    kept = tile(kept, n)
    table = []
    for k, (i, ids) in enumerate(kept):
        r = dict(rows[i])
        if k >= m:
            r["id"] = f"synthetic.{i}.copy{k}"
        r["output"] = tok.decode(ids.tolist(), skip_special_tokens=True)
        r["tok_input_length"] = len(r["tok_input"])
        r["origin"] = "synthetic"
        table.append(r)
    write_table(pd.DataFrame(table), ds_dir, bench.pickle_name)
    write_generation_cap(ds_dir, MAX_NEW)
    return [ids for _, ids in kept]
