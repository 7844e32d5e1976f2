"""Llama-2-70B on OpenOrca (MLPerf `llama2-70b`, checker llama2-70b-99 / 99.9).

Follows the reference `language/llama2-70b`: the processed OpenOrca pickle (24,576 rows; the
prompt is `tok_input`, the reference answer `output`), HF LlamaForCausalLM from a checkpoint dir,
greedy decoding (num_beams 1, min_new_tokens 1, max_new_tokens 1024), pad = eos. The payload is
the int32 ids of the generated tokens up to and including the first EOS: what batch 1 returns.
The reference Offline SUT returns `out[:, 1024:]` of a padded batch, batch padding included,
which inflates TOKENS_PER_SAMPLE; the kit never sends padding.

Accuracy as `evaluate-accuracy.py`: decode (skip special tokens), strip, one sentence per line,
ROUGE with the stemmer (language/rouge.py, in parallel), mean x 100 rounded to 4;
tokens_per_sample = round(generated tokens / samples, 1), two-sided window in the checker.
"""
from __future__ import annotations

from pathlib import Path
import numpy as np

from language.llm import RUN_DEFAULTS, Prompt, TokenPromptLLM, check_answer, cut_after_eos, result_line, rouge_metrics

PICKLE = "open_orca_gpt4_tokenized_llama.sampled_24576.pkl"
# Reference gen_kwargs (SUT.py); other values are for experiments only.
GEN_DEFAULTS = {"max_new_tokens": 1024, "min_new_tokens": 1}


class Llama2(TokenPromptLLM):
    name = "llama2"
    mlperf_name = "llama2-70b"
    checker_names = {"99": "llama2-70b-99", "99.9": "llama2-70b-99.9"}
    default_accuracy_target = "99"
    dataset_size = 24576
    performance_sample_count = 24576
    model_class = "LlamaForCausalLM"
    what = "Llama-2-70B"
    pickle_name = PICKLE
    columns = ("tok_input", "output")
    # generation settings + static_cache (HF StaticCache: one KV allocation per batch)
    options = dict(GEN_DEFAULTS, **RUN_DEFAULTS)  # generation settings + how to run them (language/llm.py)

    def trim(self, row: np.ndarray, prompt: Prompt, eos: int, pad: int) -> np.ndarray:
        return cut_after_eos(row, eos)  # the rest of a batched row is padding

    def score(self, pairs, dataset_path: Path, n_count: int, model_path: Path | None = None) -> dict:
        from language.frames import open_table

        df = open_table(Path(dataset_path), PICKLE, ("output",))
        tok = self.tokenizer_for(dataset_path, model_path)
        preds, targets, n_tok = [], [], 0
        for qsl_idx, ids in pairs:
            check_answer(qsl_idx, ids, len(df), dataset_path, len(tok))
            preds.append(ids.tolist())
            targets.append(str(df["output"].iloc[qsl_idx]))
            n_tok += ids.size  # every payload token, a final EOS included (as the reference counts)
        m = rouge_metrics(preds, targets, tok)
        m.update(GEN_NUM=len(preds), GEN_TOK_LEN=n_tok, TOKENS_PER_SAMPLE=round(n_tok / len(preds), 1))
        return m

    def accuracy_lines(self, metrics: dict) -> list[str]:
        return [result_line(metrics)]

    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"ROUGE1": 100.0, "ROUGE2": 100.0, "ROUGEL": 100.0}


BENCHMARK = Llama2()
