"""The partition contract: a pure function of (n_count, n_partitions, p[, work])."""
from __future__ import annotations

from typing import Sequence

from .errors import KitError


def partition_range(n_count: int, n_partitions: int, p: int, work: Sequence[int] | None = None) -> tuple[int, int]:
    """Global [start, stop) of partition p: contiguous and in index order. By count, sizes differ
    by at most one; with `work` (the cost of each sample, e.g. 3D-UNet voxels) each cut is the
    sample boundary whose cumulative work is closest to k/P of the total, every partition keeping
    at least one sample: cases of very different sizes then take about the same time per partition."""
    if n_partitions < 1 or n_partitions > n_count:
        raise KitError(f"--n_partitions {n_partitions} must be between 1 and n_count ({n_count})")
    if not 0 <= p < n_partitions:
        raise KitError(f"partition {p} is outside 0..{n_partitions - 1}")
    if work is None:
        base, extra = divmod(n_count, n_partitions)
        start = p * base + min(p, extra)
        return start, start + base + (1 if p < extra else 0)
    bounds = work_bounds(n_count, n_partitions, work)
    return bounds[p], bounds[p + 1]


def work_bounds(n_count: int, n_partitions: int, work: Sequence[int]) -> list[int]:
    if len(work) < n_count or any(w < 0 for w in work[:n_count]):
        raise KitError(f"the work of {n_count} samples is needed, {len(work)} non-negative values were given")
    cum, total = [], 0
    for w in work[:n_count]:
        total += int(w)
        cum.append(total)
    bounds = [0]
    i = 0
    for k in range(1, n_partitions):
        goal = total * k / n_partitions
        while i < n_count and cum[i] < goal:
            i += 1
        # before or after sample i (the one that reaches the goal): whichever is closer to it
        before = cum[i - 1] if i > 0 else 0
        cut = i if i < n_count and goal - before <= cum[i] - goal else i + 1
        cut = min(max(cut, bounds[-1] + 1), n_count - (n_partitions - k))  # >= 1 sample each
        bounds.append(cut)
    bounds.append(n_count)
    return bounds
