"""The openb experiment protocol's workload: inflate (or trim) to ``tune`` × cluster GPU capacity,
then shuffle, both seeded, so every policy sees exactly the same task sequence for a seed.

Inflation draws tasks uniformly (with replacement) from the pod file and appends copies until the
total GPU request first exceeds ``tune`` × capacity (the last copy crosses the line); when the file
is already above, tasks drawn at random are dropped until the total is at or below it. The order is
then shuffled with a fresh generator of the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs

from hami.sim.trace import TraceError, TraceTask


def inflate(tasks: Sequence[TraceTask], capacity_milli: int, tune: float, seed: int) -> list[TraceTask]:
    """The workload before shuffling; ``tune <= 0`` keeps the file as it is."""
    workload = list(tasks)
    if tune <= 0:
        return workload
    if not workload:
        raise TraceError("the pod list is empty")
    target = tune * capacity_milli
    total = sum(t.total_gpu_milli for t in workload)
    rng = random.Random(seed)
    if total <= target:
        if not any(t.total_gpu_milli for t in tasks):
            raise TraceError("no task asks for a GPU: the workload cannot be inflated")
        copies = 0
        while total <= target:
            task = tasks[rng.randrange(len(tasks))]
            copies += 1
            workload.append(attrs.evolve(task, name=f"{task.name}-tune-{copies}"))
            total += task.total_gpu_milli
    else:
        while total > target:
            task = workload.pop(rng.randrange(len(workload)))
            total -= task.total_gpu_milli
    return workload


def prepare_workload(tasks: Sequence[TraceTask], capacity_milli: int, tune: float, seed: int, *, shuffle: bool = True) -> list[TraceTask]:
    """Inflate, then shuffle with the same seed: the task sequence of one (policy, seed) run."""
    workload = inflate(tasks, capacity_milli, tune, seed)
    if shuffle:
        random.Random(seed).shuffle(workload)
    return workload
