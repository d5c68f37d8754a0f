"""alloc_at_arrived: 131 buckets, mean per bucket, the last value carried forward."""

from __future__ import annotations

from hami.sim.metrics import alloc_at_arrived


def test_buckets_average_and_carry_forward():
    values = alloc_at_arrived([0.2, 0.6, 1.4, 5.0, 5.2, 150.0], [0.1, 0.5, 1.0, 4.0, 5.0, 99.0])
    assert len(values) == 131
    assert values[0] == 0.1  # 0.2 rounds to 0
    assert values[1] == 0.75  # 0.6 and 1.4 round to 1: their mean
    assert values[2:5] == [0.75, 0.75, 0.75]  # no arrival there: carried forward
    assert values[5] == 4.5
    assert values[130] == 4.5  # beyond 130 % arrived is not reported
    assert alloc_at_arrived([], []) == [0.0] * 131
