"""GPT-J generation on CPU: the kit's loop (language/generate.py) vs HF `generate`, equal batch,
equal tokens.

GPT-J architecture at a CPU size (GPTJForCausalLM from a config, the real vocab of 50400 rows,
rotary 64, random weights scaled up as the synthetic model's so that beams are well separated),
the synthetic BPE tokenizer of language/gptj, CNN/DM-shaped prompts (Alpaca template around a
news-like article). Every path gets the same prompts in the same batches of --batch (HF:
left-padded, pad = eos, as the kit's `generator=hf`; kit: `generate(..., token_budget=huge)` so
it does not re-cut them), the reference generation settings (beam 4, min 30 new tokens,
early stopping) and --max_new_tokens. The script asserts that the token ids are identical, then
prints seconds and samples/s. Optional: --per_sample adds the reference SUT's batch-1 HF loop.
Goal: kit >= HF generate at equal batch.

    .venv/bin/python bench/bench_gptj_generate.py [--n 16] [--batch 8] [--layers 2] [--d_model 512]
        [--max_new_tokens 64] [--sentences 4 9] [--num_beams 4] [--per_sample]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from language.generate import generate  # noqa: E402
from language.gptj.benchmark import GEN_DEFAULTS, MAX_INPUT_TOKENS, PROMPT_INPUT, load_tokenizer  # noqa: E402
from language.gptj.synthetic import _train_tokenizer  # noqa: E402
from language.synthtext import lexicon, paragraph  # noqa: E402


def build_model(layers: int, d_model: int, eos: int, seed: int):
    from transformers import GPTJConfig, GPTJForCausalLM

    cfg = GPTJConfig(vocab_size=50400, n_positions=2048, n_embd=d_model, n_layer=layers, n_head=d_model // 64,
                     rotary_dim=64, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    model = GPTJForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 2.0 / p.shape[1] ** 0.5)
        model.transformer.wte.weight.normal_(0.0, 1.0)
    return model.eval()


def prompts(n: int, seed: int, words: list[str], sentences: tuple[int, int]) -> list[str]:
    rng = np.random.default_rng([seed, 1])
    return [PROMPT_INPUT.format(instruction="Summarize the following news article:",
                                input=paragraph(rng, words, int(rng.integers(*sentences)))) for _ in range(n)]


def cut(row: np.ndarray, eos: int) -> np.ndarray:
    hit = np.flatnonzero(row == eos)
    return row[: hit[0] + 1] if hit.size else row


def hf_batch(model, batch: list[list[int]], eos: int, gen: dict) -> list[np.ndarray]:
    L = max(map(len, batch))
    ids = torch.full((len(batch), L), eos, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    for r, p in enumerate(batch):
        ids[r, L - len(p):], mask[r, L - len(p):] = torch.tensor(p), 1
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, **gen, do_sample=False, pad_token_id=eos,
                             eos_token_id=eos)
    return [cut(r, eos) for r in out[:, L:].numpy()]


def kit_batch(model, batch: list[list[int]], eos: int, gen: dict) -> list[np.ndarray]:
    return generate(model, batch, **gen, eos_token_id=eos, pad_token_id=eos, token_budget=1 << 40)


def timed(fn, ids: list[list[int]], batch: int):
    t0 = time.perf_counter()
    out = []
    for i in range(0, len(ids), batch):
        out += fn(ids[i:i + batch])
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d_model", type=int, default=512)
    ap.add_argument("--num_beams", type=int, default=GEN_DEFAULTS["num_beams"])
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--sentences", type=int, nargs=2, default=(4, 9), help="article sentences [lo, hi)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--per_sample", action="store_true", help="also time HF generate one prompt at a time")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng([a.seed, 7])
    words = lexicon(rng, 300)  # the tokenizer is trained on these words, the prompts use them
    with tempfile.TemporaryDirectory() as tmp:
        _train_tokenizer(rng, words, Path(tmp))
        tok = load_tokenizer(Path(tmp))
    eos = tok.eos_token_id
    model = build_model(a.layers, a.d_model, eos, a.seed)
    gen = dict(GEN_DEFAULTS, num_beams=a.num_beams, max_new_tokens=a.max_new_tokens)
    ids = [tok(p, truncation=True, max_length=MAX_INPUT_TOKENS)["input_ids"]
           for p in prompts(a.n, a.seed, words, tuple(a.sentences))]
    lens = [len(x) for x in ids]

    kit_batch(model, ids[:1], eos, dict(gen, max_new_tokens=2, min_new_tokens=0))  # warm-up (allocator, oneDNN), not timed
    hf_batch(model, ids[:1], eos, dict(gen, max_new_tokens=2, min_new_tokens=0))
    rows = []
    t_hf, ref = timed(lambda b: hf_batch(model, b, eos, gen), ids, a.batch)
    rows.append((f"HF generate (batch {a.batch})", t_hf))
    t_kit, kit = timed(lambda b: kit_batch(model, b, eos, gen), ids, a.batch)
    rows.append((f"kit generate (batch {a.batch})", t_kit))
    if a.per_sample:
        t_one, one = timed(lambda b: hf_batch(model, b, eos, gen), ids, 1)
        rows.insert(0, ("HF generate per sample (reference SUT)", t_one))
        assert all(np.array_equal(x, y) for x, y in zip(one, kit)), "batch-1 HF ids differ from the kit's"
    for i, (r, k) in enumerate(zip(ref, kit)):
        assert np.array_equal(r, k), f"prompt {i}: kit ids differ from HF generate's"
    new = [len(k) for k in kit]
    print(f"GPT-J arch {a.layers} layers, d_model {a.d_model}, vocab 50400, random weights, fp32, CPU, "
          f"{a.threads} threads, load avg {os.getloadavg()[0]:.1f}, one run")
    print(f"{a.n} prompts, {min(lens)}-{max(lens)} tokens (mean {np.mean(lens):.0f}); beam {a.num_beams}, "
          f"min_new_tokens {gen['min_new_tokens']}, max_new_tokens {a.max_new_tokens}; "
          f"generated {min(new)}-{max(new)} tokens; token ids identical for all {a.n} prompts")
    print(f"| {'path':<40} | {'seconds':>8} | {'samples/s':>9} | {'vs HF batched':>13} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 11}|{'-' * 15}|")
    for name, t in rows:
        print(f"| {name:<40} | {t:>8.1f} | {a.n / t:>9.3f} | {t_hf / t:>12.2f}x |")


if __name__ == "__main__":
    main()
