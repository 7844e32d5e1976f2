"""Synthetic GPT-J set: a byte-level BPE tokenizer trained here, a tiny random GPTJForCausalLM,
cnn_eval.json in the real format whose `output` is the model's own fp32 batch-1 generation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evalkit.errors import KitError
from language.synthllm import spread_weights, train_bpe
from language.synthtext import lexicon, paragraph

EOS = "<|endoftext|>"
_VOCAB = 600          # tiny BPE vocab: fast softmax / beam search on CPU
_LONG_SAMPLE = 2      # this sample's article is longer than 1919 tokens: exercises truncation


def _train_tokenizer(rng, words, model_dir: Path):
    # GPT-J's tokenizer: GPT-2 byte-level BPE, <|endoftext|> as bos/eos/unk
    return train_bpe(rng, words, model_dir, _VOCAB, [EOS],
                     ["Below is an instruction that describes a task, paired with an input that provides further "
                      "context. Write a response that appropriately completes the request. ### Instruction: "
                      "Summarize the following news article: ### Input: ### Response:"],
                     bos_token=EOS, eos_token=EOS, unk_token=EOS)


def _build_model(seed: int, tok, model_dir: Path):
    import torch
    from transformers import GPTJConfig, GPTJForCausalLM

    vocab = len(tok)
    # Like the real checkpoint (50400 rows for 50257 tokens): the embedding is padded past the tokenizer.
    cfg = GPTJConfig(vocab_size=(vocab + 63) // 64 * 64, n_positions=2048, n_embd=64, n_layer=2, n_head=4,
                     rotary_dim=16, n_inner=256, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                     tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTJForCausalLM(cfg)
        spread_weights(model)  # the output must depend on the prompt (index shifts)
        with torch.no_grad():
            model.transformer.wte.weight.normal_(0.0, 1.0)
            bias = torch.zeros(cfg.vocab_size)
            # Favour tokens that carry letters/digits (ROUGE ignores the rest) and never the padded ids.
            for i in range(cfg.vocab_size):
                text = tok.decode([i]) if i < vocab else ""
                if i >= vocab:
                    bias[i] = -1e4
                elif not any(c.isalnum() for c in text):
                    bias[i] = -4.0
            bias[tok.eos_token_id] = -1.0
            model.lm_head.bias.copy_(bias)
    model.save_pretrained(str(model_dir))


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    ds_dir, model_dir = out / "dataset", out / "model"
    ds_dir.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    words = lexicon(rng, 300)
    tok = _train_tokenizer(rng, words, model_dir)
    _build_model(seed, tok, model_dir)

    from evalkit.synth import distinct

    m = distinct(n)  # articles summarised; beyond them the set repeats them (evalkit.synth.distinct)
    samples = []
    for i in range(m):
        n_sent = 62 if i == _LONG_SAMPLE else int(rng.integers(3, 10))
        samples.append({"instruction": "Summarize the following news article:",
                        "input": paragraph(rng, words, n_sent), "output": ""})
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread beats contended cores
    try:
        return _ground_truth(bench, ds_dir, model_dir, samples, seed, n)
    finally:
        torch.set_num_threads(threads)


def _ground_truth(bench, ds_dir, model_dir, samples, seed, n):
    g = bench.load_model(model_dir, "cpu", "fp32", {"generator": "hf"})  # truth: HF generate itself
    from .benchmark import PROMPT_INPUT

    payloads = []
    for s in samples:  # ground truth: fp32, batch 1, reference generation settings
        ids = bench.postprocess(bench.forward(g, [PROMPT_INPUT.format(**s)]), 1)[0]
        payloads.append(ids)
        s["output"] = g.tok.decode(ids.tolist(), skip_special_tokens=True)
        if not any(c.isalnum() for c in s["output"]):
            raise KitError(f"synthetic gpt-j sample {len(payloads) - 1} generated no word (seed {seed}); "
                           f"try another --seed.")
    from evalkit.synth import tile

    samples, payloads = tile(samples, n), tile(payloads, n)
    (ds_dir / "cnn_eval.json").write_text(json.dumps(samples, indent=1))
    return payloads
