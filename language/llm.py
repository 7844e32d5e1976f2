"""What the decoder LLM benchmarks (GPT-J, Llama-2-70B, Mixtral-8x7B) share: a causal LM loaded
from an HF checkpoint dir and split over a partition's devices, left-padded batches of token ids,
HF greedy generation with a static KV cache and SDPA, and the payload trimming rules
(cut after the first EOS, strip trailing EOS/pad).

Split over K devices (--devices_per_partition K): accelerate's `device_map`, the decoder layers
in K contiguous, equal runs (embedding on the first device, final norm + lm_head on the last).
One process per partition, as the launcher runs every model; no NCCL, no torchrun inside a
partition; each layer runs the same kernels as on one device, so the tokens do not depend on K.
Tensor parallelism would keep all K devices busy at once, but needs K processes per partition
(torchrun) and changes the reduction order of every matmul (tokens may differ from K=1); for an
accuracy run the kit instead runs more partitions (see README "Models bigger than one device").
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from evalkit.benchmark import Benchmark, Dataset
from evalkit.errors import KitError
from language import hf_checkpoint_dir


def split_devices(device: str) -> list[str]:
    """"cuda:0,cuda:1" -> ["cuda:0", "cuda:1"]; "cpu" -> ["cpu"]."""
    devs = [d.strip() for d in str(device).split(",")]
    if not all(devs):
        raise KitError(f"--device {device!r}: an empty device name in the list")
    return devs


def layer_device_map(n_layers: int, devices: Sequence[str], prefix: str = "model") -> dict[str, str]:
    """HF device_map: layer i on devices[i * K // n_layers] (K equal contiguous runs); embeddings
    and rotary tables with the first layers, final norm and lm_head with the last."""
    K = len(devices)
    dm = {f"{prefix}.embed_tokens": devices[0], f"{prefix}.rotary_emb": devices[0],
          f"{prefix}.norm": devices[-1], "lm_head": devices[-1]}
    for i in range(n_layers):
        dm[f"{prefix}.layers.{i}"] = devices[i * K // n_layers]
    return dm


def load_causal_lm(cls, model_path: Path, device: str, dtype, what: str, attn: str = "sdpa"):
    """`cls.from_pretrained` from an HF checkpoint dir, split over the comma-separated devices
    (one device: the same path with a one-device map); SDPA attention unless the architecture has
    none (`attn`: gpt-oss's attention sinks run "eager"); KitError on failure."""
    from transformers import AutoConfig

    from evalkit.hf_files import check_dir

    mp = hf_checkpoint_dir(model_path, what)
    check_dir(mp, f"the {what} checkpoint")  # config, generation config, weights headers: the bad file named
    devices = split_devices(device)
    try:
        cfg = AutoConfig.from_pretrained(str(mp))
        dm = layer_device_map(cfg.num_hidden_layers, devices)
        model = cls.from_pretrained(str(mp), dtype=dtype, device_map=dm, attn_implementation=attn)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise KitError(f"cannot load {what} from {mp} on {device} ({type(e).__name__}: {msg}).") from None
    return model.eval()


def left_pad(seqs: Sequence[np.ndarray], pad_id: int, device: str):
    """Token id rows -> (input_ids, attention_mask) int64 tensors, left-padded to the longest row
    (positions come from the mask in HF generate, so padding changes no token)."""
    import torch

    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, L - len(s):] = torch.tensor(np.asarray(s, dtype=np.int64))
            mask[i, L - len(s):] = 1
    return ids.to(device), mask.to(device)


def greedy_generate(model, seqs: Sequence[np.ndarray], *, pad_id: int, eos_id: int, max_new_tokens: int,
                    min_new_tokens: int, device: str, static_cache: bool = True,
                    logits_processor=None) -> np.ndarray:
    """Greedy decoding of a batch of prompts (token id rows) with HF generate: static KV cache,
    SDPA. Returns the generated part, (batch, steps) int64; rows that stopped early are filled
    with pad_id (trimmed by the caller: cut_after_eos / strip_trailing)."""
    import torch

    ids, mask = left_pad(seqs, pad_id, device)
    kw = {"cache_implementation": "static"} if static_cache else {}
    if logits_processor is not None:
        kw["logits_processor"] = logits_processor
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                             max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                             pad_token_id=pad_id, eos_token_id=eos_id, **kw)
    return out[:, ids.shape[1]:].cpu().numpy()


