"""gpt-oss-120b on the MLPerf reasoning mix (MLPerf `gpt-oss-120b`, checker gpt-oss-120b).

Follows the reference `language/gpt-oss-120b`. Its dataset download holds the sets as parquet
(pickle too, for older kits) DataFrames of prompts already rendered in the harmony format and
tokenised (`input_tokens`; pre-v4.0 files `tok_input`), with `dataset` and `ground_truth`:

  acc/acc_eval_inputs.parquet          accuracy set, 4,395 rows: aime25 (30 problems x 8),
                                       gpqa_diamond (198 x 5), livecodebench_v6 (1,055 x 3);
                                       reasoning effort high, max 32,768 new tokens
  perf/perf_eval_ref.parquet           performance set, 6,396 rows; reasoning effort low, max 10,240
  acc/acc_eval_compliance_gpqa.parquet TEST07's GPQA set, max 10,240

A run's DATASET is the folder of one of them (`<download>/acc` or `<download>/perf`), as the
reference's run_mlperf.py takes one --input-file; the folder holds one set (and, for
LiveCodeBench rows, livecodebench/test.jsonl: the release_v6 problems). The set's output limit
travels with each prompt (the option max_new_tokens, default 32,768, is capped by it).

Generation: HF GptOssForCausalLM from a checkpoint dir, greedy, up to the limit, stopping where the
checkpoint's generation_config.json stops (<|return|>, <|endoftext|>, <|call|>); int32 payloads of
the generated ids up to and including the stop id. The reference samples (temperature 1.0,
top_p 1.0, top_k off); the kit decodes greedily so that a partitioned run is byte-identical to one
run (docs/models/gpt-oss-120b.md says what that means for the score). At full size the model runs on
a serving engine (BACKEND=openai SERVER_URLS=..., docs/serving.md).

Accuracy as eval_mlperf_accuracy.py: decode keeping special tokens, the dataset's extraction and
rule (language/gpt_oss/answers.py, the shared ones in language/reasoning/), LiveCodeBench programs
only in the sandbox (60 s per test; INCOMPLETE without it); exact_match = sum over datasets of
correct/repeats divided by sum of total/repeats, x 100 (repeats: aime25 8, gpqa_diamond 5,
livecodebench_v6 3, others 1); tokens_per_sample = mean payload length (the checker's
TOKENS_PER_SAMPLE upper limit)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evalkit.benchmark import Dataset
from evalkit.errors import KitError
from language.llm import RUN_DEFAULTS, Prompt, TokenPromptLLM, check_answer, cut_after_eos, generation_cap

# stem -> the reference's output limit for that set (README "Generation Configuration", TEST07/TEST09)
SETS = {"acc_eval_inputs": 32768, "perf_eval_ref": 10240, "acc_eval_compliance_gpqa": 10240}
ACCURACY_SET, COMPLIANCE_SET = "acc_eval_inputs", "acc_eval_compliance_gpqa"
TOKEN_COLUMNS = ("input_tokens", "tok_input")  # v4.0+ / pre-v4.0 (utils/tokenization.py)
REPEATS = {"aime25": 8, "gpqa_diamond": 5, "livecodebench_v6": 3}  # eval_mlperf_accuracy.py DATASET_REPEATS
GEN_DEFAULTS = {"max_new_tokens": 32768, "min_new_tokens": 0}


def set_stem(root: Path) -> str:
    """The one published set in the dataset dir; KitError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"gpt-oss-120b dataset directory {root} does not exist; pass the download's acc/ (accuracy) "
                       f"or perf/ (performance) folder as --dataset.")
    present = [s for s in SETS if (root / f"{s}.parquet").is_file() or (root / f"{s}.pkl").is_file()]
    if not present:
        names = ", ".join(f"{s}.parquet" for s in SETS)
        raise KitError(f"{root} holds none of {names}; pass the download's acc/ or perf/ folder as --dataset.")
    if present == [ACCURACY_SET, COMPLIANCE_SET]:
        return ACCURACY_SET  # the download's acc/ holds both: the accuracy run's set (TEST07's: its own dir)
    if len(present) > 1:
        raise KitError(f"{root} holds {' and '.join(present)}; keep one set per dataset dir (the accuracy and "
                       f"performance sets are different runs).")
    return present[0]


def read_set(root: Path, *, scored: bool = False):
    """(stem, DataFrame, token column): every row's prompt ids checked, and, when `scored`, its
    dataset and ground truth present."""
    from language.frames import open_table, table_file

    stem = set_stem(root)
    df = open_table(Path(root), f"{stem}.pkl", ("dataset", "ground_truth") if scored else ())
    f = table_file(Path(root), f"{stem}.pkl")
    col = next((c for c in TOKEN_COLUMNS if c in df.columns), None)
    if col is None:
        raise KitError(f"{f} has no {' or '.join(TOKEN_COLUMNS)} column; it is not the published set.")
    for i, ids in enumerate(df[col]):
        arr = np.asarray(ids) if ids is not None else np.asarray([])
        if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
            raise KitError(f"{f} row {i}: {col} is not a non-empty list of token ids.")
    return stem, df, col


