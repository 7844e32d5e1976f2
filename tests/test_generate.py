"""language/generate.py against HF generate (the spec): identical tokens in fp32 on CPU for greedy
and beam search (eos hits, early stopping True/False/"never", length penalties, finished prompts
leaving the batch), bf16 ROUGE within 99.9 % of the HF path, token-budget batches and the
out-of-memory split. Tiny GPT-J and BPE tokenizer from the synthetic set writer."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from evalkit.errors import KitError  # noqa: E402
from language import generate as G  # noqa: E402

NEW = 20


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model dir, tokenizer, fp32 model, prompts as id lists of 6 different lengths)."""
    from language.gptj.benchmark import PROMPT_INPUT, load_tokenizer
    from language.gptj.synthetic import _build_model, _train_tokenizer
    from language.synthtext import lexicon, paragraph
    from transformers import GPTJForCausalLM

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("gen_tiny")
    rng = np.random.default_rng([3, 7])
    words = lexicon(rng, 300)
    _build_model(3, _train_tokenizer(rng, words, d), d)
    tok = load_tokenizer(d)
    model = GPTJForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    texts = [PROMPT_INPUT.format(instruction="Summarize the following news article:",
                                 input=paragraph(rng, words, n)) for n in (2, 5, 1, 4, 3, 6)]
    return d, tok, model, [tok(t)["input_ids"] for t in texts]


def hf_reference(model, prompts, eos, **gen):
    """HF generate on the left-padded batch (batched == batch 1: tests/test_gptj.py), cut after eos."""
    L = max(map(len, prompts))
    ids = torch.full((len(prompts), L), eos, dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, L - len(p):], mask[r, L - len(p):] = torch.tensor(p), 1
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, eos_token_id=eos,
                             pad_token_id=eos, **gen)[:, L:].numpy()
    res = []
    for row in out:
        hit = np.flatnonzero(row == eos)
        res.append(row[:hit[0] + 1] if hit.size else row)
    return res


@pytest.fixture(scope="module")
def common_token(tiny):
    """A token the tiny model generates often: used as eos so that hypotheses end mid-way."""
    _, tok, model, prompts = tiny
    out = G.generate(model, prompts, max_new_tokens=NEW, eos_token_id=tok.eos_token_id)
    vals, counts = np.unique(np.concatenate(out), return_counts=True)
    return int(vals[np.argmax(counts)])


CASES = {
    "greedy": dict(num_beams=1, min_new_tokens=4),
    "greedy_eos": dict(num_beams=1, min_new_tokens=3, eos="common"),
    "beam4_early": dict(num_beams=4, min_new_tokens=3, early_stopping=True, eos="common"),
    "beam4_reference_settings": dict(num_beams=4, min_new_tokens=10, early_stopping=True),
    "beam4_heuristic": dict(num_beams=4, min_new_tokens=2, early_stopping=False, eos="common"),
    "beam3_never_lp2": dict(num_beams=3, min_new_tokens=2, early_stopping="never", length_penalty=2.0, eos="common"),
    "beam2_lp_negative": dict(num_beams=2, min_new_tokens=1, early_stopping=False, length_penalty=-0.5, eos="common"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_identical_to_hf_generate_fp32(tiny, common_token, case, monkeypatch):
    _, tok, model, prompts = tiny
    gen = dict(CASES[case])
    eos = common_token if gen.pop("eos", None) == "common" else tok.eos_token_id
    ref = hf_reference(model, prompts, eos, max_new_tokens=NEW, **gen)
    decoders = ("fast", "hf-cache") if case in ("greedy_eos", "beam4_early") else ("fast",)
    kept = []
    keep = G.GPTJDecoder.keep
    monkeypatch.setattr(G.GPTJDecoder, "keep", lambda self, idx: (kept.append(len(idx)), keep(self, idx)))
    for dec in decoders:
        got = G.generate(model, prompts, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=eos,
                         decoder=dec, **gen)
        for i, (r, g) in enumerate(zip(ref, got)):
            assert np.array_equal(r, g), f"{case} {dec} prompt {i}: {r.tolist()} != {g.tolist()}"
    if case in ("greedy_eos", "beam4_early", "beam4_heuristic"):  # answers that end before max_new_tokens
        assert min(map(len, ref)) < NEW and kept, "no prompt left the batch early"


def test_padded_tensor_input_and_budget_batches(tiny, common_token):
    """A left-padded tensor + mask is the same as the id lists; tiny budgets cut many batches."""
    _, tok, model, prompts = tiny
    eos = common_token
    gen = dict(num_beams=4, min_new_tokens=2, max_new_tokens=NEW, early_stopping=True, eos_token_id=eos)
    ref = G.generate(model, prompts, **gen)
    L = max(map(len, prompts))
    ids = torch.zeros((len(prompts), L), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, L - len(p):], mask[r, L - len(p):] = torch.tensor(p), 1
    got = G.generate(model, ids, mask, token_budget=1, **gen)  # one prompt per batch
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))


