"""DeepSeek-R1 on its five-set reasoning ensemble (MLPerf `deepseek-r1`, checker deepseek-r1).

Follows the reference `language/deepseek-r1`: the processed pickle
mlperf_deepseek_r1_dataset_4388_fp8_eval.pkl (4,388 rows of AIME, MATH500, GPQA, MMLU-Pro and
LiveCodeBench; `text_input` the question, `tok_input` its ids after the checkpoint's chat template
with the generation prompt, `dataset`, `ground_truth`), HF DeepseekV3ForCausalLM from a checkpoint
dir, greedy decoding (temperature 0) up to 20,000 new tokens (the reference's MAX_OSL), int32 payloads
of the generated ids up to and including EOS. At full size the model runs on a serving engine:
BACKEND=openai SERVER_URLS=... (docs/serving.md), the in-process path is for the synthetic set and
for people with the hardware.

Accuracy as eval_accuracy.py: decode (skip special tokens), strip, the dataset's answer extraction
and exact-match rule (language/deepseek_r1/answers.py and language/reasoning/; MATH500 by PRM800K's grader, LiveCodeBench
programs run in the sandbox with 60 s per test), exact_match = mean of 100/0 over every sample (no
answer = 0), tokens_per_sample = mean payload length; accuracy.txt is the dict it prints.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evalkit.errors import KitError
from language.llm import RUN_DEFAULTS, Prompt, TokenPromptLLM, check_answer, cut_after_eos

PICKLE = "mlperf_deepseek_r1_dataset_4388_fp8_eval.pkl"
MAX_OSL = 20000  # reference utils/backend_registry.py: max output sequence length, temperature 0
GEN_DEFAULTS = {"max_new_tokens": MAX_OSL, "min_new_tokens": 0}


class DeepSeekR1(TokenPromptLLM):
    name = "deepseek-r1"
    mlperf_name = "deepseek-r1"
    checker_names = {"99": "deepseek-r1"}
    default_accuracy_target = "99"
    dataset_size = 4388
    performance_sample_count = 4388
    model_class = "DeepseekV3ForCausalLM"
    what = "DeepSeek-R1"
    pickle_name = PICKLE
    columns = ("tok_input", "dataset", "ground_truth")
    default_batch_size = 8
    synthetic_n = 5
    options = dict(GEN_DEFAULTS, **RUN_DEFAULTS)

    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None):
        """The table, every row's set known, and the LiveCodeBench tests of its problems read (pickled
        private cases included): a bad or missing test file is found before any model loads."""
        from language.reasoning import livecodebench

        from . import answers

        ds = super().open_dataset(path, model_path, options)
        where = Path(path) / PICKLE
        kinds = [answers.kind_of(d, f"{where} row {i}") for i, d in enumerate(ds.df["dataset"])]
        lcb = {str(ds.df["ground_truth"].iloc[i]): i for i, k in enumerate(kinds) if k == "livecodebench"}
        if lcb:
            found = livecodebench.load_problems(Path(path), set(lcb))
            missing = [q for q in lcb if q not in found]
            if missing:
                raise KitError(f"{Path(path) / livecodebench.TESTS}: no problem {missing[0]!r} (the ground_truth of "
                               f"row {lcb[missing[0]]}; {len(missing)} missing); it is not the release the set uses")
        return ds

    def trim(self, row: np.ndarray, prompt: Prompt, eos: int, pad: int) -> np.ndarray:
        return cut_after_eos(row, eos)

    def score(self, pairs, dataset_path: Path, n_count: int, model_path: Path | None = None) -> dict:
        from language.frames import open_table

        from language.reasoning.answers import judge

        from . import answers

        df = open_table(Path(dataset_path), PICKLE, ("dataset", "ground_truth"))
        tok = self.tokenizer_for(dataset_path, model_path)
        rows, ids_list = [], []
        for qsl_idx, ids in pairs:
            check_answer(qsl_idx, ids, len(df), dataset_path, len(tok))
            rows.append(qsl_idx)
            ids_list.append(ids.tolist())
        texts = tok.batch_decode(ids_list, skip_special_tokens=True)
        kinds = [answers.kind_of(df["dataset"].iloc[q], f"{dataset_path} row {q}") for q in rows]
        extracted = [answers.parse(k, t) for k, t in zip(kinds, texts)]
        right = judge(kinds, extracted, [df["ground_truth"].iloc[q] for q in rows], dataset_path)
        n_tok = sum(len(x) for x in ids_list)
        m = {"exact_match": 100.0 * sum(right) / len(rows), "TOKENS_PER_SAMPLE": n_tok / len(rows),
             "GEN_NUM": len(rows)}
        for k in answers.KINDS:  # per-set figures for the report (the checker reads only the two above)
            idx = [i for i, kk in enumerate(kinds) if kk == k]
            if idx:
                m[f"exact_match_{k}"] = 100.0 * sum(right[i] for i in idx) / len(idx)
        return m

    def accuracy_lines(self, metrics: dict) -> list[str]:
        d = {"exact_match": float(metrics["exact_match"]), "tokens_per_sample": float(metrics["TOKENS_PER_SAMPLE"]),
             "num-samples": int(metrics["GEN_NUM"])}
        return [repr(d)]  # the dict eval_accuracy.py prints (plain numbers)

    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"exact_match": 100.0}


BENCHMARK = DeepSeekR1()
