"""Many (policy, seed) runs, optionally in worker processes, and their summary.

Shared by ``hami simulate`` and ``bench/packing.py``. Each worker process builds its own
simulator once (loading backends and the trace), then takes runs one at a time.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import attrs

from hami.sim.engine import Progress, RunResult, Simulator
from hami.sim.trace import TraceError, read_nodes, read_pods_csv


def parse_seeds(text: str) -> list[int]:
    """``42``, ``42-51`` or ``42,45,50-52`` → the seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            values = range(int(low), int(high) + 1) if sep else [int(low)]
        except ValueError:
            raise TraceError(f"seeds {text!r}: {part!r} is not a number or a range like 42-51") from None
        if sep and not values:
            raise TraceError(f"seeds {text!r}: the range {part!r} is empty")
        seeds.extend(s for s in values if s not in seeds)
    if not seeds:
        raise TraceError(f"seeds {text!r}: no seed given")
    return seeds


@attrs.frozen
class Job:
    nodes: str
    pods: str
    split_count: int = 100
    backends: tuple[str, ...] = ()
    """Entry points to load beside the backend that owns the trace's devices (policy plugins)."""
    narrow: bool = True
    vendor: str | None = None
    """The trace's device kind; None: decided from the installed backends (:func:`hami.sim.cluster.trace_kind`)."""
    live: bool = False
    """Replay through the live path (in-memory API server, informers, extender verbs: :mod:`hami.sim.live`)."""

    def simulator(self) -> Simulator:
        return Simulator(
            read_nodes(self.nodes),
            read_pods_csv(self.pods),
            split_count=self.split_count,
            backends=self.backends,
            narrow=self.narrow,
            vendor=self.vendor,
        )

    def run(self, simulator: Simulator, policy: str, seed: int, tune: float, progress: Progress | None = None) -> RunResult:
        """One run, simulated or (``live``) through the live scheduler path."""
        if self.live:
            from hami.sim.live import LiveReplay

            return LiveReplay(simulator).run(policy, seed, tune, progress)
        return simulator.run(policy, seed, tune, progress)


_WORKER: dict[str, Simulator] = {}


def _worker_run(job: Job, policy: str, seed: int, tune: float) -> RunResult:
    simulator = _WORKER.get("sim")
    if simulator is None:
        simulator = _WORKER["sim"] = job.simulator()
    return job.run(simulator, policy, seed, tune)


def run_grid(
    job: Job,
    policies: Sequence[str],
    seeds: Sequence[int],
    tune: float = 1.3,
    jobs: int = 1,
    progress: Callable[[str, int, int, int], None] | None = None,
    done: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Every (policy, seed) run; ``progress(policy, seed, tasks done, tasks)`` in-process only,
    ``done(result)`` as each run finishes. Results come back in (policy, seed) order."""
    order = [(p, s) for p in policies for s in seeds]
    results: dict[tuple[str, int], RunResult] = {}
    if jobs <= 1 or len(order) == 1:
        simulator = job.simulator()
        for policy, seed in order:
            callback = (lambda d, t, p=policy, s=seed: progress(p, s, d, t)) if progress else None
            result = results[(policy, seed)] = job.run(simulator, policy, seed, tune, callback)
            if done:
                done(result)
    else:
        with ProcessPoolExecutor(max_workers=min(jobs, len(order), os.cpu_count() or 1)) as pool:
            futures = {pool.submit(_worker_run, job, p, s, tune): (p, s) for p, s in order}
            for future in as_completed(futures):
                result = results[futures[future]] = future.result()
                if done:
                    done(result)
    return [results[key] for key in order]


@attrs.frozen
class PolicySummary:
    policy: str
    runs: int
    alloc100_mean: float
    alloc100_min: float
    alloc100_max: float
    seconds_mean: float
    seconds_max: float
    cpu_seconds_max: float
    placed_mean: float
    failed_mean: float
    curve: tuple[float, ...]
    """Mean allocated % at each arrived % (0…130)."""


def summarise(results: Sequence[RunResult]) -> list[PolicySummary]:
    by_policy: dict[str, list[RunResult]] = {}
    for r in results:
        by_policy.setdefault(r.policy, []).append(r)
    out = []
    for policy, runs in by_policy.items():
        alloc = [r.alloc100 for r in runs]
        curve = tuple(round(statistics.fmean(values), 4) for values in zip(*(r.alloc_at_arrived for r in runs), strict=True))
        out.append(
            PolicySummary(
                policy,
                len(runs),
                statistics.fmean(alloc),
                min(alloc),
                max(alloc),
                statistics.fmean(r.seconds for r in runs),
                max(r.seconds for r in runs),
                max(r.cpu_seconds for r in runs),
                statistics.fmean(r.placed for r in runs),
                statistics.fmean(r.failed for r in runs),
                curve,
            )
        )
    return out


def iter_json(results: Sequence[RunResult]) -> Iterator[dict[str, Any]]:
    for r in results:
        yield r.as_json()
