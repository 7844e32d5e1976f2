"""Fast generation for HF decoder LLMs: greedy and beam search with HF `generate` semantics.

    generate(model, input_ids, attention_mask, num_beams=4, max_new_tokens=128, min_new_tokens=30,
             early_stopping=True, length_penalty=1.0, eos_token_id=eos, pad_token_id=eos,
             token_budget=0) -> [np.int64 array of generated ids per prompt]

Each answer is what HF `generate` returns for that prompt alone, cut after its first eos (the
rest of a batched HF row is padding). The spec is transformers' own loop (generation/utils.py:
`_sample` for greedy, `_beam_search` for beams): log-softmax in fp32, min_new_tokens bans eos,
top 2*beams candidates, the length penalty on finished hypotheses, the early-stop heuristic. The
per-step tensors here are the same (per prompt) as there, so in fp32 the tokens are identical.

Where the time goes is the cache, and that is what differs from HF:
* the prompts of a call are sorted by length and cut into batches by a token budget (KV-cache
  slots; by default what free device memory holds); out of memory splits a batch in two and
  retries it, with one warning line; answers come back in the caller's order;
* the KV cache is allocated once per batch and written in place (no concatenation per step);
* the beams of a prompt share its prompt cache (prefill runs once per prompt, not per beam);
* beam reordering moves no cache: each beam keeps pointers to the cache slots of its
  ancestors (one small int table), and attention masks the other beams' slots out;
* attention runs in the model dtype (fp32 scores where the device offers them), never on an
  fp32 copy of the cache;
* prompts that are done leave the batch (the cache is compacted when enough of it is dead).

Decoders (make_decoder picks by config.model_type): `GPTJDecoder` and `LlamaFamilyDecoder`
(llama, mistral, mixtral: grouped kv heads, the MoE block as the module computes it) share
`KitDecoder`'s cache and attention and run the HF modules' own weights and submodules, one
layer device after another (models split over devices); `HFCacheDecoder` is any other HF causal
LM (or offloaded weights) through its own forward and DynamicCache.
"""
from __future__ import annotations

import math
import sys
from typing import Callable, Sequence

import numpy as np

NEG = -1.0e9           # HF's "impossible" score for beams (not -inf: sums stay finite)
CPU_TOKEN_BUDGET = 1 << 16   # KV slots per batch when the device reports no free memory (CPU)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------
def generate(model, input_ids, attention_mask=None, *, num_beams: int = 1, max_new_tokens: int,
             min_new_tokens: int = 0, early_stopping: bool | str = False, length_penalty: float = 1.0,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             token_budget: int = 0, decoder: str = "auto", log=None) -> list[np.ndarray]:
    """Generate for every prompt; see the module doc. `input_ids`: a left- or right-padded 2-D
    tensor with its `attention_mask`, or a list of 1-D id sequences (no padding). `token_budget`:
    KV-cache slots per batch, 0 = from free device memory (CPU: CPU_TOKEN_BUDGET). `decoder`:
    "auto" (the model's fast decoder when there is one), "fast" or "hf-cache"."""
    import torch

    prompts = _prompt_list(input_ids, attention_mask)
    if any(len(p) == 0 for p in prompts):
        raise ValueError(f"prompt {next(i for i, p in enumerate(prompts) if not p)} is empty")
    dec = make_decoder(model, decoder)
    cfg = _Cfg(num_beams, max_new_tokens, min_new_tokens, early_stopping, length_penalty,
               eos_token_id, pad_token_id)
    with torch.inference_mode():
        return run_batched(prompts, lambda ps: decode_batch(dec, ps, cfg),
                           lambda n, lmax: dec.cache_slots(n, lmax, cfg.num_beams, cfg.max_new_tokens),
                           token_budget or auto_token_budget(dec.device, dec.bytes_per_slot), log=log)


def make_decoder(model, kind: str = "auto"):
    model_type = getattr(model.config, "model_type", "")
    if kind not in ("auto", "fast", "hf-cache"):
        raise ValueError(f"decoder {kind!r}: use auto, fast or hf-cache")
    offloaded = any(p.device.type == "meta" for p in model.parameters())  # weights loaded by hooks
    if kind == "hf-cache" or (kind == "auto" and (model_type not in FAST_DECODERS or offloaded)):
        return HFCacheDecoder(model)
    if model_type not in FAST_DECODERS:
        raise ValueError(f"no fast decoder for model_type {model_type!r} (have: {', '.join(FAST_DECODERS)})")
    return FAST_DECODERS[model_type](model)