def cut_after_eos(row: np.ndarray, eos: int | Sequence[int]) -> np.ndarray:
    """The row up to and including its first EOS (any of them when several stop the generation):
    what batch 1 returns (the rest is batch padding)."""
    hit = np.flatnonzero(np.isin(row, eos))
    return row[: hit[0] + 1] if hit.size else row


def strip_trailing(row: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """The row without its trailing run of `ids` (Mixtral's reference strips EOS and pad)."""
    keep = len(row)
    drop = set(int(i) for i in ids)
    while keep and int(row[keep - 1]) in drop:
        keep -= 1
    return row[:keep]


def check_token_ids(qsl_idx: int, ids: np.ndarray, vocab: int) -> None:
    """KitError naming qsl_idx when a payload holds an id outside the tokenizer."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab):
        bad = int(ids.max()) if ids.max() >= vocab else int(ids.min())
        raise KitError(f"response for qsl_idx {qsl_idx} holds token id {bad} outside the tokenizer's {vocab} ids; "
                       f"wrong tokenizer or payload dtype.")


def check_answer(qsl_idx: int, ids: np.ndarray, n_rows: int, where, vocab: int) -> None:
    """KitError naming qsl_idx when it is no row of the set (n_rows rows, in `where`) or its payload
    holds an id outside the tokenizer: what every LLM scorer checks of each logged answer first."""
    if qsl_idx >= n_rows:
        raise KitError(f"qsl_idx {qsl_idx} is outside the {n_rows} rows of {where}.")
    check_token_ids(qsl_idx, ids, vocab)


def load_tokenizer(model_path: Path, what: str, padding_side: str = "left"):
    """The checkpoint's tokenizer with pad = eos (as the MLPerf LLM references set it)."""
    from transformers import AutoTokenizer

    from evalkit.util import load_or_explain
    from evalkit.hf_files import check_tokenizer_dir

    check_tokenizer_dir(Path(model_path), f"the {what} tokenizer")  # names the bad file; the loader would not
    tok = load_or_explain(f"{what} tokenizer", Path(model_path), AutoTokenizer.from_pretrained, str(model_path))
    tok.padding_side = padding_side
    tok.pad_token = tok.eos_token
    return tok


# ------------------------------------------------------------------------------------------------
# A benchmark whose dataset is a table of pre-tokenised prompts (`tok_input`): Llama-2, Mixtral
# ------------------------------------------------------------------------------------------------
GENERATION_FILE = "generation.json"  # synthetic sets only: {"max_new_tokens": n} their truth used


class Prompt:
    """One sample: prompt ids, the stop sequence that ends its generation (None: EOS only), and
    the generation cap the dataset imposes (synthetic sets; None: the option's)."""
    __slots__ = ("ids", "stop", "cap")

    def __init__(self, ids: np.ndarray, stop: tuple[int, ...] | None = None, cap: int | None = None):
        self.ids, self.stop, self.cap = ids, stop, cap


def generation_cap(root: Path) -> int | None:
    import json

    f = Path(root) / GENERATION_FILE
    if not f.is_file():
        from evalkit.manifest import SYNTHETIC_MARKER

        if (Path(root) / SYNTHETIC_MARKER).is_file():  # every synthetic set has one: its truth used that cap
            raise KitError(f"{f} is missing from this synthetic set (its truth was generated with that cap); "
                           f"restore it or write the set again.")
        return None
    try:
        cap = int(json.loads(f.read_text())["max_new_tokens"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise KitError(f"{f}: not a {{\"max_new_tokens\": n}} file ({e}); rewrite the synthetic set.") from None
    if cap < 1:
        raise KitError(f"{f}: max_new_tokens {cap} must be at least 1")
    return cap


class StopSequences:
    """Per-row stop sequence, as the Mixtral reference applies it: its postProcess cuts the generated
    tokens (never the prompt) after the first stop sequence; here, once a row's last generated tokens
    equal its stop sequence, the next token is forced to EOS (what StopAfterSequence does), which gives
    the same cut answer. `prompt_len`: the width of the (left-padded) prompt batch; only tokens after it
    count, so a prompt that ends with the stop sequence, or one that starts it, ends nothing.
    Rows with None are untouched."""

    def __init__(self, stops: Sequence[tuple[int, ...] | None], eos: int, *, prompt_len: int):
        self.stops, self.eos, self.prompt_len = list(stops), int(eos), int(prompt_len)

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids.shape[1] - self.prompt_len
        for r, stop in enumerate(self.stops):
            L = len(stop) if stop else 0
            if L and generated >= L and input_ids[r, -L:].tolist() == list(stop):
                row = torch.full_like(scores[r], -float("inf"))
                row[self.eos] = 0
                scores[r] = row
        return scores


RUN_DEFAULTS = {"static_cache": True, "generator": "hf", "token_budget": 0}
GENERATORS = ("hf", "kit")


def stop_ids(tok, model) -> int | list[int]:
    """What ends a generation, as vLLM stops (the MLPerf LLM references' engine): the tokenizer's EOS
    and every `eos_token_id` of the checkpoint's generation_config.json (Llama-3.1-Instruct lists
    <|end_of_text|>, <|eom_id|>, <|eot_id|>; gpt-oss <|return|>, <|endoftext|>, <|call|>). One id: an
    int (HF generate's and the trims' usual form). `model`: a loaded model or its GenerationConfig
    holder (checkpoint_stop_ids reads it without the weights)."""
    ids = [int(tok.eos_token_id)]
    cfg = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in ([] if cfg is None else [cfg] if isinstance(cfg, int) else cfg):
        if int(i) not in ids:
            ids.append(int(i))
    return ids[0] if len(ids) == 1 else ids


def checkpoint_stop_ids(tok, model_dir: Path) -> int | list[int]:
    """stop_ids from the checkpoint dir's generation_config.json (else config.json's, as transformers
    derives it), without loading weights: what the openai backend's requests and trims use."""
    from types import SimpleNamespace

    from transformers import AutoConfig, GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(str(model_dir))
    except (OSError, ValueError):
        try:
            gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(model_dir)))
        except (OSError, ValueError, KeyError) as e:
            raise KitError(f"{Path(model_dir) / 'config.json'}: cannot read the stop ids ({type(e).__name__}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    return stop_ids(tok, SimpleNamespace(generation_config=gen))


class LLMRunner:
    """What load_model returns: tokenizer, model, the partition's devices and generation settings
    (max_new_tokens, min_new_tokens + RUN_DEFAULTS: static_cache, generator, token_budget)."""

    def __init__(self, tok, model, devices: list[str], settings: dict):
        self.tok, self.model, self.devices = tok, model, devices
        self.settings = dict(RUN_DEFAULTS, **settings)
        self.eos = stop_ids(tok, model)

    def generate(self, prompts: Sequence[Prompt]) -> list[np.ndarray]:
        """Greedy answers, one id row per prompt (rows of the HF path still carry batch padding
        after EOS; the benchmark's trim removes it)."""
        s = self.settings
        caps = {p.cap for p in prompts if p.cap is not None}
        new = min([int(s["max_new_tokens"]), *caps])
        common = dict(max_new_tokens=new, min_new_tokens=min(int(s["min_new_tokens"]), new))
        out: list = [None] * len(prompts)
        hf = list(range(len(prompts)))
        if s["generator"] == "kit":
            # language/generate.py: length-sorted token-budget batches, finished prompts leave the
            # batch. It has no stop sequences: rows with one (Mixtral MBXP) take the HF path.
            from language.generate import generate

            kit = [i for i in hf if not prompts[i].stop]
            hf = [i for i in hf if prompts[i].stop]
            if kit:
                rows = generate(self.model, [prompts[i].ids.tolist() for i in kit], num_beams=1, **common,
                                eos_token_id=self.eos, pad_token_id=self.tok.pad_token_id,
                                token_budget=int(s["token_budget"]))
                for i, r in zip(kit, rows):
                    out[i] = r
        if hf:
            from transformers import LogitsProcessorList

            procs = None
            if any(prompts[i].stop for i in hf):
                width = max(len(prompts[i].ids) for i in hf)  # greedy_generate left-pads to the longest
                procs = LogitsProcessorList([StopSequences([prompts[i].stop for i in hf], self.tok.eos_token_id,
                                                           prompt_len=width)])
            rows = greedy_generate(self.model, [prompts[i].ids for i in hf], pad_id=self.tok.pad_token_id,
                                   eos_id=self.eos, device=self.devices[0],
                                   static_cache=bool(s["static_cache"]), logits_processor=procs, **common)
            for i, r in zip(hf, rows):
                out[i] = r
        return out


def load_runner(cls, model_path: Path, device: str, dtype, what: str, options: dict, attn: str = "sdpa") -> LLMRunner:
    for key, low in (("max_new_tokens", 1), ("min_new_tokens", 0), ("token_budget", 0)):
        if key in options and options[key] < low:
            raise KitError(f"--option {key}={options[key]}: must be at least {low}")
    if options.get("generator", "hf") not in GENERATORS:
        raise KitError(f"--option generator={options['generator']!r}: use one of {', '.join(GENERATORS)}")
    mp = hf_checkpoint_dir(model_path, what)
    tok = load_tokenizer(mp, what)
    model = load_causal_lm(cls, mp, device, dtype, what, attn)
    if options.get("generator") == "kit":
        from language.generate import unsupported_generation_settings

        odd = unsupported_generation_settings(model)
        if odd:
            raise KitError(f"{mp / 'generation_config.json'} sets {', '.join(odd)}, which the kit's generator does "
                           f"not implement; run with --option generator=hf")
    return LLMRunner(tok, model, split_devices(device), options)


class TokenTextIO:
    """BACKEND=openai for the token-prompt LLMs: the prompt travels as the dataset's token ids
    (server_api=vllm: `prompt` as an id list, the reference's own ids) or as their text, checked to
    encode back to exactly those ids (servers that take text: `transformers serve`, TRT-LLM); the
    generation settings are the in-process ones (greedy, max/min new tokens, the set's cap, the stop
    sequence as a stop string). The answer: the server's token ids (vLLM return_tokens_as_token_ids)
    or its text encoded with the checkpoint's tokenizer, EOS appended when the server says it stopped
    ("stop": EOS or the stop string, as the in-process generator writes it), then the benchmark's trim.
    Stop ids (`stops`, stop_ids' form): the checkpoint's, as in-process: the server is asked to stop on
    each (server_api=transformers: eos_token_id), an answer already ending on one gets none appended,
    and the trim cuts after the first of them."""

    def __init__(self, bench: "TokenPromptLLM", tok, settings: dict, stops: int | list[int] | None = None):
        self.bench, self.tok, self.settings = bench, tok, settings
        self.stops = int(tok.eos_token_id) if stops is None else stops

    def request(self, p: Prompt) -> dict:
        ids = [int(i) for i in p.ids]
        text = self.tok.decode(ids, skip_special_tokens=False)
        new = min([int(self.settings["max_new_tokens"]), *([p.cap] if p.cap is not None else [])])
        gen = {"max_new_tokens": new, "min_new_tokens": min(int(self.settings.get("min_new_tokens", 0)), new),
               "num_beams": 1, "do_sample": False, "eos_token_id": self.stops,
               "pad_token_id": self.tok.pad_token_id}
        if p.stop:
            gen["stop"] = [self.tok.decode(list(p.stop), skip_special_tokens=False)]
        return {"prompt": text, "prompt_ids": ids, "generation": gen, "text_exact": self._round_trips(text, ids)}

    def _round_trips(self, text: str, ids: list[int]) -> bool:
        return self.tok(text)["input_ids"] == ids  # as a text server encodes it (its default special tokens)

    def payload(self, text: str, token_ids: list[int] | None, finish_reason: str | None = None,
                item: Prompt | None = None) -> np.ndarray:
        stops = [self.stops] if isinstance(self.stops, int) else list(self.stops)
        ids = list(token_ids) if token_ids is not None else self.tok(text, add_special_tokens=False)["input_ids"]
        if finish_reason == "stop" and (not ids or ids[-1] not in stops):
            ids.append(int(self.tok.eos_token_id))  # the text does not say which stop id: the tokenizer's EOS
        row = np.asarray(ids, dtype=np.int64)
        return self.bench.trim(row, item, self.stops, self.tok.pad_token_id) if item is not None else row


class PromptTable(Dataset):
    """A dataset of pre-tokenised prompts (column `tok_input`) read with
    language/frames.py; `stop_of(row)` gives a row's stop sequence (None: EOS only)."""

    def __init__(self, root: Path, pickle_name: str, columns: Sequence[str], stop_of=None):
        from language.frames import open_table

        self.root, self.pickle_name = Path(root), pickle_name
        self.df = open_table(self.root, pickle_name, columns)
        self.size = len(self.df)
        self.cap = generation_cap(self.root)
        self._stop_of = stop_of

    def load(self, index: int) -> Prompt:
        if not 0 <= index < self.size:
            raise KitError(f"sample index {index} is outside {self.root / self.pickle_name} (size {self.size}).")
        row = self.df.iloc[index]
        ids = np.asarray(row["tok_input"], dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise KitError(f"{self.root / self.pickle_name} row {index}: tok_input is not a non-empty id list.")
        return Prompt(ids, self._stop_of(row) if self._stop_of else None, self.cap)

    def check_available(self, start: int, stop: int) -> None:
        pass  # every file was read when the dataset opened; the core checks the range


class TokenPromptLLM(Benchmark):
    """Llama-2-70B and Mixtral-8x7B: a pickled table of pre-tokenised prompts, an HF causal LM split
    over the partition's devices, greedy decoding, int32 payloads of the generated ids. Subclasses
    give the names/facts, `model_class`, `pickle_name`, `columns`, `trim` and the accuracy part."""
    payload_dtype = "int32"       # the reference SUTs and README commands (--dtype int32)
    token_payload = True
    multi_device = True
    default_batch_size = 16
    synthetic_n = 12
    model_class = ""              # transformers class name
    what = ""                     # for messages: "Llama-2-70B"
    pickle_name = ""
    columns: tuple[str, ...] = ("tok_input",)
    attn_implementation = "sdpa"  # transformers' attention for model_class ("eager" where it has no SDPA)

    def stop_of(self, row) -> tuple[int, ...] | None:
        return None

    def trim(self, row: np.ndarray, prompt: Prompt, eos: int, pad: int) -> np.ndarray:
        raise NotImplementedError

    # --- data -----------------------------------------------------------------
    def open_dataset(self, path: Path, model_path: Path | None = None, options: dict | None = None) -> PromptTable:
        return PromptTable(Path(path), self.pickle_name, self.columns, self.stop_of)

    def fingerprint(self, dataset_path: Path, model_path: Path) -> dict:
        from language.frames import table_file

        hf_checkpoint_dir(model_path, self.what)
        table_file(Path(dataset_path), self.pickle_name)  # KitError naming it when absent; content: the core
        fp = {}
        cap = generation_cap(Path(dataset_path))
        if cap is not None:
            fp["max_new_tokens_cap"] = cap
        return fp

    # --- model ----------------------------------------------------------------
    def load_model(self, model_path: Path, device: str, data_type: str, options: dict) -> LLMRunner:
        import transformers

        opts = dict(self.options, **options)
        return load_runner(getattr(transformers, self.model_class), Path(model_path), device,
                           self.torch_dtype(data_type), self.what, opts, self.attn_implementation)

    def compile_model(self, g: LLMRunner, compile_fn) -> LLMRunner:
        import copy

        # generate() calls the module itself: compile a shallow copy's forward (weights shared)
        compiled = copy.copy(g.model)
        compiled.forward = compile_fn(g.model.forward)
        return LLMRunner(g.tok, compiled, g.devices, g.settings)

    def make_batch(self, samples: Sequence[Prompt], device: str, data_type: str, options: dict) -> list[Prompt]:
        return list(samples)  # token ids; padded in forward on the model's first device

    def text_io(self, model_path: Path, options: dict) -> TokenTextIO:
        mp = hf_checkpoint_dir(model_path, self.what)
        tok = load_tokenizer(mp, self.what)
        return TokenTextIO(self, tok, dict(self.options, **options), checkpoint_stop_ids(tok, mp))

    def forward(self, g: LLMRunner, prompts: list[Prompt]) -> list[np.ndarray]:
        rows = g.generate(prompts)
        return [self.trim(row, p, g.eos, g.tok.pad_token_id) for row, p in zip(rows, prompts)]

    def postprocess(self, outputs: list[np.ndarray], n: int) -> list[np.ndarray]:
        return [np.ascontiguousarray(o, dtype=np.int32) for o in outputs[:n]]

    def tokenizer_for(self, dataset_path: Path, model_path: Path | None):
        return load_tokenizer(self.accuracy_model_path(Path(dataset_path), model_path), self.what)


# ------------------------------------------------------------------------------------------------
# OpenOrca accuracy (Llama-2, Mixtral)
# ------------------------------------------------------------------------------------------------
def rouge_metrics(preds_ids: list[list[int]], targets: list[str], tok) -> dict:
    """ROUGE of decoded predictions vs reference texts, as the OpenOrca scripts print it, plus gen_len
    (characters of the post-processed predictions)."""
    from language import rouge

    preds = tok.batch_decode(preds_ids, skip_special_tokens=True)
    preds, targets = rouge.postprocess(preds), rouge.postprocess(targets)
    s = rouge.rouge(preds, targets)
    return {"ROUGE1": s["rouge1"], "ROUGE2": s["rouge2"], "ROUGEL": s["rougeL"], "ROUGELSUM": s["rougeLsum"],
            "GEN_LEN": sum(len(p) for p in preds)}


def result_line(metrics: dict, extra: Iterable[tuple[str, str]] = ()) -> str:
    """The dict line the reference scripts print, with plain Python numbers (NumPy 2 would print
    np.float64(...), which the checker's patterns reject)."""
    d = {"rouge1": float(metrics["ROUGE1"]), "rouge2": float(metrics["ROUGE2"]),
         "rougeL": float(metrics["ROUGEL"]), "rougeLsum": float(metrics["ROUGELSUM"])}
    for key, metric in extra:
        d[key] = float(metrics[metric])
    d.update({"gen_len": int(metrics["GEN_LEN"]), "gen_num": int(metrics["GEN_NUM"]),
              "gen_tok_len": int(metrics["GEN_TOK_LEN"]), "tokens_per_sample": float(metrics["TOKENS_PER_SAMPLE"])})
    return repr(d)
