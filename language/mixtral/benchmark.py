"""Mixtral-8x7B on OpenOrca + GSM8K + MBXP (MLPerf `mixtral-8x7b`, checker mixtral-8x7b).

Follows the reference `language/mixtral-8x7b`: the 15k pickle (rows routed by its `dataset`
column: OpenOrca, GSM8K, MBXP; prompt `tok_input`, answer `gt_output`), HF MixtralForCausalLM
from a checkpoint dir, greedy decoding (min_new_tokens 2, max_new_tokens 1024), pad = eos; MBXP
rows stop after their stop sequence (the next token is forced to EOS, as StopAfterSequence).
Payload: int32 generated ids with the trailing EOS/pad run stripped and MBXP rows cut after the
stop sequence (the reference's postProcess), never batch padding.

Accuracy as `evaluate-accuracy.py`: ROUGE on the OpenOrca rows (language/rouge.py), GSM8K
answer extraction (gsm8k.py), MBXP pass@1 by running the programs in a sandbox (mbxp.py),
tokens_per_sample = round(tokens / samples, 1). Target sets: v5.0+ by default, v4.1 with
`check --targets_version v4.1`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evalkit.errors import KitError
from language.llm import RUN_DEFAULTS, Prompt, TokenPromptLLM, check_answer, cut_after_eos, result_line, rouge_metrics, strip_trailing

from . import gsm8k, mbxp

PICKLE = "09292024_mixtral_15k_mintoken2_v1.pkl"
KINDS = ("OpenOrca", "GSM8K", "MBXP")
MBXP_STOP = (13, 13940, 28832, 13)  # "\n```\n" in the Mixtral tokenizer (reference SUT default)
GEN_DEFAULTS = {"max_new_tokens": 1024, "min_new_tokens": 2}
# MBXP sandbox, read by `check` from the environment: seconds per program run (the reference's
# 20), memory per program, programs at a time (0: one per core)
MBXP_ENV = {"MBXP_TIMEOUT": 20.0, "MBXP_MEMORY_MB": 2048, "MBXP_WORKERS": 0}


class Mixtral(TokenPromptLLM):
    name = "mixtral"
    mlperf_name = "mixtral-8x7b"
    checker_names = {"99": "mixtral-8x7b"}
    default_accuracy_target = "99"
    dataset_size = 15000
    performance_sample_count = 15000
    model_class = "MixtralForCausalLM"
    what = "Mixtral-8x7B"
    pickle_name = PICKLE
    columns = ("dataset", "id", "tok_input", "gt_output")
    options = dict(GEN_DEFAULTS, **RUN_DEFAULTS)  # generation settings + how to run them (language/llm.py)

    def stop_of(self, row) -> tuple[int, ...] | None:
        if row["dataset"] != "MBXP":
            return None
        # the row's own tok_stop_sequence when the table has one (synthetic sets: their tokenizer's)
        seq = row.get("tok_stop_sequence")
        if isinstance(seq, (list, tuple, np.ndarray)) and len(seq):  # NaN/None where the table has none
            return tuple(int(t) for t in seq)
        return MBXP_STOP

    def trim(self, row: np.ndarray, prompt: Prompt, eos: int, pad: int) -> np.ndarray:
        # Reference postProcess: strip trailing EOS (2) and pad (0), then cut MBXP after the stop
        # sequence. Cut after the first EOS first: what follows it in a batched row is padding.
        out = strip_trailing(cut_after_eos(row, eos), (eos, pad, 0))
        if prompt.stop:
            L = len(prompt.stop)
            for i in range(len(out) - L + 1):
                if tuple(int(t) for t in out[i:i + L]) == prompt.stop:
                    return out[:i + L]
        return out

    def score(self, pairs, dataset_path: Path, n_count: int, model_path: Path | None = None) -> dict:
        import os

        from language.frames import open_table

        opts = {}
        for k, default in MBXP_ENV.items():
            try:
                opts[k] = type(default)(os.environ.get(k, default))
            except ValueError:
                raise KitError(f"{k}={os.environ[k]!r} is not a number (default {default})") from None
        df = open_table(Path(dataset_path), PICKLE, self.columns)
        tok = self.tokenizer_for(dataset_path, model_path)
        orca, gsm, code, n_tok, n = ([], []), ([], []), [], 0, 0
        for qsl_idx, ids in pairs:
            check_answer(qsl_idx, ids, len(df), dataset_path, len(tok))
            row = df.iloc[qsl_idx]
            kind = row["dataset"]
            n_tok += ids.size
            n += 1
            if kind == "OpenOrca":
                orca[0].append(ids.tolist())
                orca[1].append(str(row["gt_output"]))
            elif kind == "GSM8K":
                gsm[0].append(ids.tolist())
                gsm[1].append(row["gt_output"])
            elif kind == "MBXP":
                lang, entry = str(row["id"]).split("_", 1)
                code.append({"lang": lang, "entry_point": entry, "test": str(row["gt_output"]), "ids": ids.tolist()})
            else:
                raise KitError(f"{dataset_path}: row {qsl_idx} has dataset {kind!r}, not one of {', '.join(KINDS)}.")
        why = mbxp.incomplete(p["lang"] for p in code)  # a missing toolchain or no working sandbox (bwrap)
        if why:
            raise KitError("MBXP INCOMPLETE: " + why)
        if orca[0]:
            m = rouge_metrics(orca[0], orca[1], tok)
        else:
            m = {"ROUGE1": 0.0, "ROUGE2": 0.0, "ROUGEL": 0.0, "ROUGELSUM": 0.0, "GEN_LEN": 0}
        texts = tok.batch_decode(gsm[0], skip_special_tokens=True)
        m["gsm8k_accuracy"] = 100.0 * sum(gsm8k.correct(t, gt) for t, gt in zip(texts, gsm[1])) / len(texts) if texts else 0.0
        for p, text in zip(code, tok.batch_decode([p["ids"] for p in code], skip_special_tokens=True)):
            p["response"] = text
        r = mbxp.evaluate(code, opts["MBXP_WORKERS"], mbxp.Limits(opts["MBXP_TIMEOUT"], opts["MBXP_MEMORY_MB"]))
        m["mbxp_accuracy"] = r["pass_rate"]
        m.update(GEN_NUM=n, GEN_TOK_LEN=n_tok, TOKENS_PER_SAMPLE=round(n_tok / n, 1))
        return m

    def accuracy_lines(self, metrics: dict) -> list[str]:
        return [result_line(metrics, (("gsm8k", "gsm8k_accuracy"), ("mbxp", "mbxp_accuracy")))]

    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"ROUGE1": 100.0, "ROUGE2": 100.0, "ROUGEL": 100.0, "gsm8k_accuracy": 100.0, "mbxp_accuracy": 100.0}


BENCHMARK = Mixtral()
