"""Llama-3.1-8B-Instruct on CNN/DailyMail (MLPerf `llama3.1-8b`, checker llama3.1-8b and
llama3.1-8b-edge).

Follows the reference `language/llama3.1-8b`: the processed set is a JSON list of records
(`cnn_eval.json`, 13,368 rows; edge: `sample_cnn_eval_5000.json`, 5,000 rows), read in file order
as pandas.read_json reads it; the prompt is `tok_input` (download_cnndm.py: the checkpoint's
tokenizer on "Summarize the following news article in 128 tokens. Please output the summary only,
without any other text.\\n\\nArticle:\\n{input}\\n\\nSummary:", <|begin_of_text|> included, no chat
template), the reference summary `output`. The SUT (SUT_VLLM.py) decodes greedily (temperature 0)
with max_tokens 128, min_tokens 1, and stops where vLLM stops: the tokenizer's EOS and every
`eos_token_id` of the checkpoint's generation_config.json (Llama-3.1-Instruct: <|end_of_text|>,
<|eom_id|>, <|eot_id|>). The payload is the int32 ids of the generated tokens up to and including
the first of them (vLLM's `token_ids`).

Accuracy as `evaluation.py`: first occurrence of each qsl_idx, decode (skip special tokens),
strip, one sentence per line, ROUGE with the stemmer (language/rouge.py), round(mean x 100, 4);
gen_len = characters of the post-processed predictions, gen_num = samples. GEN_LEN has a
two-sided window in the v6.1 checker (0.9x and 1.1x of the reference).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evalkit.benchmark import Dataset
from evalkit.errors import KitError
from language.llm import (RUN_DEFAULTS, Prompt, TokenPromptLLM, check_answer, cut_after_eos, generation_cap,
                          rouge_metrics)

DATACENTER_FILE = "cnn_eval.json"
EDGE_FILE = "sample_cnn_eval_5000.json"
DATASET_FILES = (DATACENTER_FILE, EDGE_FILE)
# download_cnndm.py's "llama" instruction template (the synthetic sets write their prompts with it)
PROMPT = ("Summarize the following news article in 128 tokens. Please output the summary only, without any other "
          "text.\n\nArticle:\n{input}\n\nSummary:")
# Reference sampling params (SUT_VLLM.py: temperature 0, max_tokens 128, min_tokens 1); other values
# are for experiments only.
GEN_DEFAULTS = {"max_new_tokens": 128, "min_new_tokens": 1}


def dataset_file(root: Path) -> Path:
    """The one published file in the dataset dir; KitError naming what is wrong."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"CNN/DailyMail dataset directory {root} does not exist; put {DATACENTER_FILE} "
                       f"(or the edge set's {EDGE_FILE}) there or pass the right --dataset.")
    present = [root / f for f in DATASET_FILES if (root / f).is_file()]
    if not present:
        raise KitError(f"{root / DATACENTER_FILE} not found (nor {EDGE_FILE}); the llama3.1-8b dataset dir must "
                       f"hold the reference's processed CNN/DailyMail JSON.")
    if len(present) > 1:
        raise KitError(f"{root} holds both {DATACENTER_FILE} and {EDGE_FILE}; keep one set per dataset dir "
                       f"(the datacenter set and the edge set are different runs).")
    return present[0]


def read_records(root: Path) -> tuple[Path, list[dict]]:
    """(file, records): a non-empty JSON list of {input, tok_input, output}; KitError naming the
    file and the record on any problem."""
    f = dataset_file(root)
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"cannot read {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                       f"re-download it.") from None
    if not isinstance(data, list) or not data:
        raise KitError(f"{f} is not a non-empty JSON list of samples.")
    for i, r in enumerate(data):
        if not isinstance(r, dict) or not isinstance(r.get("output"), str):
            raise KitError(f"{f} sample {i} lacks a string 'output'; it is not the published set.")
        ids = r.get("tok_input")
        if (not isinstance(ids, list) or not ids
                or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids)):
            raise KitError(f"{f} sample {i}: 'tok_input' is not a non-empty list of token ids.")
    return f, data


class CnnEval(Dataset):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.file, self.records = read_records(self.root)
        self.size = len(self.records)
        self.cap = generation_cap(self.root)  # synthetic sets only

    def load(self, index: int) -> Prompt:
        if not 0 <= index < self.size:
            raise KitError(f"sample index {index} is outside {self.file} (size {self.size}).")
        return Prompt(np.asarray(self.records[index]["tok_input"], dtype=np.int64), None, self.cap)

    def check_available(self, start: int, stop: int) -> None:
        pass  # every record was read and checked when the dataset opened; the core checks the range


class Llama31(TokenPromptLLM):
    name = "llama3.1-8b"
    mlperf_name = "llama3_1-8b"  # main.py --lg-model-name (edge: llama3_1-8b-edge)
    checker_names = {"99": "llama3.1-8b", "edge": "llama3.1-8b-edge"}
    default_accuracy_target = "99"
    dataset_size = 13368
    target_sizes = {"edge": 5000}  # sample_cnn_eval_5000.json
    performance_sample_count = 13368
    model_class = "LlamaForCausalLM"
    what = "Llama-3.1-8B"
    default_batch_size = 16       # the reference README's --batch-size
    options = dict(GEN_DEFAULTS, **RUN_DEFAULTS)  # generation settings + how to run them (language/llm.py)

    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> CnnEval:
        return CnnEval(Path(path))

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        from language import hf_checkpoint_dir

        hf_checkpoint_dir(model_path, self.what)
        dataset_file(Path(dataset_path))  # KitError naming it when absent; content: the core
        cap = generation_cap(Path(dataset_path))
        return {"max_new_tokens_cap": cap} if cap is not None else {}

    def trim(self, row: np.ndarray, prompt: Prompt, eos, pad: int) -> np.ndarray:
        return cut_after_eos(row, eos)  # up to the first stop id; the rest of a batched row is padding

    def score(self, pairs, dataset_path: Path, n_count: int, model_path: Path | None = None) -> dict:
        f, records = read_records(Path(dataset_path))
        tok = self.tokenizer_for(dataset_path, model_path)
        preds, targets = [], []
        for qsl_idx, ids in pairs:
            check_answer(qsl_idx, ids, len(records), f, len(tok))
            preds.append(ids.tolist())
            targets.append(records[qsl_idx]["output"])
        m = rouge_metrics(preds, targets, tok)
        m["GEN_NUM"] = len(preds)
        return m

    def accuracy_lines(self, metrics: dict) -> list[str]:
        # evaluation.py's printed dict, with plain numbers (it prints the ROUGE values as quoted
        # strings and gen_len as a NumPy integer, which NumPy 2 prints as np.int64(...): the
        # checker's GEN_LEN pattern would not read that)
        d = {"rouge1": float(metrics["ROUGE1"]), "rouge2": float(metrics["ROUGE2"]),
             "rougeL": float(metrics["ROUGEL"]), "rougeLsum": float(metrics["ROUGELSUM"]),
             "gen_len": int(metrics["GEN_LEN"]), "gen_num": int(metrics["GEN_NUM"])}
        return [repr(d)]

    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"ROUGE1": 100.0, "ROUGE2": 100.0, "ROUGEL": 100.0, "ROUGELSUM": 100.0}


BENCHMARK = Llama31()