# generation_config fields (with their neutral values) that add HF logits processors or stopping
# rules this loop does not implement; a checkpoint setting one must use HF generate.
_NEUTRAL = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
            "bad_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
            "suppress_tokens": None, "begin_suppress_tokens": None, "sequence_bias": None,
            "exponential_decay_length_penalty": None, "renormalize_logits": False, "min_length": 0,
            "max_time": None, "stop_strings": None, "diversity_penalty": 0.0, "num_beam_groups": 1}


def unsupported_generation_settings(model) -> list[str]:
    """`name=value` for each generation_config setting that HF generate would apply and this
    loop would not (empty for the published GPT-J/Llama-2/Mixtral checkpoints)."""
    gc = getattr(model, "generation_config", None)
    out = []
    for name, neutral in _NEUTRAL.items():
        v = getattr(gc, name, neutral) if gc is not None else neutral
        if v is not None and v != neutral and not (neutral in (None, 0, 0.0) and not v):  # None: unset
            out.append(f"{name}={v!r}")
    return out


def auto_token_budget(device, bytes_per_slot: int, fraction: float = 0.85, reserve: int = 2 << 30) -> int:
    """KV-cache slots that fit in free device memory (CUDA), keeping `reserve` bytes for activations
    and logits; CPU_TOKEN_BUDGET where the device does not report free memory."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        # blocks PyTorch's allocator holds but no tensor uses (an earlier batch's cache) are free too
        free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return max(1, int((free * fraction - reserve) // bytes_per_slot))
    return CPU_TOKEN_BUDGET


def run_batched(items: Sequence[Sequence[int]], run: Callable[[list], list], cost: Callable[[int, int], int],
                budget: int, log=None) -> list:
    """Sort `items` (token id sequences) by length, longest first, cut batches whose cost(n, longest)
    stays within `budget` (at least one item), run each; on out of memory split the batch in two,
    lower the budget, retry (one warning line each time). Results come back in the input order."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    order = sorted(range(len(items)), key=lambda i: -len(items[i]))
    out: list = [None] * len(items)
    state = {"budget": budget}
    i = 0
    while i < len(order):
        lmax = len(items[order[i]])
        n = 1
        while i + n < len(order) and cost(n + 1, lmax) <= state["budget"]:
            n += 1
        chunk = order[i:i + n]
        for j, r in zip(chunk, _run_splitting(items, chunk, run, cost, state, log)):
            out[j] = r
        i += n
    return out


def _run_splitting(items, chunk, run, cost, state, log) -> list:
    try:
        return run([items[j] for j in chunk])
    except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
        if not _is_oom(e):
            raise
        _free_device_memory()
        lmax = max(len(items[j]) for j in chunk)
        if len(chunk) == 1:
            from evalkit.errors import KitError

            raise KitError(f"out of memory generating for one prompt of {lmax} tokens "
                           f"({cost(1, lmax)} cache slots); use a device with more memory") from None
        half = (len(chunk) + 1) // 2
        state["budget"] = min(state["budget"], max(1, cost(half, lmax)))
        log(f"warning: out of memory with {len(chunk)} prompts ({cost(len(chunk), lmax)} cache slots); "
            f"split into {half} + {len(chunk) - half} and retried, token budget now {state['budget']}")
        return (_run_splitting(items, chunk[:half], run, cost, state, log)
                + _run_splitting(items, chunk[half:], run, cost, state, log))


def _is_oom(e: BaseException) -> bool:
    import torch

    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _prompt_list(input_ids, attention_mask) -> list[list[int]]:
    import torch

    if isinstance(input_ids, torch.Tensor) or isinstance(input_ids, np.ndarray):
        ids = torch.as_tensor(input_ids)
        if ids.dim() == 1:
            ids = ids[None]
        if attention_mask is None:
            return [row.tolist() for row in ids]
        mask = torch.as_tensor(attention_mask).bool()
        return [row[m].tolist() for row, m in zip(ids, mask)]
    if attention_mask is not None:
        raise ValueError("attention_mask goes with a padded tensor of input_ids, not with a list of prompts")
    return [list(map(int, p)) for p in input_ids]


