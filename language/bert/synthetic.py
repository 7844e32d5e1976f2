"""Synthetic SQuAD v1.1 set: a WordPiece vocab.txt built here (the same bytes in every process), a tiny random BertForQuestionAnswering,
dev-v1.1.json in the real format whose answers are the spans the model itself predicts (fp32, batch 1)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from evalkit.errors import KitError
from language.synthtext import lexicon, paragraph, sentence

from . import squad

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_MIN_MARGIN = 0.05   # best answer's score over the runner-up: batch size / kernels cannot flip it
_MAX_TRIES = 5      # questions per context, then a new context
_LONG_TOKENS = 660  # spans start every 128 tokens and hold 384 - question - 3: (632, 749] tokens make 4
_MAX_CONTEXTS = 40   # contexts in a row without one clear answer: then the seed is hopeless


def _write_vocab(rng, words, model_dir: Path) -> None:
    """vocab.txt as in the published checkpoint: the specials, every character bare and as a
    `##` continuation (so any word tokenizes), then the words of a 300-paragraph corpus by count.
    Built here rather than by tokenizers' WordPieceTrainer, whose vocab differs from process to
    process (it breaks ties in hash-map order): the same seed must give the same set everywhere."""
    import collections

    counts = collections.Counter()
    for _ in range(300):
        text = (paragraph(rng, words, 5) + " What who when where why how?").lower()
        counts.update(re.findall(r"\w+|[^\w\s]", text))
    chars = sorted({c for tok in counts for c in tok})
    whole = sorted((w for w in counts if len(w) > 1), key=lambda w: (-counts[w], w))
    vocab = _SPECIAL + chars + [f"##{c}" for c in chars if c.isalnum()] + whole
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")


def _build_model(seed: int, vocab_size: int, model_dir: Path):
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    cfg = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=512)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForQuestionAnswering(cfg)
        with torch.no_grad():
            # Content over position: with HF's init, position embeddings dominate and every feature
            # predicts the same positions, so an index shift would go unnoticed.
            model.bert.embeddings.word_embeddings.weight.normal_(0.0, 1.0)
            model.bert.embeddings.position_embeddings.weight.mul_(0.3)
            # Hidden states of a random BERT share one big common direction; span logits along it
            # would be flat (ties everywhere, padding winning). Remove it from the QA head and scale
            # the rest up: logits then vary clearly from token to token.
            ids = torch.randint(5, vocab_size, (4, 384))
            h = model.bert(input_ids=ids).last_hidden_state.reshape(-1, cfg.hidden_size)
            m = h.mean(0)
            w = torch.randn(2, cfg.hidden_size)
            w -= (w @ m)[:, None] * m[None, :] / (m @ m)
            w *= 8.0 / (h - m).matmul(w.T).std(0)[:, None]
            model.qa_outputs.weight.copy_(w)
            model.qa_outputs.bias.copy_(-(w @ m))
    model.save_pretrained(str(model_dir))


def write_synthetic(bench, out: Path, n: int, seed: int) -> list[np.ndarray]:
    import torch

    ds_dir, model_dir = out / "dataset", out / "model"
    ds_dir.mkdir(parents=True, exist_ok=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 11])
    words = lexicon(rng, 1000)  # few repeated words: fewer tied spans
    _write_vocab(rng, words, model_dir)
    tok = bench_tokenizer(model_dir)
    _build_model(seed, len(tok), model_dir)
    model = bench.load_model(model_dir, "cpu", "fp32", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread beats contended cores
    try:
        paragraphs, payloads = [], []
        long_done, misses = n < 6, 0
        while len(payloads) < n:
            if misses >= _MAX_CONTEXTS:
                raise KitError(f"no synthetic SQuAD context with clear answers in {_MAX_CONTEXTS} tries in a row "
                               f"(seed {seed}); try another --seed.")
            # one long context (2 features per question, doc_stride exercised) then short ones
            long_ctx = not long_done
            context = _long_context(rng, words, tok) if long_ctx else paragraph(rng, words, int(rng.integers(3, 8)))
            qas = []
            for _ in range(2 if long_ctx else int(rng.integers(1, 3))):
                got = _answer(bench, model, tok, rng, words, context, len(paragraphs), len(qas), n - len(payloads))
                if got is None:  # too many features for the room left, or no clear answer
                    break
                qa, pls = got
                qas.append(qa)
                payloads += pls
            long_done = long_done or bool(qas)
            misses = 0 if qas else misses + 1
            if qas:
                paragraphs.append({"context": context, "qas": qas})
    finally:
        torch.set_num_threads(threads)
    data = {"version": "1.1", "data": [{"title": "Synthetic", "paragraphs": paragraphs}]}
    (ds_dir / "dev-v1.1.json").write_text(json.dumps(data, indent=1))
    return payloads


def _long_context(rng, words, tok) -> str:
    """Sentences until the context is _LONG_TOKENS wordpieces: 4 overlapping features (doc_stride
    128) for any question of the synthetic length, whatever the vocabulary."""
    sents: list[str] = []
    while len(tok.tokenize(" ".join(sents))) < _LONG_TOKENS:
        sents.append(sentence(rng, words))
    return " ".join(sents)


def bench_tokenizer(model_dir: Path):
    from .benchmark import load_tokenizer

    return load_tokenizer(model_dir)


def _answer(bench, model, tok, rng, words, context, pi, qi, room):
    """A question on `context` whose predicted answer clearly wins; (qa, payloads) or None if it
    would need more features than `room`."""
    for _ in range(_MAX_TRIES):
        question = sentence(rng, words, 4, 9)[:-1] + "?"
        ex = squad.read_examples_from({"context": context, "question": question})
        feats = squad.build_features([ex], tok)
        if len(feats) > room:
            return None
        pls = []
        for f in feats:
            x = bench.make_batch([(f.input_ids, f.input_mask, f.segment_ids)], "cpu", "fp32", {})
            pls.append(bench.postprocess(bench.forward(model, x), 1)[0])
        nb = squad.nbest(ex, list(zip(feats, pls)))
        text = nb[0][0]
        margin = nb[0][1] - nb[1][1] if len(nb) > 1 else float("inf")
        if text != "empty" and squad.normalize_answer(text) and margin >= _MIN_MARGIN:
            start = context.find(text)
            return {"id": f"synth-{pi}-{qi}", "question": question,
                    "answers": [{"text": text, "answer_start": start}]}, pls
    return None
