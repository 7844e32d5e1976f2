"""ROUGE as the MLCommons LLM accuracy scripts compute it, offline and in parallel.

The reference scripts call `evaluate.load("rouge").compute(predictions, references,
use_stemmer=True, use_aggregator=False)` and report round(mean * 100, 4). That metric
is a thin layer over `rouge_score`: one RougeScorer(rouge_types, use_stemmer=True),
`scorer.score(reference, prediction)` per pair, the F-measure of each. `evaluate.load`
needs the HF hub, so the same computation is done here with rouge_score's own tokenizer,
n-gram counting and f-measure; only its pure-Python LCS tables are replaced (rapidfuzz's
bit-parallel LCS for rougeL, a bit-parallel walk with rouge_score's backtracking rule for
rougeLsum, see `lcs_indices`), which gives the same floats ~20x faster per pair.

Texts are first post-processed as the scripts do: strip, then one sentence per line
(nltk.sent_tokenize) -- this only matters for rougeLsum. nltk's punkt data cannot be
installed everywhere; without it a simple splitter is used (see `_fallback_split`) and
a warning says that rougeLsum is then not comparable with the reference.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from collections import Counter
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


def nltk_data_command() -> str:
    """The command that installs punkt, run by this env's Python (the one that lacks it; the system
    `python` may have no nltk at all), from any directory."""
    py = shlex.quote(sys.executable)
    return f"{py} -m nltk.downloader punkt punkt_tab"


def sentence_splitter():
    """nltk.sent_tokenize when its punkt data is installed, else the documented fallback (warns once)."""
    global _splitter, _warned
    if _splitter is None:
        _splitter = _nltk_split() or _fallback_split
    if _splitter is _fallback_split and not _warned:
        _warned = True
        print("warning: nltk punkt data not found; sentences are split with a simple regex, so rougeLsum "
              "is not comparable with the reference (rouge1/2/L are unaffected). Install it with "
              f"`{nltk_data_command()}` for comparable rougeLsum.", file=sys.stderr)
    return _splitter


def postprocess(texts: list[str]) -> list[str]:
    """As the reference scripts: strip, then one sentence per line."""
    split = sentence_splitter()
    return ["\n".join(split(t.strip())) for t in texts]


_scorer = None


def _memoize_stemmer(scorer) -> None:
    """Porter stemming is most of rouge_score's tokenising time and news text reuses its words,
    so a per-process cache of the (pure, deterministic) stem function changes no score. Left
    as is when rouge_score's internals differ from 0.1.2's."""
    from functools import lru_cache

    stemmer = getattr(getattr(scorer, "_tokenizer", None), "_stemmer", None)
    if stemmer is not None and callable(getattr(stemmer, "stem", None)):
        stemmer.stem = lru_cache(maxsize=1 << 17)(stemmer.stem)


def _get_scorer():
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
        _memoize_stemmer(_scorer)
    return _scorer


# --- longest common subsequences, bit-parallel -------------------------------------------------
# rouge_score fills an (n+1) x (m+1) table in Python for every rougeL pair and for every pair of
# sentences in rougeLsum: that is nearly all of its time on LLM-length texts. Here:
#  * rougeL needs only the LCS length: rapidfuzz's bit-parallel LCSseq on token ids (exact ints,
#    so no hashing of strings can collide);
#  * rougeLsum needs *which* reference tokens one LCS uses (their union over the candidate's
#    sentences is counted), and rouge_score picks one LCS by its own backtracking rule. The same
#    walk is done here on bit-parallel rows (Hyyro's LCS bit-vectors, Python ints as bit sets):
#    row i is one int whose bit j is 0 where the table steps up, so table[i][j] is j minus the
#    ones among its low j bits. The walk asks the table exactly what rouge_score's asks it, so
#    it returns the same indices (tests/test_scorers.py compares them on tie-heavy inputs).

def _match_masks(can: list) -> dict:
    """token -> int with bit j set where can[j] is that token."""
    masks: dict = {}
    for j, tok in enumerate(can):
        masks[tok] = masks.get(tok, 0) | (1 << j)
    return masks


def lcs_indices(ref: list, can: list, masks: dict | None = None) -> list[int]:
    """Indices into `ref` of the LCS that rouge_score's _backtrack_norec reads out."""
    n, m = len(ref), len(can)
    if not n or not m:
        return []
    if masks is None:
        masks = _match_masks(can)
    full = (1 << m) - 1
    rows = [full]  # row 0: the table is all zeros, every bit set
    v = full
    for tok in ref:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
        rows.append(v)
    out: list[int] = []
    i, j = n, m
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            out.append(i - 1)
            i -= 1
            j -= 1
        else:
            # table[i][j-1] > table[i-1][j] ?  table[r][c] = c - popcount(rows[r] & (2^c - 1))
            low = (1 << (j - 1)) - 1
            left = (j - 1) - (rows[i] & low).bit_count()
            up = j - (rows[i - 1] & (low | (1 << (j - 1)))).bit_count()
            if left > up:
                j -= 1
            else:
                i -= 1
    out.reverse()
    return out


