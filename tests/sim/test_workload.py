"""The experiment protocol: inflation crosses tune × capacity exactly once; everything is per seed."""

from __future__ import annotations

from hami.sim.trace import TraceTask
from hami.sim.workload import inflate, prepare_workload

TASKS = [TraceTask(f"t{i}", 100, 100, 1, milli) for i, milli in enumerate((1000, 500, 250, 810))] + [TraceTask("cpu", 100, 100)]
TOTAL = sum(t.total_gpu_milli for t in TASKS)  # 2560


def test_inflation_appends_until_the_total_crosses_the_target():
    capacity = 4000
    for seed in range(20):
        workload = inflate(TASKS, capacity, 1.3, seed)
        total = sum(t.total_gpu_milli for t in workload)
        assert workload[: len(TASKS)] == TASKS  # the file first, copies appended
        assert total > 1.3 * capacity >= total - workload[-1].total_gpu_milli
        assert all(t.name.rsplit("-tune-", 1)[0] in {x.name for x in TASKS} for t in workload[len(TASKS) :])


def test_trimming_drops_tasks_until_the_total_is_within_the_target():
    equal = [TraceTask(f"q{i}", 1, 1, 1, 250) for i in range(10)]  # 2500 milli
    for seed in range(5):
        kept = inflate(equal, 1000, 1.3, seed)
        assert sum(t.total_gpu_milli for t in kept) == 1250  # 1500 > 1300 ≥ 1250: the drop that crosses stops it
        assert len({t.name for t in kept}) == 5
    assert {t.name for t in inflate(equal, 1000, 1.3, 1)} != {t.name for t in inflate(equal, 1000, 1.3, 2)}


def test_same_seed_same_sequence_and_seeds_differ():
    one = prepare_workload(TASKS, 4000, 1.3, 42)
    assert one == prepare_workload(TASKS, 4000, 1.3, 42)
    assert any(prepare_workload(TASKS, 4000, 1.3, s) != one for s in (43, 44, 45))
    assert sorted(t.name for t in one) == sorted(t.name for t in inflate(TASKS, 4000, 1.3, 42))  # a shuffle, nothing more
    assert prepare_workload(TASKS, 4000, 0, 42, shuffle=False) == TASKS  # tune 0 keeps the file
