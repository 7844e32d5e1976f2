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


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import pandas as pd
    from transformers import GenerationConfig, GptOssConfig

    from evalkit.synth import distinct
    from language.llm import Prompt
    from language.reasoning.synthetic import answered_rows, write_problems
    from language.synthllm import padded_vocab, synth_dirs, tiny_causal_lm, write_generation_cap

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
    cands = []
    for _ in range(80 * n):
        question = " ".join(sentence(rng, words) for _ in range(int(rng.integers(1, 3))))
        cands.append({"question": question, "input_tokens": harmony.prompt_ids(tok, question, "high")})
    prompts = [Prompt(np.asarray(c["input_tokens"], dtype=np.int64), None, MAX_NEW) for c in cands]
    table, payloads, problems = answered_rows(
        bench, model_dir, tok, cands, prompts, SETS, ("livecodebench_v6", "gpqa_diamond", "aime25"),
        "livecodebench_v6", lambda name, text: answers.parse(KIND[name], text), n, n_all, seed,
        skip_special_tokens=False,  # decoded keeping the special tokens, as the reference decodes
        batch=64)  # candidates generated 64 at a time, the kept ones again at batch 1 (as DeepSeek-R1's)
    pd.DataFrame(table).to_parquet(ds_dir / f"{ACCURACY_SET}.parquet", index=False)  # published as parquet
    write_problems(ds_dir, problems)
    write_generation_cap(ds_dir, MAX_NEW)
    return payloads