def _summary_lcs_hits(ref_sents: list[list], can_sents: list[list]) -> int:
    """rouge_score's _summary_level_lcs hit count: per reference sentence the union of its LCS
    indices with every candidate sentence, each token counted while both sides have it left."""
    tok_r = Counter()
    tok_c = Counter()
    for s in ref_sents:
        tok_r.update(s)
    for s in can_sents:
        tok_c.update(s)
    cands = [(c, _match_masks(c), set(c)) for c in can_sents]
    hits = 0
    for r in ref_sents:
        rset = set(r)
        union: set[int] = set()
        for c, masks, cset in cands:
            if not rset.isdisjoint(cset):  # no common token: the LCS is empty
                union.update(lcs_indices(r, c, masks))
        for k in sorted(union):
            t = r[k]
            if tok_c[t] > 0 and tok_r[t] > 0:
                hits += 1
                tok_c[t] -= 1
                tok_r[t] -= 1
    return hits


def _lines(text: str) -> list[str]:
    return [x for x in text.split("\n") if len(x)]  # rouge_score's get_sents for rougeLsum


def score_pair(target: str, prediction: str) -> tuple[float, float, float, float]:
    """The four F-measures of rouge_score's RougeScorer(ROUGE_TYPES, use_stemmer=True).score(
    target, prediction), computed with the same tokenizer, n-gram counting and f-measure."""
    from rapidfuzz.distance import LCSseq
    from rouge_score import rouge_scorer
    from rouge_score.scoring import fmeasure

    tok = _get_scorer()._tokenizer
    # rougeLsum tokenises each line; the whole text's tokens are those lines' tokens in turn
    # ('\n' is a non-alphanumeric separator to the tokenizer), so it is tokenised once
    t_sents = [tok.tokenize(s) for s in _lines(target)]
    p_sents = [tok.tokenize(s) for s in _lines(prediction)]
    t_all = [x for s in t_sents for x in s]
    p_all = [x for s in p_sents for x in s]
    out = []
    for n in (1, 2):
        out.append(rouge_scorer._score_ngrams(rouge_scorer._create_ngrams(t_all, n),
                                              rouge_scorer._create_ngrams(p_all, n)).fmeasure)
    if t_all and p_all:
        ids: dict = {}
        lcs = LCSseq.similarity([ids.setdefault(x, len(ids)) for x in t_all],
                                [ids.setdefault(x, len(ids)) for x in p_all])
        out.append(fmeasure(lcs / len(p_all), lcs / len(t_all)))
    else:
        out.append(0.0)
    t_sents = [s for s in t_sents if s] if t_all else []
    p_sents = [s for s in p_sents if s] if p_all else []
    if t_sents and p_sents:
        hits = _summary_lcs_hits(t_sents, p_sents)
        out.append(fmeasure(hits / len(p_all), hits / len(t_all)))
    else:
        out.append(0.0)
    return tuple(out)


def _score_chunk(pairs: list[tuple[str, str]]) -> np.ndarray:
    out = np.empty((len(pairs), len(ROUGE_TYPES)), dtype=np.float64)
    for i, (ref, pred) in enumerate(pairs):
        out[i] = score_pair(ref, pred)  # rouge_score's order: target first, prediction second
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
