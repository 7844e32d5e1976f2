"""GPT-J 6B on CNN/DailyMail (MLPerf `gptj`, checker gptj-99 / gptj-99.9).

Follows the reference `language/gpt-j` PyTorch SUT: Alpaca prompt_input template,
prompts truncated to 1919 tokens, HF GPTJForCausalLM, beam search 4 with
min_new_tokens 30 / max_new_tokens 128 / early stopping; payload = int64 ids of
the generated part only. Accuracy as `evaluation.py`: decode, strip, one sentence
per line, ROUGE with the stemmer (language/rouge.py), gen_len = characters.

Offline hands forward() up to default_batch_size prompts; forward sorts them by length,
cuts batches by a token budget (option `token_budget`: KV-cache slots, 0 = what free device
memory holds), splits a batch that runs out of memory and returns answers in the given order.
Option `generator`: "kit" (language/generate.py: in-place KV cache, beams share the prompt
cache, beam pointers instead of cache copies; HF generate's tokens) or "hf" (HF generate on
left-padded batches, the reference path). Batched output equals batch-1 output because padding
is masked, positions come from the attention mask, beam search keeps each prompt's beams
apart, and the payload is cut after the first eos (what batch 1 returns).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark, Dataset, TextIO
from evalkit.errors import KitError
from language import hf_checkpoint_dir
from language.llm import check_answer, cut_after_eos

DATASET_FILE = "cnn_eval.json"
MAX_INPUT_TOKENS = 1919
# Alpaca "prompt_input" template, as the reference dataset.py formats each sample.
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")
# Reference gen_kwargs (backend_PyTorch.py); options may override them for experiments only.
GEN_DEFAULTS = {"num_beams": 4, "min_new_tokens": 30, "max_new_tokens": 128, "early_stopping": True}
# How to run them: which generation loop, and KV-cache slots per batch (0: from free device memory).
RUN_DEFAULTS = {"generator": "kit", "token_budget": 0}
GENERATORS = ("kit", "hf")


def read_cnn_eval(root: Path) -> list[dict]:
    """<root>/cnn_eval.json: a JSON list of {instruction, input, output}; KitError on any problem."""
    f = Path(root) / DATASET_FILE
    if not Path(root).is_dir():
        raise KitError(f"CNN/DailyMail dataset directory {root} does not exist; put {DATASET_FILE} there "
                       f"or pass the right --dataset.")
    if not f.is_file():
        raise KitError(f"{f} not found; the GPT-J dataset dir must hold {DATASET_FILE} "
                       f"(JSON list of instruction/input/output).")
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KitError(f"cannot read {f}: {e}; re-download it.") from None
    if not isinstance(data, list) or not data:
        raise KitError(f"{f} is not a non-empty JSON list of samples.")
    for i, ex in enumerate(data):
        if not isinstance(ex, dict) or not all(isinstance(ex.get(k), str) for k in ("instruction", "input", "output")):
            raise KitError(f"{f} sample {i} lacks a string 'instruction', 'input' or 'output'; fix the file.")
    return data


def load_tokenizer(model_path: Path):
    from language.llm import load_tokenizer as llm_tokenizer

    tok = llm_tokenizer(model_path, "GPT-J")  # left padding, pad = eos
    tok.model_max_length = MAX_INPUT_TOKENS   # reference: inputs truncated to 1919 tokens
    return tok


class CNNDailyMail(Dataset):
    def __init__(self, root: Path):
        self.root = Path(root)
        self.samples = read_cnn_eval(self.root)
        self.size = len(self.samples)

    def load(self, index: int) -> str:
        if not 0 <= index < self.size:
            raise KitError(f"sample index {index} is outside {self.root / DATASET_FILE} (size {self.size}).")
        return PROMPT_INPUT.format(**self.samples[index])

    def check_available(self, start: int, stop: int) -> None:
        pass  # every file was read when the dataset opened; the core checks the range


class _Generator:
    """What load_model returns: tokenizer + model + generation settings + how to run them."""

    def __init__(self, tok, model, gen: dict, device: str, generator: str = "kit", token_budget: int = 0):
        self.tok, self.model, self.gen, self.device = tok, model, gen, device
        self.generator, self.token_budget = generator, token_budget


def _gen_settings(options: dict) -> dict:
    return {k: options.get(k, v) for k, v in GEN_DEFAULTS.items()}


class _TextIO(TextIO):
    """Prompts and payloads for text backends (BACKEND=openai)."""

    def __init__(self, tok, gen: dict):
        self.tok, self.gen = tok, gen

    def request(self, prompt: str) -> dict:
        # Servers do not truncate: send the text of the first 1919 prompt tokens, as forward() does.
        ids = self.tok(prompt)["input_ids"]
        if len(ids) > MAX_INPUT_TOKENS:
            prompt = self.tok.decode(ids[:MAX_INPUT_TOKENS])
        eos = self.tok.eos_token_id
        return {"prompt": prompt,
                "generation": dict(self.gen, do_sample=False, eos_token_id=eos, pad_token_id=eos)}

    def payload(self, text: str, token_ids: list[int] | None, finish_reason: str | None = None,
                item=None) -> np.ndarray:
        # Re-tokenised text decodes to the same text (byte-level BPE), so ROUGE and gen_len are
        # unchanged; the ids, their count (LoadGen n_tokens) and the final eos may differ.
        ids = token_ids if token_ids is not None else self.tok(text, add_special_tokens=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64)


class GPTJ(Benchmark):
    name = "gpt-j"
    mlperf_name = "gptj"
    checker_names = {"99": "gptj-99", "99.9": "gptj-99.9"}
    default_accuracy_target = "99"
    dataset_size = 13368
    performance_sample_count = 13368
    payload_dtype = "int64"       # evaluation.py --dtype default
    token_payload = True
    # Prompts per forward (reference SUT: 1); forward cuts them into token-budget batches, so
    # this only bounds the sorting window and the response-cache granularity. Batching changes
    # no token (see module doc).
    default_batch_size = 256
    synthetic_n = 12
    # generation settings (other values are for experiments only) + generator / token budget
    options = dict(GEN_DEFAULTS, **RUN_DEFAULTS)

    # --- data -----------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> CNNDailyMail:
        return CNNDailyMail(Path(path))

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        f = Path(dataset_path) / DATASET_FILE
        if not f.is_file():
            raise KitError(f"{f} not found; the GPT-J dataset dir must hold {DATASET_FILE}.")
        hf_checkpoint_dir(model_path, "GPT-J")
        return {}  # cnn_eval.json and the checkpoint: by content, in the core

    # --- model ----------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> _Generator:
        from transformers import GPTJForCausalLM

        from language.generate import unsupported_generation_settings

        generator = options.get("generator", RUN_DEFAULTS["generator"])
        budget = options.get("token_budget", RUN_DEFAULTS["token_budget"])
        if generator not in GENERATORS:
            raise KitError(f"--option generator={generator!r} for gpt-j: use one of {', '.join(GENERATORS)}")
        if budget < 0:
            raise KitError(f"--option token_budget={budget} for gpt-j: KV-cache slots per batch, > 0 (0: auto)")
        from evalkit.hf_files import check_dir

        mp = hf_checkpoint_dir(model_path, "GPT-J (config.json, weights, tokenizer files)")
        check_dir(mp, "the GPT-J checkpoint")  # config, generation config, weights headers: the bad file named
        tok = load_tokenizer(mp)
        try:
            model = GPTJForCausalLM.from_pretrained(str(mp), dtype=self.torch_dtype(data_type))
        except (OSError, ValueError, RuntimeError) as e:
            raise KitError(f"cannot load GPT-J from {mp} ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}).") from None
        model.eval().to(device)
        odd = unsupported_generation_settings(model)
        if generator == "kit" and odd:
            raise KitError(f"{mp / 'generation_config.json'} sets {', '.join(odd)}, which the kit's generator does "
                           f"not implement; run with --option generator=hf")
        return _Generator(tok, model, _gen_settings(options), device, generator, budget)

    def compile_model(self, g: _Generator, compile_fn) -> _Generator:
        # HF generate() calls the module itself, so compile a shallow copy's forward (weights
        # shared); `g` stays eager for the fallback. The kit generator calls the submodules
        # directly and runs eager.
        compiled = copy.copy(g.model)
        compiled.forward = compile_fn(g.model.forward)
        return _Generator(g.tok, compiled, g.gen, g.device, g.generator, g.token_budget)

    # --- quantized runs: the decoder module is quantized, calibration is the prompt pass ----------------
    default_quantizer = "w8a8-smoothquant"

    def quant_module(self, g: _Generator):
        return g.model

    def with_quant_module(self, g: _Generator, module) -> _Generator:
        # One prompt per batch (its beams together): a quantized decoder rounds activations to int8 per token at
        # run time, and the last-bit fp32 differences of another batch composition (harmless in fp32) move some
        # of those roundings, so tokens would depend on which prompts share a batch, i.e. on the partitioning.
        return _Generator(g.tok, module, g.gen, g.device, g.generator, token_budget=1)

    def calibration_forward(self, g: _Generator, prompts: list[str]) -> None:
        import torch

        ids = g.tok(prompts, truncation=True, max_length=MAX_INPUT_TOKENS)["input_ids"]
        with torch.inference_mode():
            for p in ids:  # one prompt at a time: no padding enters the activation statistics
                g.model(torch.tensor([p], device=g.device))

    def text_io(self, model_path: Path, options: dict) -> "_TextIO":
        return _TextIO(load_tokenizer(Path(model_path)), _gen_settings(options))

    def make_batch(self, samples: Sequence[Any], device: str, data_type: str, options: dict) -> list[str]:
        return list(samples)  # prompts; tokenized in forward with the checkpoint's tokenizer

    def forward(self, g: _Generator, prompts: list[str]) -> list[np.ndarray]:
        from language.generate import auto_token_budget, generate, run_batched

        ids = g.tok(prompts, truncation=True, max_length=MAX_INPUT_TOKENS)["input_ids"]
        eos = g.tok.eos_token_id
        if g.generator == "kit":
            lp = getattr(g.model.generation_config, "length_penalty", None)  # HF's default: 1.0
            return generate(g.model, ids, **g.gen, length_penalty=1.0 if lp is None else lp,
                            eos_token_id=eos, pad_token_id=eos, token_budget=g.token_budget)
        # HF generate, sorted and cut by the same budget (it keeps prompt x beams cache rows)
        nb, new = g.gen["num_beams"], g.gen["max_new_tokens"]
        budget = g.token_budget or auto_token_budget(g.device, _hf_bytes_per_slot(g.model))
        return run_batched(ids, lambda batch: _hf_generate(g, batch), lambda n, lmax: n * nb * (lmax + new), budget)

    def postprocess(self, outputs: list[np.ndarray], n: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(o, dtype=np.int64) for o in outputs[:n]]

    # --- accuracy -------------------------------------------------------------
    def score(self, pairs: Iterable[tuple[int, np.ndarray]], dataset_path: Path, n_count: int,
              model_path: Path | None = None) -> dict:
        from language import rouge

        data = read_cnn_eval(Path(dataset_path))
        tok = load_tokenizer(self.accuracy_model_path(Path(dataset_path), model_path))
        vocab = len(tok)
        preds_ids, targets = [], []
        for qsl_idx, ids in pairs:
            check_answer(qsl_idx, ids, len(data), dataset_path, vocab)
            preds_ids.append(ids.tolist())
            targets.append(data[qsl_idx]["output"])
        preds = tok.batch_decode(preds_ids, skip_special_tokens=True)
        preds, targets = rouge.postprocess(preds), rouge.postprocess(targets)
        scores = rouge.rouge(preds, targets)
        return {"ROUGE1": scores["rouge1"], "ROUGE2": scores["rouge2"], "ROUGEL": scores["rougeL"],
                "ROUGELSUM": scores["rougeLsum"], "GEN_LEN": sum(len(p) for p in preds), "GEN_NUM": len(preds)}

    def accuracy_lines(self, metrics: dict) -> list[str]:
        d = {"rouge1": float(metrics["ROUGE1"]), "rouge2": float(metrics["ROUGE2"]),
             "rougeL": float(metrics["ROUGEL"]), "rougeLsum": float(metrics["ROUGELSUM"]),
             "gen_len": int(metrics["GEN_LEN"]), "gen_num": int(metrics["GEN_NUM"])}
        return [repr(d)]  # the Python dict line evaluation.py prints (plain numbers)

    # --- synthetic ------------------------------------------------------------
    def synthesize(self, out: Path, n: int, seed: int) -> list[np.ndarray]:
        from .synthetic import write_synthetic

        return write_synthetic(self, Path(out), n, seed)

    def synthetic_reference(self) -> dict[str, float]:
        return {"ROUGE1": 100.0, "ROUGE2": 100.0, "ROUGEL": 100.0}


def _hf_generate(g: _Generator, batch: list[list[int]]) -> list[np.ndarray]:
    """HF generate on one left-padded batch (pad = eos, as the reference)."""
    import torch

    eos = g.tok.eos_token_id
    L = max(len(p) for p in batch)
    ids = torch.full((len(batch), L), eos, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    for r, p in enumerate(batch):
        ids[r, L - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[r, L - len(p):] = 1
    with torch.inference_mode():
        out = g.model.generate(input_ids=ids.to(g.device), attention_mask=mask.to(g.device), **g.gen,
                               do_sample=False, pad_token_id=eos, eos_token_id=eos)
    gen = out[:, L:].cpu().numpy()
    return [cut_after_eos(row, eos) for row in gen]


def _hf_bytes_per_slot(model) -> int:
    c = model.config
    return 2 * c.n_layer * c.n_embd * next(model.parameters()).element_size()


BENCHMARK = GPTJ()