class _Cfg:
    def __init__(self, num_beams, max_new_tokens, min_new_tokens, early_stopping, length_penalty, eos, pad):
        if num_beams < 1 or max_new_tokens < 1:
            raise ValueError(f"num_beams {num_beams} and max_new_tokens {max_new_tokens} must be >= 1")
        if early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping {early_stopping!r}: use True, False or 'never'")
        self.num_beams, self.max_new_tokens, self.min_new_tokens = int(num_beams), int(max_new_tokens), int(min_new_tokens)
        self.early_stopping, self.length_penalty = early_stopping, float(length_penalty)
        eos = [] if eos is None else ([int(eos)] if isinstance(eos, (int, np.integer)) else [int(e) for e in eos])
        self.eos = eos
        # HF: output_fill_value = pad_token_id or eos_token_id[0]
        self.fill = pad if pad is not None else (eos[0] if eos else -1)


# ----------------------------------------------------------------------------------------------
# the decode loops (model independent; a decoder owns the forward and the cache)
# ----------------------------------------------------------------------------------------------
def decode_batch(dec, prompts: list[list[int]], cfg: _Cfg) -> list[np.ndarray]:
    if cfg.num_beams == 1:
        return _greedy(dec, prompts, cfg)
    return _beam(dec, prompts, cfg)


def _compact_due(n_dead: int, n_rows: int) -> bool:
    # Compaction copies the live cache once; computing dead rows costs a fraction per step.
    return n_dead > 0 and n_dead * 8 >= n_rows


def _greedy(dec, prompts, cfg) -> list[np.ndarray]:
    import torch

    B, T = len(prompts), cfg.max_new_tokens
    logits = dec.start(prompts, 1, T)
    dev = logits.device
    eos = torch.tensor(cfg.eos, dtype=torch.long, device=dev)
    ids = torch.arange(B, device=dev)              # caller's prompt index of each live row
    out = torch.full((B, T), cfg.fill, dtype=torch.long, device=dev)
    live = torch.ones(B, dtype=torch.bool, device=dev)
    length = torch.full((B,), T, dtype=torch.long)
    for t in range(T):
        if t > 0:
            logits = dec.step(tok, t - 1)
        scores = logits.float()
        if t < cfg.min_new_tokens and len(cfg.eos):
            scores[:, eos] = -math.inf
        tok = torch.argmax(scores, dim=-1)
        out[ids, t] = torch.where(live, tok, torch.full_like(tok, cfg.fill))
        hit = torch.isin(tok, eos) & live if len(cfg.eos) else torch.zeros_like(live)
        live = live & ~hit
        n_hit, n_live = torch.stack([hit.sum(), live.sum()]).tolist()  # the step's one host sync
        if n_hit:
            length[ids[hit].cpu()] = t + 1
        if t + 1 == T or not n_live:
            break
        if _compact_due(live.numel() - n_live, live.numel()):
            keep = torch.nonzero(live).flatten()
            dec.keep(keep)
            ids, live, tok = ids[keep], live[keep], tok[keep]
    out = out.cpu().numpy()
    return [out[b, :int(length[b])].astype(np.int64) for b in range(B)]


