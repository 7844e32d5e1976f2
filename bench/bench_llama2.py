"""Llama-2 greedy generation on CPU: the kit's batched path vs a per-sample loop, same tokens.

A Llama-2-shaped model at CPU size (LlamaForCausalLM from a config: Llama-2's 32000-row vocab,
grouped-query attention, SwiGLU; random weights spread as the synthetic model's), prompts of
OpenOrca-like length from the synthetic Llama tokenizer (language/synthllm.py). Rows:
  per-sample    the reference Server SUT's way: one prompt per HF generate call
  batched       the kit's Offline path (language/llm.py LLMRunner: left-padded batches of --batch,
                HF generate, greedy, SDPA), payloads trimmed after the first EOS
each with the static KV cache (the kit's default, option static_cache) and HF's dynamic cache, and
  kit generator the `generator=kit` option: language/generate.py on all prompts at once (it sorts
                them by length and cuts token-budget batches; finished prompts leave the batch)
The script asserts that every row returns the same token ids as per-sample/static, then prints
seconds, generated tokens/s and the speed-up.

    .venv/bin/python bench/bench_llama2.py [--n 16] [--batch 8] [--layers 4] [--d_model 512]
        [--max_new_tokens 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from language.llm import LLMRunner, Prompt, cut_after_eos  # noqa: E402
from language.synthllm import llama_style_tokenizer, spread_weights  # noqa: E402
from language.synthtext import lexicon, paragraph  # noqa: E402


def build(layers: int, d_model: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=d_model, intermediate_size=d_model * 11 // 4,
                      num_hidden_layers=layers, num_attention_heads=d_model // 64,
                      num_key_value_heads=max(1, d_model // 256), max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, attn_implementation="sdpa")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    spread_weights(model, gain=2.0)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d_model", type=int, default=512)
    ap.add_argument("--max_new_tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng([a.seed, 3])
    words = lexicon(rng, 300)
    with tempfile.TemporaryDirectory() as d:
        tok = llama_style_tokenizer(rng, words, Path(d))
    tok.pad_token = tok.eos_token
    prompts = [Prompt(np.asarray(tok(paragraph(rng, words, int(rng.integers(3, 12))))["input_ids"], dtype=np.int64))
               for _ in range(a.n)]
    model = build(a.layers, a.d_model, a.seed)
    lens = [len(p.ids) for p in prompts]
    print(f"Llama-shaped: {a.layers} layers, d_model {a.d_model}, vocab 32000; {a.n} prompts of {min(lens)}-{max(lens)} "
          f"tokens; max_new_tokens {a.max_new_tokens}; {a.threads} threads")

    def run(batch: int, static: bool, generator: str = "hf") -> tuple[float, list[np.ndarray]]:
        g = LLMRunner(tok, model, ["cpu"], {"max_new_tokens": a.max_new_tokens, "min_new_tokens": 1,
                                             "static_cache": static, "generator": generator})
        g.generate(prompts[:1])  # warm-up
        t = time.perf_counter()
        out = []
        for i in range(0, a.n, batch):
            out += [cut_after_eos(r, tok.eos_token_id) for r in g.generate(prompts[i:i + batch])]
        return time.perf_counter() - t, out

    rows = []
    ref = None
    paths = [(f"{name}, {'static' if static else 'dynamic'} cache", batch, static, "hf")
             for name, batch in (("per-sample", 1), (f"batched ({a.batch})", a.batch)) for static in (True, False)]
    paths.append((f"kit generator ({a.n} at once)", a.n, False, "kit"))
    for name, batch, static, generator in paths:
        sec, out = run(batch, static, generator)
        if ref is None:
            ref = out
        assert all(np.array_equal(x, y) for x, y in zip(ref, out)), f"{name}: token ids differ from per-sample/static"
        rows.append((name, sec, sum(len(x) for x in out) / sec))
    base = rows[0][2]
    print(f"{'path':<34} {'seconds':>8} {'tokens/s':>9} {'speed-up':>9}")
    for name, sec, tps in rows:
        print(f"{name:<34} {sec:8.2f} {tps:9.1f} {tps / base:8.2f}x")
    print("same tokens in every row: yes")


if __name__ == "__main__":
    main()
