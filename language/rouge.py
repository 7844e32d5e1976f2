"""ROUGE as the MLCommons LLM accuracy scripts compute it, offline and in parallel.

The reference scripts call `evaluate.load("rouge").compute(predictions, references,
use_stemmer=True, use_aggregator=False)` and report round(mean * 100, 4). That metric
is a thin layer over `rouge_score`: one RougeScorer(rouge_types, use_stemmer=True),
`scorer.score(reference, prediction)` per pair, the F-measure of each. `evaluate.load`
needs the HF hub, so the same computation is done here with rouge_score directly.

Texts are first post-processed as the scripts do: strip, then one sentence per line
(nltk.sent_tokenize) -- this only matters for rougeLsum. nltk's punkt data cannot be
installed everywhere; without it a simple splitter is used (see `_fallback_split`) and
a warning says that rougeLsum is then not comparable with the reference.
"""
from __future__ import annotations

import os
import re
import sys
from multiprocessing import get_context

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_CHUNK = 256          # pairs per task: big enough to amortise pickling, small enough to balance
_MIN_PARALLEL = 512   # below this a pool costs more than it saves

_splitter = None
_warned = False


_SENT_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[A-Z0-9])")


def _fallback_split(text: str) -> list[str]:
    """Sentence end = '.', '!' or '?' (optionally followed by closing quotes/brackets), then
    whitespace, then an upper-case letter, digit or opening quote. Misses what punkt knows
    (abbreviations like "Mr. Smith" are split here), so rougeLsum can differ slightly."""
    parts = _SENT_END.split(text)
    return [p for p in (x.strip() for x in parts) if p]


def _nltk_split():
    try:
        import nltk

        nltk.sent_tokenize("A test. Another one.")  # raises LookupError when punkt data is absent
        return nltk.sent_tokenize
    except (ImportError, LookupError):
        return None


def sentence_splitter():
    """nltk.sent_tokenize when its punkt data is installed, else the documented fallback (warns once)."""
    global _splitter, _warned
    if _splitter is None:
        _splitter = _nltk_split() or _fallback_split
    if _splitter is _fallback_split and not _warned:
        _warned = True
        print("warning: nltk punkt data not found; sentences are split with a simple regex, so rougeLsum "
              "is not comparable with the reference (rouge1/2/L are unaffected). Install it with "
              "`python -m nltk.downloader punkt punkt_tab` for comparable rougeLsum.", file=sys.stderr)
    return _splitter


def postprocess(texts: list[str]) -> list[str]:
    """As the reference scripts: strip, then one sentence per line."""
    split = sentence_splitter()
    return ["\n".join(split(t.strip())) for t in texts]


_scorer = None


def _memoize_stemmer(scorer) -> None:
    """Porter stemming is most of rouge_score's time and it stems every word of every text
    twice (rougeL and again per sentence for rougeLsum); news text reuses its words, so a
    per-process cache of the (pure, deterministic) stem function changes no score. Left
    as is when rouge_score's internals differ from 0.1.2's."""
    from functools import lru_cache

    stemmer = getattr(getattr(scorer, "_tokenizer", None), "_stemmer", None)
    if stemmer is not None and callable(getattr(stemmer, "stem", None)):
        stemmer.stem = lru_cache(maxsize=1 << 17)(stemmer.stem)


def _score_chunk(pairs: list[tuple[str, str]]) -> np.ndarray:
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
        _memoize_stemmer(_scorer)
    out = np.empty((len(pairs), len(ROUGE_TYPES)), dtype=np.float64)
    for i, (ref, pred) in enumerate(pairs):
        s = _scorer.score(ref, pred)  # rouge_score's order: target first, prediction second
        out[i] = [s[t].fmeasure for t in ROUGE_TYPES]
    return out


def per_sample(predictions: list[str], references: list[str], workers: int = 0) -> np.ndarray:
    """(n, 4) F-measures in ROUGE_TYPES order, sample order kept. workers=0: one per core."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions vs {len(references)} references")
    pairs = list(zip(references, predictions))
    if not pairs:
        return np.zeros((0, len(ROUGE_TYPES)))
    if not workers:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers <= 1 or len(pairs) < _MIN_PARALLEL:
        return _score_chunk(pairs)
    chunks = [pairs[i:i + _CHUNK] for i in range(0, len(pairs), _CHUNK)]
    # fork: workers inherit the imported rouge_score/nltk stemmer, no re-import per process
    with get_context("fork").Pool(workers) as pool:
        return np.concatenate(pool.map(_score_chunk, chunks))


def rouge(predictions: list[str], references: list[str], workers: int = 0) -> dict[str, float]:
    """{'rouge1': .., 'rouge2': .., 'rougeL': .., 'rougeLsum': ..}: mean F-measure * 100, rounded to 4
    (the GPT-J/Llama scripts' reduction of use_aggregator=False). Inputs already post-processed."""
    scores = per_sample(predictions, references, workers)
    return {t: round(float(np.mean(scores[:, k])) * 100, 4) for k, t in enumerate(ROUGE_TYPES)}
