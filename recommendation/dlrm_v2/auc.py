"""Exact ROC AUC by ranks, equal to sklearn.metrics.roc_auc_score on binary labels.

sklearn integrates the ROC curve with the trapezoid rule over distinct thresholds; that area
is the Mann-Whitney statistic with a tie between a positive and a negative counted as one
half. Here it is computed in integers (twice the rank sum, so tie groups' average ranks stay
whole), so the only rounding is the final division: one sort, no curve, no Python loop.
"""
from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """AUC of `scores` for binary `labels` (0/1); ValueError when only one class is present,
    as sklearn raises."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    order = np.argsort(s)  # any order inside a tie group: groups are counted whole
    s = s[order]
    pos = (y[order] != 0).astype(np.int64)
    n = s.size
    n_pos = int(pos.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC is undefined when only one class is present")
    # tie groups [start, end) of equal scores; 1-based ranks start+1..end, average (start+1+end)/2
    cut = np.flatnonzero(s[1:] != s[:-1]) + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [n]))
    cum = np.concatenate(([0], np.cumsum(pos)))
    pos_in_group = cum[ends] - cum[starts]
    twice_rank_sum = int(np.dot(pos_in_group, starts + ends + 1))  # < 2^63 for ~3e9 pairs
    twice_u = twice_rank_sum - n_pos * (n_pos + 1)
    return twice_u / (2 * n_pos * n_neg)  # Python ints: one correctly rounded division