def _beam(dec, prompts, cfg) -> list[np.ndarray]:
    import torch

    B, nb, T = len(prompts), cfg.num_beams, cfg.max_new_tokens
    logits = dec.start(prompts, nb, T)                 # (B, V): one prefill row per prompt
    dev = logits.device
    V = logits.shape[-1]
    eos = torch.tensor(cfg.eos, dtype=torch.long, device=dev)
    k = max(2, 1 + len(cfg.eos)) * nb                  # HF beams_to_keep
    top_mask = torch.arange(k, device=dev) < nb
    ids = torch.arange(B, device=dev)
    running_seq = torch.full((B, nb, T), cfg.fill, dtype=torch.long, device=dev)
    seq = running_seq.clone()
    seq_len = torch.zeros((B, nb), dtype=torch.long, device=dev)
    running_scores = torch.zeros((B, nb), dtype=torch.float, device=dev)
    running_scores[:, 1:] = NEG
    beam_scores = torch.full((B, nb), NEG, dtype=torch.float, device=dev)
    is_fin = torch.zeros((B, nb), dtype=torch.bool, device=dev)
    unsat = torch.ones((B, 1), dtype=torch.bool, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    results: list = [None] * B
    for t in range(T):
        n = ids.numel()
        if t == 0:
            # HF prefills each prompt num_beams times: identical rows
            log_probs = torch.log_softmax(logits.float(), dim=-1)[:, None, :].expand(n, nb, V)
        else:
            log_probs = torch.log_softmax(dec.step(running_seq[:, :, t - 1].reshape(-1), t - 1).float(), dim=-1)
            log_probs = log_probs.view(n, nb, V)
        if t < cfg.min_new_tokens and len(cfg.eos):
            ban = torch.zeros(V, dtype=torch.bool, device=dev)
            ban[eos] = True
            log_probs = torch.where(ban, -math.inf, log_probs)
        acc = (log_probs + running_scores[:, :, None]).reshape(n, nb * V)
        top_lp, top_idx = torch.topk(acc, k=k)
        top_beam = top_idx // V
        top_tok = top_idx % V
        cand_seq = _gather(running_seq, top_beam)
        cand_seq[:, :, t] = top_tok
        hits = torch.isin(top_tok, eos) if len(cfg.eos) else torch.zeros_like(top_tok, dtype=torch.bool)
        if t + 1 >= T:
            hits = torch.ones_like(hits)
        # running beams for the next step
        run_lp = top_lp + hits.to(torch.float32) * NEG
        nxt = torch.topk(run_lp, k=nb)[1]
        running_seq = _gather(cand_seq, nxt)
        running_scores = _gather(run_lp, nxt)
        parents = _gather(top_beam, nxt)
        # finished hypotheses (HF _update_finished_beams)
        just = hits & top_mask[None, :]
        fin_lp = top_lp / ((t + 1) ** cfg.length_penalty)
        full = torch.all(is_fin, dim=-1, keepdim=True) & (cfg.early_stopping is True)
        fin_lp = fin_lp + full.to(torch.float32) * NEG
        fin_lp = fin_lp + (~unsat).to(torch.float32) * NEG
        fin_lp = fin_lp + (~just) * NEG
        m_seq = torch.cat((seq, cand_seq), dim=1)
        m_scores = torch.cat((beam_scores, fin_lp), dim=1)
        m_len = torch.cat((seq_len, torch.full_like(top_tok, t + 1)), dim=1)
        m_fin = torch.cat((is_fin, just), dim=1)
        best = torch.topk(m_scores, k=nb)[1]
        seq, beam_scores, seq_len, is_fin = (_gather(m_seq, best), _gather(m_scores, best),
                                             _gather(m_len, best), _gather(m_fin, best))
        # early-stop heuristic (HF _check_early_stop_heuristic), generated length t + 1
        if cfg.early_stopping == "never" and cfg.length_penalty > 0.0:
            hyp_len = T
        else:
            hyp_len = t + 1
        best_run = running_scores[:, :1] / (hyp_len ** cfg.length_penalty)
        worst_fin = torch.where(is_fin, torch.min(beam_scores, dim=1, keepdim=True)[0], NEG)
        unsat = unsat & torch.any(best_run > worst_fin, dim=-1, keepdim=True)
        now_done = ~unsat[:, 0] | (torch.all(is_fin, dim=-1) & (cfg.early_stopping is True))
        if t + 1 == T:
            now_done = torch.ones_like(now_done)
        new = now_done & ~done
        done = done | new
        n_new, n_done = torch.stack([new.sum(), done.sum()]).tolist()  # the step's one host sync
        if n_new:
            sel = torch.nonzero(new).flatten()
            s_cpu, l_cpu = seq[sel, 0].cpu().numpy(), seq_len[sel, 0].cpu().numpy()
            for r, b in enumerate(ids[sel].tolist()):
                results[b] = s_cpu[r, :int(l_cpu[r])].astype(np.int64)
        if n_done == n:
            break
        dec.reorder(parents)
        if _compact_due(n_done, n):
            keep = torch.nonzero(~done).flatten()
            dec.keep(keep)
            ids, running_seq, running_scores, seq, beam_scores, seq_len, is_fin, unsat, done = (
                x[keep] for x in (ids, running_seq, running_scores, seq, beam_scores, seq_len, is_fin, unsat, done))
    return results


def _gather(x, idx):
    """x[b, idx[b, j], ...] (HF _gather_beams)."""
    import torch

    while idx.dim() < x.dim():
        idx = idx.unsqueeze(-1)
    return torch.take_along_dim(x, idx, dim=1)


# ----------------------------------------------------------------------------------------------
# decoders
# ----------------------------------------------------------------------------------------------
class HFCacheDecoder:
    """Any HF causal LM through its own forward and DynamicCache, rows = prompts x beams as in HF
    generate (prompts left-padded, positions from the mask). The generic fallback: correct for
    every architecture transformers runs, but the cache is HF's (concatenated, reordered by copy)."""

    def __init__(self, model):
        p = next(model.parameters())
        self.model, self.device, self.dtype = model, p.device, p.dtype
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.bytes_per_slot = 2 * cfg.num_hidden_layers * kv_heads * head_dim * p.element_size()

    @staticmethod
    def cache_slots(n: int, lmax: int, nb: int, new: int) -> int:
        return n * nb * (lmax + new)

    def start(self, prompts, nb, T):
        import torch
        from transformers import DynamicCache

        self.nb = nb
        L = max(len(p) for p in prompts)
        rows = [p for p in prompts for _ in range(nb)]
        ids = torch.zeros((len(rows), L), dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for r, p in enumerate(rows):
            ids[r, L - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, L - len(p):] = 1
        self.mask = mask.to(self.device)
        pos = (self.mask.cumsum(-1) - 1).masked_fill(self.mask == 0, 0)
        self.pos = pos[:, -1:]
        self.cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids.to(self.device), attention_mask=self.mask, position_ids=pos,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[::nb, -1].float()

    def step(self, tokens, slot):
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=-1)
        self.pos = self.pos + 1
        out = self.model(input_ids=tokens.view(-1, 1), attention_mask=self.mask, position_ids=self.pos,
                         past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1].float()

    def reorder(self, parents):
        import torch

        if self.nb == 1:
            return
        n = parents.shape[0]
        flat = (torch.arange(n, device=parents.device)[:, None] * self.nb + parents).reshape(-1)
        self.cache.reorder_cache(flat)
        self.mask, self.pos = self.mask[flat], self.pos[flat]

    def keep(self, idx):
        import torch

        rows = (idx[:, None] * self.nb + torch.arange(self.nb, device=idx.device)).reshape(-1)
        self.cache.reorder_cache(rows)
        self.mask, self.pos = self.mask[rows], self.pos[rows]


class KitDecoder:
    """The kit's cache and attention for rotary decoder LLMs (HF module weights, HF's math):

    prompt cache  K/V[layer]: (prompts, kv heads, longest prompt, head_dim), shared by a prompt's beams
    beam cache    K/V[layer]: (prompts, kv heads, new tokens, beams, head_dim), slot (step, beam)
    ancestry      (prompts, beams, new tokens): the beam slot of each step on a beam's path

    A decode step writes slot (t, beam) in place; beam reordering only permutes the ancestry
    table; attention scores all of a prompt's beam slots (and all query heads of a kv head) in
    one batched matmul and masks the slots off each beam's path: no copy of the cache per step.
    Prefill runs one prompt at a time (no padding computed). A subclass gives the layer math
    (`_layer`), positions (`_rope_ctx`), embedding and head; each layer's cache lives on that
    layer's device (models split over devices)."""

    def __init__(self, model, layers, n_heads: int, n_kv_heads: int, head_dim: int, scale: float):
        import torch

        self.model, self.blocks = model, list(layers)
        self.H, self.Hkv, self.D, self.scale = n_heads, n_kv_heads, head_dim, scale
        self.G = n_heads // n_kv_heads
        p = next(model.parameters())
        self.dtype = p.dtype
        self.devs = [next(b.parameters()).device for b in self.blocks]
        self.device = self.devs[0]
        self.bytes_per_slot = 2 * len(self.blocks) * n_kv_heads * head_dim * p.element_size()
        if self.dtype == torch.float32:
            self.mode = "fp32"
        elif _probe_f32_out(self.device, self.dtype):
            self.mode = "f32out"
        else:
            self.mode = "upcast" if self.device.type == "cpu" else "half"

    @staticmethod
    def cache_slots(n: int, lmax: int, nb: int, new: int) -> int:
        return n * (lmax + nb * new)

    # -- arithmetic shared by prefill and decode --
    def _mm32(self, a, b):
        """a @ b with fp32 output: fp32 models as they are; half precision with fp32 outputs
        where the device has them (CUDA bmm out_dtype: fp32 scores without an fp32 copy of the
        cache); on CPU by upcasting (HF's own numerics; CPU is no half-precision target); else
        in the model dtype (fp32 accumulation inside the GEMM) and widened after."""
        import torch

        if self.mode == "fp32":
            return torch.matmul(a, b)
        if self.mode == "f32out":
            lead = a.shape[:-2]
            return torch.bmm(a.flatten(0, -3), b.flatten(0, -3),
                             out_dtype=torch.float32).view(*lead, a.shape[-2], b.shape[-1])
        if self.mode == "upcast":
            return torch.matmul(a.float(), b.float())
        return torch.matmul(a, b).float()

    def _ctx_on(self, ctx, dev):
        """Per-step tensors (positions, masks) on layer device `dev`, moved once per device."""
        if dev not in ctx["_on"]:
            ctx["_on"][dev] = {k: _to(v, dev) for k, v in ctx.items() if k != "_on"}
        return ctx["_on"][dev]

    # -- prefill --
    def start(self, prompts, nb, T):
        import torch
        import torch.nn.functional as F

        B, P = len(prompts), max(len(p) for p in prompts)
        Hkv, D, dt = self.Hkv, self.D, self.dtype
        self.nb, self.T = nb, T
        self.plen = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=self.device)
        self.kp = [torch.zeros((B, Hkv, P, D), dtype=dt, device=d) for d in self.devs]
        self.vp = [torch.zeros((B, Hkv, P, D), dtype=dt, device=d) for d in self.devs]
        self.kg = [torch.zeros((B, Hkv, T, nb, D), dtype=dt, device=d) for d in self.devs]
        self.vg = [torch.zeros((B, Hkv, T, nb, D), dtype=dt, device=d) for d in self.devs]
        self.anc = torch.zeros((B, nb, T), dtype=torch.long, device=self.device)
        logits = []
        for b, p in enumerate(prompts):
            L = len(p)
            ids = torch.tensor([p], dtype=torch.long, device=self.device)
            h = self._embed(ids)
            ctx = {"rope": self._rope_ctx(h, torch.arange(L, device=self.device)[None]), "_on": {}}

            def attend(i, q, k, v, b=b, L=L):
                # q (1, L, H, D), k/v (1, L, Hkv, D) -> (1, L, H*D)
                q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
                self.kp[i][b, :, :L] = k[0]
                self.vp[i][b, :, :L] = v[0]
                if self.G > 1:  # HF repeat_kv: query head h reads kv head h // G
                    k, v = k.repeat_interleave(self.G, dim=1), v.repeat_interleave(self.G, dim=1)
                if self.mode in ("fp32", "upcast"):  # HF eager attention, fp32 scores
                    w = self._scale(self._mm32(q, k.transpose(-1, -2)))
                    causal = torch.ones((L, L), dtype=torch.bool, device=q.device).triu(1)
                    w = torch.softmax(w.masked_fill(causal, torch.finfo(w.dtype).min), dim=-1)
                    o = self._mm32(w.to(v.dtype), v).to(v.dtype)
                else:  # fused kernel on the accelerator, fp32 scores and softmax inside
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self._scale(1.0))
                return o.transpose(1, 2).reshape(1, L, self.H * self.D)

            for i, blk in enumerate(self.blocks):
                h = self._layer(blk, _to(h, self.devs[i]), self._ctx_on(ctx, self.devs[i])["rope"],
                                lambda q, k, v, i=i: attend(i, q, k, v))
            logits.append(_to(self._head(h[:, -1:])[:, -1].float(), self.device))
        pad = torch.arange(P, device=self.device)[None, :] >= self.plen[:, None]
        self.pmask = torch.zeros((B, 1, 1, P), dtype=torch.float32, device=self.device).masked_fill(
            pad[:, None, None, :], -math.inf)
        return torch.cat(logits, dim=0)

    # -- one decode step: every live row feeds its token at generated slot `slot` --
    def step(self, tokens, slot):
        import torch

        B, nb, H, Hkv, G, D, t = self.plen.numel(), self.nb, self.H, self.Hkv, self.G, self.D, slot
        N = B * nb
        self.anc[:, :, t] = torch.arange(nb, device=self.device)
        # mask: prompt padding, then the (step, beam) slots on each beam's path
        on_path = (self.anc[:, :, :t + 1, None] == torch.arange(nb, device=self.device)).flatten(2)
        gmask = torch.zeros(on_path.shape, dtype=torch.float32, device=self.device).masked_fill(~on_path, -math.inf)
        P = self.pmask.shape[-1]
        mask = torch.cat([self.pmask.expand(B, 1, nb, -1), gmask[:, None]], dim=-1)[:, :, None]  # (B,1,1,nb,X)
        h = self._embed(tokens.view(N, 1))
        pos = (self.plen[:, None] + t).expand(B, nb).reshape(N, 1)
        ctx = {"rope": self._rope_ctx(h, pos), "mask": mask, "_on": {}}

        def attend(i, q, k, v, c):
            # q (N, 1, H, D) -> (B, Hkv, G*nb, D): the G query heads of a kv head and the nb beams
            q = q.view(B, nb, Hkv, G, D).permute(0, 2, 3, 1, 4).reshape(B, Hkv, G * nb, D)
            self.kg[i][:, :, t] = k.view(B, nb, Hkv, D).transpose(1, 2)
            self.vg[i][:, :, t] = v.view(B, nb, Hkv, D).transpose(1, 2)
            kg = self.kg[i][:, :, :t + 1].flatten(2, 3)               # (B, Hkv, (t+1)*nb, D), a view
            vg = self.vg[i][:, :, :t + 1].flatten(2, 3)
            w = torch.cat([self._mm32(q, self.kp[i].transpose(-1, -2)), self._mm32(q, kg.transpose(-1, -2))], dim=-1)
            w = self._scale(w).view(B, Hkv, G, nb, -1) + c["mask"]
            w = torch.softmax(w, dim=-1).to(self.dtype).view(B, Hkv, G * nb, -1)
            # prompt part + beam part, summed before the one rounding to the model dtype
            o = (self._mm32(w[..., :P], self.vp[i]) + self._mm32(w[..., P:], vg)).to(self.dtype)
            return o.view(B, Hkv, G, nb, D).permute(0, 3, 1, 2, 4).reshape(N, 1, H * D)

        for i, blk in enumerate(self.blocks):
            c = self._ctx_on(ctx, self.devs[i])
            h = self._layer(blk, _to(h, self.devs[i]), c["rope"], lambda q, k, v, i=i, c=c: attend(i, q, k, v, c))
        return _to(self._head(h)[:, -1].float(), self.device)

    def reorder(self, parents):
        """New beam j continues old beam parents[:, j]: its path is the parent's path."""
        import torch

        if self.nb > 1:
            self.anc = torch.take_along_dim(self.anc, parents[:, :, None], dim=1)

    def keep(self, idx):
        plen = self.plen[idx]
        P = int(plen.max())  # the longest live prompt; slots past it were padding for everyone
        per = [_to(idx, d) for d in self.devs]
        self.kp = [k[j, :, :P] for k, j in zip(self.kp, per)]
        self.vp = [v[j, :, :P] for v, j in zip(self.vp, per)]
        self.kg = [k[j] for k, j in zip(self.kg, per)]
        self.vg = [v[j] for v, j in zip(self.vg, per)]
        self.anc, self.plen, self.pmask = self.anc[idx], plen, self.pmask[idx, :, :, :P]


