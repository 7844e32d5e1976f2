"""language/rouge.py: the same numbers as a plain rouge_score loop, in parallel too; fallback splitter."""
from __future__ import annotations

import numpy as np
from rouge_score import rouge_scorer

from language import rouge


def test_matches_single_process_rouge_score_loop():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(50)] + ["running", "runs", "ran"]
    preds = [" ".join(rng.choice(words, 20)) for _ in range(700)]
    refs = [" ".join(rng.choice(words, 25)) for _ in range(700)]
    sc = rouge_scorer.RougeScorer(list(rouge.ROUGE_TYPES), use_stemmer=True)
    loop = np.array([[sc.score(r, p)[t].fmeasure for t in rouge.ROUGE_TYPES] for p, r in zip(preds, refs)])
    par = rouge.per_sample(preds, refs, workers=2)  # 700 pairs: the pool path
    assert np.array_equal(par, loop)
    got = rouge.rouge(preds, refs, workers=2)
    assert got["rouge1"] == round(float(loop[:, 0].mean()) * 100, 4)


def test_fallback_splitter():
    assert rouge._fallback_split('He left. "Then?" She ran! 3 dogs. e.g. small') == \
        ["He left.", '"Then?"', "She ran!", "3 dogs. e.g. small"]


def test_identical_texts_score_100_and_shift_drops():
    a = rouge.postprocess(["Alpha beta gamma. Delta epsilon.", "Zeta eta theta."])
    assert rouge.rouge(a, a) == {t: 100.0 for t in rouge.ROUGE_TYPES}
    assert rouge.rouge(a, a[::-1])["rouge1"] == 0.0