class GptOssSet(Dataset):
    def __init__(self, root: Path):
        from . import answers
        from language.frames import table_file
        from language.reasoning import livecodebench

        self.root = Path(root)
        self.stem, self.df, self.col = read_set(self.root)
        self.file = table_file(self.root, f"{self.stem}.pkl")
        self.size = len(self.df)
        synth = generation_cap(self.root)
        self.cap = min(SETS[self.stem], synth) if synth is not None else SETS[self.stem]
        if "dataset" in self.df.columns and "ground_truth" in self.df.columns:
            kinds = [answers.kind_of(d, f"{self.file} row {i}") for i, d in enumerate(self.df["dataset"])]
            lcb = {str(self.df["ground_truth"].iloc[i]): i for i, k in enumerate(kinds) if k == "livecodebench"}
            if lcb:  # the problems' tests read now: a bad or missing test file before any model loads
                found = livecodebench.load_problems(self.root, set(lcb))
                missing = [q for q in lcb if q not in found]
                if missing:
                    raise KitError(f"{self.root / livecodebench.TESTS}: no problem {missing[0]!r} (the ground_truth "
                                   f"of row {lcb[missing[0]]}; {len(missing)} missing); it is not the release the "
                                   f"set uses")

    def load(self, index: int) -> Prompt:
        if not 0 <= index < self.size:
            raise KitError(f"sample index {index} is outside {self.file} (size {self.size}).")
        return Prompt(np.asarray(self.df[self.col].iloc[index], dtype=np.int64), None, self.cap)

    def check_available(self, start: int, stop: int) -> None:
        pass  # every row was read and checked when the set opened; the core checks the range


def exact_match(kinds_names: list[str], right: list[bool]) -> float:
    """eval_mlperf_accuracy.py's final score: sum_d correct_d / r_d over sum_d total_d / r_d, x 100,
    r_d = REPEATS of the lowercased dataset name (1 when not listed)."""
    score = top = 0.0
    for name in sorted(set(kinds_names)):
        r = REPEATS.get(name, 1)
        idx = [i for i, n in enumerate(kinds_names) if n == name]
        score += sum(right[i] for i in idx) / r
        top += len(idx) / r
    return 100.0 * score / top if top else 0.0


class GptOss(TokenPromptLLM):
    name = "gpt-oss-120b"
    mlperf_name = "gpt-oss-120b"
    checker_names = {"99": "gpt-oss-120b"}
    default_accuracy_target = "99"
    dataset_size = 4395               # the accuracy set (checker accuracy sample count)
    performance_sample_count = 6396   # the performance set (checker performance sample count)
    model_class = "GptOssForCausalLM"
    attn_implementation = "eager"     # transformers has no SDPA path for its attention sinks
    what = "gpt-oss-120b"
    default_batch_size = 8
    synthetic_n = 6
    options = dict(GEN_DEFAULTS, **RUN_DEFAULTS)

    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> GptOssSet:
        return GptOssSet(Path(path))

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        from language import hf_checkpoint_dir

        mp = hf_checkpoint_dir(model_path, self.what)
        if not (mp / "generation_config.json").is_file():  # config.json names only <|return|>
            raise KitError(f"{mp / 'generation_config.json'} not found: gpt-oss stops where it says (<|return|>, "
                           f"<|endoftext|>, <|call|>); restore the checkpoint's file.")
        stem = set_stem(Path(dataset_path))
        synth = generation_cap(Path(dataset_path))
        return {"set": stem, "max_new_tokens_cap": min(SETS[stem], synth) if synth is not None else SETS[stem]}

    def trim(self, row: np.ndarray, prompt: Prompt, eos, pad: int) -> np.ndarray:
        return cut_after_eos(row, eos)  # up to the first stop id; the rest of a batched row is padding

    def score(self, pairs, dataset_path: Path, n_count: int, model_path: Path | None = None) -> dict:
        from language.reasoning.answers import judge

        from . import answers

        stem, df, _ = read_set(Path(dataset_path), scored=True)
        tok = self.tokenizer_for(dataset_path, model_path)
        rows, ids_list = [], []
        for qsl_idx, ids in pairs:
            check_answer(qsl_idx, ids, len(df), f"{dataset_path}/{stem}", len(tok))
            rows.append(qsl_idx)
            ids_list.append(ids.tolist())
        texts = tok.batch_decode(ids_list, skip_special_tokens=False)
        where = f"{dataset_path}/{stem}"
        names = [str(df["dataset"].iloc[q]).lower() for q in rows]
        kinds = [answers.kind_of(df["dataset"].iloc[q], f"{where} row {q}") for q in rows]
        extracted = [answers.parse(k, t) for k, t in zip(kinds, texts)]
        right = judge(kinds, extracted, [df["ground_truth"].iloc[q] for q in rows], dataset_path)
        m = {"exact_match": exact_match(names, right), "TOKENS_PER_SAMPLE": sum(map(len, ids_list)) / len(rows),
             "GEN_NUM": len(rows)}
        for name in sorted(set(names)):  # per-set accuracy for the report (the checker reads the two above)
            idx = [i for i, n in enumerate(names) if n == name]
            m[f"exact_match_{name}"] = 100.0 * sum(right[i] for i in idx) / len(idx)
        return m

    def accuracy_lines(self, metrics: dict) -> list[str]:
        # eval_mlperf_accuracy.py prints "'exact_match': <score>" for the checker; tokens_per_sample
        # (mean generated tokens) is the checker's TOKENS_PER_SAMPLE upper limit, in the same dict
        d = {"exact_match": float(metrics["exact_match"]), "tokens_per_sample": float(metrics["TOKENS_PER_SAMPLE"]),
             "num-samples": int(metrics["GEN_NUM"])}
        return [repr(d)]

    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"exact_match": 100.0}


BENCHMARK = GptOss()
