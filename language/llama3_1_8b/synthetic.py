"""Synthetic CNN/DailyMail set for Llama-3.1-8B: a Llama-3-shaped byte-level BPE tokenizer built
here (<|begin_of_text|> added by its post-processor, <|eot_id|> its EOS, as the Instruct tokenizer),
a tiny random LlamaForCausalLM of the real architecture (GQA, llama3 RoPE scaling, theta 500000,
untied head, generation_config eos_token_id = [<|end_of_text|>, <|eom_id|>, <|eot_id|>]), and
cnn_eval.json in the published layout whose `output` is the model's own fp32 batch-1 greedy answer.
Generation is capped (generation.json) to keep the set fast."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from language.synthtext import lexicon, paragraph

MAX_NEW = 24          # generation cap of the synthetic set (generation.json)
BOS, EOT, END, EOM = "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"
# the Llama-3 special tokens a summary prompt meets (the real tokenizer has 256 reserved ones)
SPECIAL = (BOS, END, "<|start_header_id|>", "<|end_header_id|>", EOM, EOT)


def _tokenizer(rng, words, model_dir: Path):
    from tokenizers import processors

    from language.synthllm import train_bpe

    from .benchmark import PROMPT

    tok = train_bpe(rng, words, model_dir, 600, SPECIAL, [PROMPT.format(input="")], bos_token=BOS, eos_token=EOT)
    bos = tok.convert_tokens_to_ids(BOS)
    # as the real tokenizer.json: encode() prepends <|begin_of_text|> (download_cnndm.py's tok_input has it)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)])
    tok.save_pretrained(str(model_dir))
    return tok


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    from transformers import LlamaConfig

    from language.llm import Prompt
    from language.synthllm import ground_truth, padded_vocab, synth_dirs, tiny_causal_lm, write_generation_cap

    from .benchmark import DATACENTER_FILE, PROMPT

    ds_dir, model_dir = synth_dirs(out)
    rng = np.random.default_rng([seed, 318])
    words = lexicon(rng, 300)
    tok = _tokenizer(rng, words, model_dir)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    stops = {END, EOM}  # stop ids besides the tokenizer's EOS: some answers end with one of them
    cfg = LlamaConfig(vocab_size=padded_vocab(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072,
                      rope_theta=500000.0, rms_norm_eps=1e-5,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                      bos_token_id=ids[BOS], eos_token_id=[ids[END], ids[EOM], ids[EOT]],
                      tie_word_embeddings=False, architectures=["LlamaForCausalLM"])

    def gain(t: str) -> float:
        if t in stops:
            return 1.5
        return 0.0 if t in SPECIAL else float(any(c.isalnum() for c in t))

    tiny_causal_lm(cfg, seed, tok, model_dir, gain, eos_gain=1.5)

    from evalkit.synth import distinct, tile

    m = distinct(n)  # answers generated; beyond them the set repeats them (scale variant)
    records = []
    for i in range(4 * m):
        article = paragraph(rng, words, int(rng.integers(2, 7)))
        records.append({"instruction": {"llama": PROMPT}, "input": article,
                        "tok_input": tok(PROMPT.format(input=article))["input_ids"], "output": ""})
    prompts = [Prompt(np.asarray(r["tok_input"], dtype=np.int64), None, MAX_NEW) for r in records]

    def keep(t, out_ids, i):  # ROUGE-2 of an answer needs two words
        text = t.decode(out_ids.tolist(), skip_special_tokens=True)
        return sum(1 for w in "".join(c if c.isalnum() else " " for c in text).split()) >= 2

    kept = tile(ground_truth(bench, model_dir, prompts, keep, m, "llama3.1-8b", seed), n)
    table = []
    for i, out_ids in kept:
        r = dict(records[i])
        r["output"] = tok.decode(out_ids.tolist(), skip_special_tokens=True)
        table.append(r)
    (ds_dir / DATACENTER_FILE).write_text(json.dumps(table, indent=1, ensure_ascii=False))
    write_generation_cap(ds_dir, MAX_NEW)
    return [out_ids for _, out_ids in kept]