class GPTJDecoder(KitDecoder):
    """GPT-J (GPTJForCausalLM; modeling_gptj.py): partial interleaved rotary, parallel attention
    and MLP off one LayerNorm, scores divided by sqrt(head_dim)."""

    def __init__(self, model):
        cfg = model.config
        D = cfg.n_embd // cfg.n_head
        super().__init__(model, model.transformer.h, cfg.n_head, cfg.n_head, D, math.sqrt(D))
        self.tr, self.rot = model.transformer, cfg.rotary_dim
        self.pos_table = self.blocks[0].attn.embed_positions.to(self.device)

    def _scale(self, w):
        return w / self.scale

    def _embed(self, ids):
        return self.tr.wte(ids)

    def _head(self, h):
        return self.model.lm_head(self.tr.ln_f(h))

    def _rope_ctx(self, h, positions):
        import torch

        sincos = self.pos_table[positions].to(self.dtype)           # (N, L, rot)
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
        return (torch.repeat_interleave(sin[:, :, None, :], 2, 3), torch.repeat_interleave(cos[:, :, None, :], 2, 3))

    def _rope(self, x, sc):
        import torch

        sin, cos = sc

        def apply(t):
            t1, t2 = t[:, :, :, ::2], t[:, :, :, 1::2]
            return (t * cos) + (torch.stack((-t2, t1), dim=-1).flatten(-2) * sin)

        if self.rot is None:
            return apply(x)
        return torch.cat([apply(x[:, :, :, :self.rot]), x[:, :, :, self.rot:]], dim=-1)

    def _layer(self, blk, h, sc, attend):
        N, L, _ = h.shape
        a = blk.attn
        x = blk.ln_1(h)
        q = self._rope(a.q_proj(x).view(N, L, self.H, self.D), sc)
        k = self._rope(a.k_proj(x).view(N, L, self.H, self.D), sc)
        v = a.v_proj(x).view(N, L, self.H, self.D)
        return a.out_proj(attend(q, k, v)) + blk.mlp(x) + h


