"""The partition contract: a pure function of (n_count, n_partitions, p)."""
from __future__ import annotations

from .errors import KitError


def partition_range(n_count: int, n_partitions: int, p: int) -> tuple[int, int]:
    """Global [start, stop) of partition p: contiguous, sizes differ by at most one."""
    if n_partitions < 1 or n_partitions > n_count:
        raise KitError(f"--n_partitions {n_partitions} must be between 1 and n_count ({n_count})")
    if not 0 <= p < n_partitions:
        raise KitError(f"partition {p} is outside 0..{n_partitions - 1}")
    base, extra = divmod(n_count, n_partitions)
    start = p * base + min(p, extra)
    return start, start + base + (1 if p < extra else 0)