def test_run_batched_sorts_cuts_and_keeps_order():
    items = [[0] * n for n in (5, 30, 12, 30, 7, 1, 18)]
    seen = []

    def run(batch):
        seen.append([len(x) for x in batch])
        return [len(x) for x in batch]

    cost = lambda n, lmax: n * (lmax + 10)  # noqa: E731
    out = G.run_batched(items, run, cost, budget=90)
    assert out == [5, 30, 12, 30, 7, 1, 18]                      # caller's order
    flat = [n for b in seen for n in b]
    assert flat == sorted(flat, reverse=True)                    # longest first
    assert all(cost(len(b), b[0]) <= 90 or len(b) == 1 for b in seen)
    assert seen == [[30, 30], [18, 12, 7], [5, 1]]


def test_out_of_memory_splits_and_retries(tiny, common_token, monkeypatch):
    """An OOM in a batch of more than two prompts: split in halves, retried, one warning line
    each time, the same answers; one prompt that does not fit is a one-line KitError."""
    _, tok, model, prompts = tiny
    gen = dict(num_beams=4, min_new_tokens=2, max_new_tokens=NEW, early_stopping=True, eos_token_id=common_token)
    ref = G.generate(model, prompts, **gen)
    start = G.GPTJDecoder.start

    def small_device(self, ps, nb, T):
        if len(ps) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return start(self, ps, nb, T)

    monkeypatch.setattr(G.GPTJDecoder, "start", small_device)
    lines = []
    got = G.generate(model, prompts, token_budget=10**9, log=lines.append, **gen)
    assert all(np.array_equal(a, b) for a, b in zip(ref, got))
    assert lines and all(line.startswith("warning: out of memory with ") and "\n" not in line for line in lines)
    assert "split into 3 + 3" in lines[0]

    def no_device(self, ps, nb, T):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(G.GPTJDecoder, "start", no_device)
    with pytest.raises(KitError, match="out of memory generating for one prompt"):
        G.generate(model, prompts[:1], log=lines.append, **gen)


def test_bf16_rouge_within_target_of_hf(tiny):
    """bf16: the kit's ROUGE against the fp32 answers is >= 99.9 % of HF generate's in bf16."""
    from transformers import GPTJForCausalLM

    from language import rouge

    d, tok, model, prompts = tiny
    eos = tok.eos_token_id
    gen = dict(num_beams=4, min_new_tokens=10, max_new_tokens=NEW, early_stopping=True)
    truth = tok.batch_decode([t.tolist() for t in hf_reference(model, prompts, eos, **gen)], skip_special_tokens=True)
    m16 = GPTJForCausalLM.from_pretrained(str(d), dtype=torch.bfloat16).eval()
    hf = hf_reference(m16, prompts, eos, **gen)
    kit = G.generate(m16, prompts, eos_token_id=eos, pad_token_id=eos, **gen)
    scores = {}
    for name, ids in (("hf", hf), ("kit", kit)):
        preds = tok.batch_decode([t.tolist() for t in ids], skip_special_tokens=True)
        scores[name] = rouge.rouge(rouge.postprocess(preds), rouge.postprocess(truth))
    for k in ("rouge1", "rouge2", "rougeL"):
        assert scores["kit"][k] >= 0.999 * scores["hf"][k], (k, scores)