class LlamaFamilyDecoder(KitDecoder):
    """Llama / Mistral / Mixtral (modeling_llama.py, modeling_mixtral.py): RMSNorm, rotate-half
    rotary from the model's rotary_emb, grouped kv heads, scores times head_dim**-0.5, MLP or
    sparse-MoE block as the module computes it."""

    def __init__(self, model):
        cfg = model.config
        attn = model.model.layers[0].self_attn
        D = getattr(attn, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        super().__init__(model, model.model.layers, cfg.num_attention_heads,
                         getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, D, attn.scaling)
        self.base = model.model

    def _scale(self, w):
        return w * self.scale

    def _embed(self, ids):
        return self.base.embed_tokens(ids)

    def _head(self, h):
        h = _to(h, next(self.base.norm.parameters()).device)
        return self.model.lm_head(_to(self.base.norm(h), self.model.lm_head.weight.device))

    def _rope_ctx(self, h, positions):
        cos, sin = self.base.rotary_emb(h, positions)               # (N, L, D)
        return cos[:, :, None, :], sin[:, :, None, :]

    @staticmethod
    def _rot_half(x):
        import torch

        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def _layer(self, blk, h, cs, attend):
        N, L, _ = h.shape
        cos, sin = cs
        a = blk.self_attn
        x = blk.input_layernorm(h)
        q = a.q_proj(x).view(N, L, self.H, self.D)
        k = a.k_proj(x).view(N, L, self.Hkv, self.D)
        v = a.v_proj(x).view(N, L, self.Hkv, self.D)
        q = (q * cos) + (self._rot_half(q) * sin)
        k = (k * cos) + (self._rot_half(k) * sin)
        h = h + a.o_proj(attend(q, k, v))
        return h + blk.mlp(blk.post_attention_layernorm(h))


def _to(x, dev):
    if isinstance(x, tuple):
        return tuple(_to(e, dev) for e in x)
    return x if x.device == dev else x.to(dev)


def _probe_f32_out(device, dtype) -> bool:
    """Can this device multiply half-precision matrices into fp32 outputs (bmm out_dtype)?"""
    import torch

    if dtype == torch.float32 or torch.device(device).type == "cpu":
        return False
    try:
        a = torch.ones((1, 2, 2), dtype=dtype, device=device)
        return torch.bmm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


FAST_DECODERS = {"gptj": GPTJDecoder, "llama": LlamaFamilyDecoder, "mistral": LlamaFamilyDecoder,
                 "mixtral": LlamaFamilyDecoder}
