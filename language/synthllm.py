"""Pieces of the synthetic LLM sets (GPT-J, Llama-2, Mixtral): a byte-level BPE tokenizer
trained here on synthetic text (no downloads), random weights large enough that the output
depends on the prompt, and the decoded text of every vocabulary row."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from language.synthtext import paragraph


def train_bpe(rng: np.random.Generator, words: list[str], model_dir: Path, vocab: int,
              special: Sequence[str], extra: Sequence[str] = (), repeat_extra: int = 20, **roles):
    """Byte-level BPE trained on 400 synthetic paragraphs (+ `extra` lines repeated), saved as an HF
    tokenizer in model_dir. `special`: special tokens in id order; `roles`: bos_token=..., eos_token=..."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [paragraph(rng, words, 6) for _ in range(400)]
    corpus += list(extra) * repeat_extra
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=2048, **roles)
    hf.save_pretrained(str(model_dir))
    return hf


def padded_vocab(tok, multiple: int = 64) -> int:
    """Embedding rows past the tokenizer, like the real checkpoints (GPT-J 50400 for 50257)."""
    return (len(tok) + multiple - 1) // multiple * multiple


def row_texts(tok, rows: int) -> list[str | None]:
    """Decoded text of each embedding row; None for rows past the tokenizer."""
    n = len(tok)
    return [tok.decode([i]) if i < n else None for i in range(rows)]


def spread_weights(model, gain: float = 4.0) -> None:
    """Matrices ~ N(0, (gain * 0.5 / sqrt(fan_in))^2), larger than HF's 0.02 init: a near-constant
    model writes the same text for every prompt and would hide index shifts."""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.5 / p.shape[1] ** 0.5 * gain)


def restrict_lm_head(lm_head_weight, texts: Sequence[str | None], gain, eos_id: int, eos_gain: float) -> None:
    """For heads without a bias (Llama, Mixtral): scale each token's row by `gain(text)`; 0 zeroes it,
    so its logit is 0 while the max over the many random allowed rows is almost surely positive
    (never generated); > 1 makes a token more frequent. The EOS row is scaled by eos_gain (how
    soon outputs end)."""
    import torch

    with torch.no_grad():
        for i, t in enumerate(texts):
            if i == eos_id:
                lm_head_weight[i].mul_(eos_gain)
            else:
                lm_head_weight[i].mul_(0.0 if t is None else float(gain(t)))


LLAMA_SPECIAL = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in the Llama-2 / Mixtral tokenizers


def llama_style_tokenizer(rng: np.random.Generator, words: list[str], model_dir: Path, extra: Sequence[str] = ()):
    """A Llama/Mixtral-shaped tokenizer: <unk>=0, <s>=1, </s>=2 (eos; the references pad with it)."""
    return train_bpe(rng, words, model_dir, 600, LLAMA_SPECIAL, extra, unk_token="<unk>", bos_token="<s>",
                     eos_token="</s>")


def tiny_causal_lm(config, seed: int, tok, model_dir: Path, gain, eos_gain: float):
    """A random decoder from `config` (a transformers config of a *ForCausalLM), spread weights,
    unit-variance embeddings, lm_head rows scaled by `gain(text)` (restrict_lm_head); saved to model_dir."""
    import torch
    import transformers

    cls = getattr(transformers, config.architectures[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        spread_weights(model)
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, 1.0)
        restrict_lm_head(model.lm_head.weight, row_texts(tok, config.vocab_size), gain, tok.eos_token_id, eos_gain)
    model.save_pretrained(str(model_dir))
    return model


def ground_truth(bench, model_dir: Path, prompts: Sequence, keep, want: int, what: str, seed: int,
                 batch: int = 1):
    """The benchmark's own fp32 batch-1 outputs for candidate prompts, in order, keeping those
    `keep(tokenizer, payload, index)` accepts until `want` are kept: [(index, payload)].
    `batch` > 1 (a search that keeps few of many candidates): candidates are generated `batch` at a
    time (~10x faster for a tiny model, whose steps are all per-call overhead) and each output `keep`
    accepts is generated again at batch 1; where the two differ (greedy fp32 tokens that depend on
    the batch) it is a KitError, so what is kept is always the batch-1 output. A candidate rejected
    in its batch is not tried at batch 1: the choice could differ from a batch-1 search only if the
    batch changed the tokens of a rejected candidate (none of 256 deepseek-r1 candidates at batch 16
    or 64 differ; sets of up to 24 rows are byte-identical to the batch-1 search's, issue 30)."""
    from evalkit.errors import KitError
    from evalkit.synth import one_thread

    with one_thread():  # a tiny model: one thread beats contended cores
        g = bench.load_model(model_dir, "cpu", "fp32", {})
        kept = []
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start:start + batch])
            for i, out in enumerate(bench.postprocess(bench.forward(g, chunk), len(chunk)), start):
                if not keep(g.tok, out, i):
                    continue
                one = bench.postprocess(bench.forward(g, [prompts[i]]), 1)[0] if batch > 1 else out
                if not np.array_equal(out, one):
                    raise KitError(f"synthetic {what}: candidate prompt {i} is answered {one.tolist()} at batch 1 "
                                   f"but {out.tolist()} in a batch of {len(chunk)} (seed {seed}); try another --seed.")
                kept.append((i, out))
                if len(kept) == want:
                    return kept
    raise KitError(f"synthetic {what}: only {len(kept)} of {len(prompts)} candidate prompts gave a usable output "
                   f"(seed {seed}); try another --seed.")


def synth_dirs(out: Path) -> tuple[Path, Path]:
    """out/dataset and out/model, created."""
    ds_dir, model_dir = Path(out) / "dataset", Path(out) / "model"
    for d in (ds_dir, model_dir):
        d.mkdir(parents=True, exist_ok=True)
    return ds_dir, model_dir


def write_generation_cap(ds_dir: Path, cap: int) -> None:
    import json

    from language.llm import GENERATION_FILE

    (ds_dir / GENERATION_FILE).write_text(json.dumps({"max_new_tokens": cap}) + "\n")
