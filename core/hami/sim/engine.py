"""Replaying a workload through the real scheduler: one (policy, seed) run at a time.

Every GPU task goes through :meth:`hami.scheduler.core.Scheduler.filter` on a
:class:`ClusterState` built from node annotations, with the installed backend that owns the
trace's device kind (:func:`hami.sim.cluster.trace_kind`) and the policy plugins: the same
requests, predicates, fitting, scores and assumptions as the extender. The simulator only does
what kube-scheduler does around the extender: it keeps CPU and memory and passes the nodes with
room as candidates (vectorised), and it places CPU-only tasks — which the extender never sees — by
the same node policy's score (``BackendManager.score_nodes``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

import attrs
import numpy as np

from hami.plugin.manager import BackendManager, load_backends
from hami.plugin.model import NodeUsage, frozen_tuple
from hami.plugin.policy import ClusterView
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.core import Scheduler
from hami.sim.cluster import GpuMirror, SimHost, cluster_state, node_objects, only_kind, trace_kind
from hami.sim.metrics import alloc_at_arrived
from hami.sim.pods import ShareResources, pod_for, share_percent
from hami.sim.trace import MILLI, TraceNode, TraceTask
from hami.sim.workload import prepare_workload

log = logging.getLogger(__name__)

POLICIES = ("random", "binpack", "spread", "bestfit", "fgd")
"""The built-in policies a simulation compares by default."""

Progress = Callable[[int, int], None]


def policy_pair(name: str) -> tuple[str, str]:
    """``fgd`` → node and device policy ``fgd``; ``binpack/spread`` names both levels."""
    node, _, device = name.partition("/")
    return node, device or node


def task_shape(task: TraceTask) -> str:
    if not task.num_gpu:
        return "cpu"
    if task.gpu_milli < MILLI:
        return "share"
    return "whole" if task.num_gpu == 1 else "multi"


@attrs.frozen
class RunResult:
    policy: str
    seed: int
    tune: float
    tasks: int
    placed: int
    failed: int
    seconds: float
    capacity_milli: int
    arrived_milli: int
    allocated_milli: int
    alloc_at_arrived: tuple[float, ...] = attrs.field(converter=frozen_tuple)
    failed_by_shape: dict[str, int] = attrs.field(factory=dict, hash=False)
    placements: tuple[str | None, ...] = attrs.field(default=(), converter=frozen_tuple, repr=False)
    """The node of each task in replay order (None: failed); not part of the JSON."""
    cpu_seconds: float = 0.0
    """CPU time of the run (all threads): steadier than ``seconds`` on a shared machine."""

    @property
    def alloc100(self) -> float:
        return self.alloc_at_arrived[100]

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "tune": self.tune,
            "tasks": self.tasks,
            "placed": self.placed,
            "failed": self.failed,
            "failed_by_shape": dict(self.failed_by_shape),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "capacity_gpu_milli": self.capacity_milli,
            "arrived_gpu_milli": self.arrived_milli,
            "allocated_gpu_milli": self.allocated_milli,
            "alloc_at_100": self.alloc100,
            "alloc_at_arrived": list(self.alloc_at_arrived),
        }


class Simulator:
    """A cluster and a pod list; :meth:`run` replays them under one policy and seed.

    Without a ``manager``, the backend that owns the trace's device kind is loaded (``vendor``, or
    the kind the installed backends recognise in the trace), plus the entry points named in
    ``backends`` (plugin distributions whose policies should be compared).
    """

    def __init__(
        self,
        nodes: Sequence[TraceNode],
        tasks: Sequence[TraceTask],
        *,
        manager: BackendManager | None = None,
        split_count: int = 100,
        narrow: bool = True,
        backends: Sequence[str] = (),
        vendor: str | None = None,
    ) -> None:
        self.tasks = list(tasks)
        installed = manager if manager is not None else load_backends()
        self.kind = trace_kind(installed.kinds, nodes, vendor)
        self.nodes = only_kind(nodes, self.kind)
        self.resources = ShareResources.of(self.kind)
        if manager is None:  # only the kind's backend (and the named ones) take part: their hooks run per pod
            entry = next(r.name for r in installed.records if self.kind.vendor in r.vendors)
            manager = load_backends(allow=[entry, *backends])
        self.manager = manager
        owner = self.manager.owner(self.kind.vendor).name
        self.manager.configure(owner, {**self.manager.config(owner), "split_count": split_count})
        self.narrow = narrow
        self.objects = node_objects(self.manager, self.nodes, self.kind)
        self.capacity_milli = MILLI * sum(len(n.gpus) for n in self.nodes)
        self._cluster = ClusterView()

    def run(self, policy: str, seed: int, tune: float = 1.3, progress: Progress | None = None, shuffle: bool = True) -> RunResult:
        """One replay; ``shuffle=False`` keeps the file's order (after inflation), for known answers."""
        node_policy, device_policy = policy_pair(policy)
        workload = prepare_workload(self.tasks, self.capacity_milli, tune, seed, shuffle=shuffle)
        started, started_cpu = time.perf_counter(), time.process_time()
        manager = self.manager
        self._node_scores: dict[str, dict[str, tuple[NodeUsage, float]]] = {}
        state = cluster_state(manager, self.objects)
        host = SimHost(self.nodes)
        mirror = GpuMirror(self.nodes)
        # A new view per run: stateful policies (FGD's distribution, random's generator) start afresh.
        self._cluster = ClusterView(host=host, seed=seed, device_fits=manager.device_fits)
        config = SchedulerConfig(node_policy=node_policy, device_policy=device_policy, events=False)
        scheduler = Scheduler(manager, state, None, config, cluster=self._cluster)
        scheduler.policies({"metadata": {}})  # an unknown policy name fails here, before the run
        names = np.array(host.names, dtype=object)
        arrived = allocated = placed = 0
        failed: Counter[str] = Counter()
        placements: list[str | None] = []
        arrived_pct = np.empty(len(workload))
        allocated_pct = np.empty(len(workload))
        capacity = self.capacity_milli or 1
        try:
            for i, task in enumerate(workload):
                arrived += task.total_gpu_milli
                pod = pod_for(task, f"sim-{seed}-{i}", self.resources)
                room = host.room(task.cpu_milli, task.memory_mib)
                if task.num_gpu:
                    if self.narrow:
                        room &= mirror.could_fit(task.num_gpu, share_percent(task))
                    outcome = scheduler.filter(pod, names[room].tolist())
                    chosen = outcome.node
                    if chosen is not None:
                        mirror.take(state.pods[pod["metadata"]["uid"]].holdings)
                else:
                    chosen = self._place_host_only(node_policy, state, room, pod, self._cluster)
                placements.append(chosen)
                if chosen is None:
                    failed[task_shape(task)] += 1
                else:
                    host.take(cast(int, host.index(chosen)), task.cpu_milli, task.memory_mib)  # a node of this host list
                    allocated += task.total_gpu_milli
                    placed += 1
                arrived_pct[i] = 100.0 * arrived / capacity
                allocated_pct[i] = 100.0 * allocated / capacity
                if progress is not None and (i % 256 == 255 or i == len(workload) - 1):
                    progress(i + 1, len(workload))
        finally:
            scheduler.close()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
        result = RunResult(
            policy,
            seed,
            tune,
            len(workload),
            placed,
            sum(failed.values()),
            seconds,
            self.capacity_milli,
            arrived,
            allocated,
            alloc_at_arrived(arrived_pct, allocated_pct),
            dict(failed),
            placements,
            cpu_seconds,
        )
        log.info(
            "event=sim_run policy=%s seed=%d tasks=%d placed=%d failed=%d alloc100=%.2f seconds=%.2f cpu_seconds=%.2f",
            policy,
            seed,
            result.tasks,
            placed,
            result.failed,
            result.alloc100,
            seconds,
            cpu_seconds,
        )
        return result

    def _place_host_only(self, node_policy: str, state: Any, room: np.ndarray, pod: dict[str, Any], cluster: ClusterView) -> str | None:
        """A task without devices: the node policy's best-scored node among those with room
        (the filter hands such pods straight back, as kube-scheduler would never ask it)."""
        candidates = np.flatnonzero(room)
        if not candidates.size:
            return None
        names = [self.nodes[j].name for j in candidates]
        usages = [node.node_usage() if (node := state.nodes.get(n)) is not None else NodeUsage(n) for n in names]
        if self.manager.policy("node", node_policy).per_pod:
            scores = self.manager.score_nodes(node_policy, usages, [], pod, cluster)
        else:  # the score depends on the node alone: rescore only nodes whose usage changed
            memo = self._node_scores.setdefault(node_policy, {})
            scores = []
            for usage in usages:
                cached = memo.get(usage.name)
                if cached is None or cached[0] is not usage:
                    cached = memo[usage.name] = (usage, self.manager.score_node(node_policy, usage, [], {}, cluster))
                scores.append(cached[1])
        best = min(range(len(names)), key=lambda k: (-scores[k], names[k]))  # the filter's order and tie rule
        return names[best]


def run_many(
    simulator: Simulator,
    policies: Sequence[str],
    seeds: Sequence[int],
    tune: float = 1.3,
    progress: Callable[[str, int, int, int], None] | None = None,
) -> list[RunResult]:
    results = []
    for policy in policies:
        for seed in seeds:
            callback = (lambda done, total, p=policy, s=seed: progress(p, s, done, total)) if progress else None
            results.append(simulator.run(policy, seed, tune, callback))
    return results
