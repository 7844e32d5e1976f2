"""Exact ROC AUC by ranks, equal to sklearn.metrics.roc_auc_score on binary labels.

sklearn integrates the ROC curve with the trapezoid rule over distinct thresholds; that area
is the Mann-Whitney statistic with a tie between a positive and a negative counted as one
half: AUC = (#{neg < pos} + #{neg == pos} / 2) / (n_pos * n_neg). Here the negatives' and the
positives' scores are sorted apart (a plain value sort, far faster than the argsort of all
pairs together), and for each positive two binary searches into the sorted negatives count
those below it (left) and those not above it (right): left + right is twice its share, in
integers, so the only rounding is the final division. The searches run over blocks of
positives, so memory is the two sorted copies (the input's size) plus one block.
"""
from __future__ import annotations

import numpy as np

_BLOCK = 1 << 22  # positives per searchsorted block (2 x 32 MiB of int64 counts)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC of `scores` for binary `labels` (0/1); ValueError when only one class is present or a
    score is NaN, as sklearn raises."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if s.dtype.kind == "f" and np.isnan(s).any():
        raise ValueError("a score is NaN")
    is_pos = y != 0
    pos = s[is_pos]
    neg = s[~is_pos]
    del is_pos
    n_pos, n_neg = pos.size, neg.size
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC is undefined when only one class is present")
    pos.sort()  # sorted needles keep the searches in cache; in place: no third copy
    neg.sort()
    twice_u = 0
    for i in range(0, n_pos, _BLOCK):
        p = pos[i:i + _BLOCK]
        twice_u += int(np.searchsorted(neg, p, "left").sum(dtype=np.int64))
        twice_u += int(np.searchsorted(neg, p, "right").sum(dtype=np.int64))
    return twice_u / (2 * n_pos * n_neg)  # Python ints: one correctly rounded division
