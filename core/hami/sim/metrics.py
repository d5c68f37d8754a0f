"""Allocation at each whole percent of arrived workload, as the openb experiments report it.

Bucket ``a`` (0…130) holds the mean allocated % over the arrivals whose arrived % rounds to ``a``
(the reference analysis' bucketing); a bucket no arrival rounds to carries the previous bucket's
value forward (0 before the first arrival).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BUCKETS = 131


def alloc_at_arrived(
    arrived_pct: Sequence[float] | np.ndarray, allocated_pct: Sequence[float] | np.ndarray, buckets: int = BUCKETS
) -> list[float]:
    arrived = np.asarray(arrived_pct, dtype=float)
    allocated = np.asarray(allocated_pct, dtype=float)
    if arrived.shape != allocated.shape:
        raise ValueError(f"{arrived.size} arrived samples but {allocated.size} allocated samples")
    index = np.floor(arrived + 0.5).astype(np.int64)
    keep = (index >= 0) & (index < buckets)
    sums = np.bincount(index[keep], weights=allocated[keep], minlength=buckets)
    counts = np.bincount(index[keep], minlength=buckets)
    values = []
    last = 0.0
    for total, n in zip(sums.tolist(), counts.tolist(), strict=True):
        if n:
            last = total / n
        values.append(round(last, 4))
    return values