def test_gptj_forward_generators_and_options(tiny):
    """The benchmark's forward: generator=hf and generator=kit give the same payloads for prompts
    cut into several token-budget batches, in the given order; bad option values are KitErrors."""
    from language.gptj.benchmark import BENCHMARK as b

    d, tok, _, prompts = tiny
    texts = tok.batch_decode(prompts)
    opts = dict(num_beams=4, min_new_tokens=5, max_new_tokens=12)
    outs = {}
    for gen, budget in (("hf", 3000), ("kit", 700)):
        g = b.load_model(d, "cpu", "fp32", dict(opts, generator=gen, token_budget=budget))
        outs[gen] = b.postprocess(b.forward(g, texts), len(texts))
    assert all(np.array_equal(x, y) for x, y in zip(outs["hf"], outs["kit"]))
    assert b.options["generator"] == "kit" and b.options["token_budget"] == 0
    with pytest.raises(KitError, match="generator"):
        b.load_model(d, "cpu", "fp32", {"generator": "vllm"})
    with pytest.raises(KitError, match="token_budget"):
        b.load_model(d, "cpu", "fp32", {"token_budget": -1})


def _tiny_llama_family(kind: str):
    """A tiny random Llama (grouped kv heads) or Mixtral (sparse MoE), weights scaled up so that
    the top tokens are well separated."""
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    common = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(5)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = MixtralForCausalLM(MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 2.0 / p.shape[-1] ** 0.5)
    return model.eval()


@pytest.mark.parametrize("kind", ["llama", "mixtral"])
def test_llama_family_identical_to_hf_generate_fp32(kind):
    """Llama-2 and Mixtral run greedy (their reference settings); beams are checked too."""
    model = _tiny_llama_family(kind)
    assert isinstance(G.make_decoder(model), G.LlamaFamilyDecoder)
    rng = np.random.default_rng(4)
    prompts = [rng.integers(3, 256, n).tolist() for n in (9, 30, 17, 4, 25)]
    first = G.generate(model, prompts, max_new_tokens=NEW, eos_token_id=2)
    vals, counts = np.unique(np.concatenate(first), return_counts=True)
    eos = int(vals[np.argmax(counts)])  # a frequent token as eos: answers end at different steps
    lengths = []
    for gen in (dict(num_beams=1, min_new_tokens=2), dict(num_beams=4, min_new_tokens=2, early_stopping=True)):
        ref = hf_reference(model, prompts, eos, max_new_tokens=NEW, **gen)
        got = G.generate(model, prompts, max_new_tokens=NEW, eos_token_id=eos, pad_token_id=eos, **gen)
        for i, (r, g) in enumerate(zip(ref, got)):
            assert np.array_equal(r, g), f"{kind} {gen} prompt {i}: {r.tolist()} != {g.tolist()}"
        lengths += [len(r) for r in ref]
    assert min(lengths) < NEW


def test_stop_sequence_at_the_end_of_the_prompt_ends_nothing():
    """Issue 25 item 3: only generated tokens count for the stop sequence (the reference cuts the
    generated part). A prompt that ends with its stop sequence is answered as if it had none, on the
    HF path that stop-sequence rows take (min_new_tokens 2, as Mixtral's)."""
    from types import SimpleNamespace

    from language.llm import LLMRunner, Prompt

    model = _tiny_llama_family("llama")
    rng = np.random.default_rng(6)
    stop = (40, 41, 42)
    prompts = [np.concatenate([rng.integers(3, 256, n), stop]) for n in (7, 12)]
    tok = SimpleNamespace(eos_token_id=2, pad_token_id=2)
    runner = LLMRunner(tok, model, ["cpu"], dict(max_new_tokens=8, min_new_tokens=2, generator="hf"))
    plain = runner.generate([Prompt(p) for p in prompts])
    stopped = runner.generate([Prompt(p, stop) for p in prompts])
    for p, s in zip(plain, stopped):
        assert len(p) == 8 and 2 not in p.tolist() and not any(
            tuple(p[i:i + 3]) == stop for i in range(len(p) - 2)), p  # the stop sequence is never generated here
        assert s.tolist() == p.tolist(), (s.tolist(), p.tolist())
    # generated, it still stops the row: the stop sequence = the first generated tokens of prompt 0
    gen_stop = tuple(int(t) for t in plain[0][:2])
    out = runner.generate([Prompt(prompts[0], gen_stop), Prompt(prompts[1])])
    assert out[0].tolist()[:3] == [*gen_stop, 2] and out[1].tolist() == plain[1].tolist()
