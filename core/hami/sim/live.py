"""``hami simulate --live``: the same trace through the live scheduler path, to prove it packs alike.

An in-memory API server (:mod:`hami.fakes.kubeapi`, real HTTP) holds the trace's nodes, with the
device annotation the node agent writes and ``status.allocatable`` CPU/memory; the scheduler is
assembled as ``hami scheduler`` assembles it: informers (list + watch over HTTP) feeding a
:class:`ClusterState` that tracks devices *and* each node's free CPU/memory, a :class:`Scheduler`
with its default policy context (:class:`ClusterView` on ``state.host``) and the extender's verbs
(:class:`hami.scheduler.server.Extender`; with ``http=True`` over the extender's HTTP listener).

This module plays the others around it, one pod at a time: the user (creates the pod), kube-scheduler
(candidates with CPU/memory room from the same informer-fed view, then filter and bind; it places a
pod without devices itself, by the node policy's score, as the simulator does) and the node agent
(after bind: ``bind-phase=success`` and the node lock released, as Allocate does). The report is the
simulator's :class:`RunResult`, so ``hami simulate --live`` prints the same JSON.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections import Counter
from typing import Any, cast

import numpy as np

from hami.kube import release
from hami.plugin.policy import ClusterView
from hami.scheduler.config import SchedulerConfig
from hami.sim.cluster import GpuMirror
from hami.sim.engine import Progress, RunResult, Simulator, policy_pair, task_shape
from hami.sim.metrics import alloc_at_arrived
from hami.sim.pods import NAMESPACE, pod_for, share_percent
from hami.sim.workload import prepare_workload
from hami.wire.annotations import BIND_PHASE, NODE_LOCK, BindPhase

log = logging.getLogger(__name__)


def node_object(obj: dict[str, Any], cpu_milli: int, memory_mib: int) -> dict[str, Any]:
    """The simulator's node object as the API server holds it: device annotation plus CPU/memory."""
    sizes = {"cpu": f"{cpu_milli}m", "memory": f"{memory_mib}Mi", "pods": "1000"}
    return {**obj, "status": {"capacity": sizes, "allocatable": sizes}}


class LiveReplay:
    """Replays a :class:`Simulator`'s trace through the live path; :meth:`run` returns a :class:`RunResult`."""

    def __init__(self, simulator: Simulator, *, http: bool = False, sync_timeout: float = 120.0) -> None:
        self.sim = simulator
        self.http = http
        self.sync_timeout = sync_timeout

    def run(self, policy: str, seed: int, tune: float = 1.3, progress: Progress | None = None, shuffle: bool = True) -> RunResult:
        from kubernetes.client import CoreV1Api

        from hami.fakes.kubeapi import KubeAPIServer
        from hami.scheduler.cache import ClusterCache
        from hami.scheduler.core import Scheduler
        from hami.scheduler.server import Extender, ExtenderHTTPServer
        from hami.scheduler.state import ClusterState

        sim = self.sim
        node_policy, device_policy = policy_pair(policy)
        workload = prepare_workload(sim.tasks, sim.capacity_milli, tune, seed, shuffle=shuffle)
        server = KubeAPIServer(history_size=20000, bookmark_interval=60.0).start()
        store = server.store
        api = server.api_client()
        for obj, node in zip(sim.objects, sim.nodes, strict=True):
            store.create("nodes", node_object(obj, node.cpu_milli, node.memory_mib))
        store.create("namespaces", {"metadata": {"name": NAMESPACE}})
        core_v1 = CoreV1Api(api)
        manager = sim.manager
        state = ClusterState(manager.kinds, capacity_devices=manager.node_capacity_devices)
        cache = ClusterCache(state, core_v1, watch_timeout=240)
        config = SchedulerConfig(node_policy=node_policy, device_policy=device_policy, events=False)
        scheduler = Scheduler(manager, state, core_v1, config)
        # The scheduler's own context (state.host), with the run's seed for policies that draw numbers.
        scheduler.cluster = cluster = ClusterView(host=state.host, seed=seed, device_fits=manager.device_fits)
        extender = Extender(scheduler, ready=lambda: cache.synced, pods=cache.informed, pod_wait=30.0)
        listener = ExtenderHTTPServer(extender).start() if self.http else None
        cache.start()
        started = started_cpu = 0.0
        try:
            if not cache.wait_synced(self.sync_timeout):
                raise RuntimeError(f"the scheduler's informers did not sync with the API server in {self.sync_timeout:.0f} s")
            scheduler.policies({"metadata": {}})
            names = [n.name for n in sim.nodes]
            slots = np.array([state.host.index(n) if state.host.index(n) is not None else -1 for n in names], dtype=np.int64)
            if (slots < 0).any():
                raise RuntimeError("the informers delivered nodes without allocatable CPU/memory")
            name_array = np.array(names, dtype=object)
            mirror = GpuMirror(sim.nodes)
            sim._node_scores = {}
            arrived = allocated = placed = 0
            failed: Counter[str] = Counter()
            placements: list[str | None] = []
            arrived_pct = np.empty(len(workload))
            allocated_pct = np.empty(len(workload))
            capacity = sim.capacity_milli or 1
            started, started_cpu = time.perf_counter(), time.process_time()
            for i, task in enumerate(workload):
                arrived += task.total_gpu_milli
                pod = pod_for(task, "", sim.resources)
                pod["metadata"] = {k: v for k, v in pod["metadata"].items() if k != "uid"} | {"name": f"task-{i}"}
                pod["spec"]["containers"][0]["image"] = "registry.k8s.io/pause:3.10"
                created = store.create("pods", pod, NAMESPACE)
                uid = created["metadata"]["uid"]
                with state.lock:  # kube-scheduler's view of CPU and memory: the informer-fed state, assumed pods included
                    room = (state.host.cpu_free[slots] >= task.cpu_milli) & (state.host.mem_free[slots] >= task.memory_mib)
                if task.num_gpu:
                    if sim.narrow:
                        room &= mirror.could_fit(task.num_gpu, share_percent(task))
                    chosen = self._filter_and_bind(extender, listener, created, name_array[room].tolist())
                    if chosen is not None:
                        mirror.take(state.pods[uid].holdings)
                else:
                    chosen = sim._place_host_only(node_policy, state, room, created, cluster)
                    if chosen is not None:
                        state.assume_host(uid, chosen, created)
                        store.bind(NAMESPACE, f"task-{i}", chosen, uid)
                placements.append(chosen)
                if chosen is None:
                    failed[task_shape(task)] += 1
                else:
                    allocated += task.total_gpu_milli
                    placed += 1
                arrived_pct[i] = 100.0 * arrived / capacity
                allocated_pct[i] = 100.0 * allocated / capacity
                if progress is not None and (i % 256 == 255 or i == len(workload) - 1):
                    progress(i + 1, len(workload))
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
        finally:
            if listener is not None:
                listener.stop()
            scheduler.close()
            cache.stop()
            server.stop()
        result = RunResult(
            policy,
            seed,
            tune,
            len(workload),
            placed,
            sum(failed.values()),
            seconds,
            sim.capacity_milli,
            arrived,
            allocated,
            alloc_at_arrived(arrived_pct, allocated_pct),
            dict(failed),
            placements,
            cpu_seconds,
        )
        log.info(
            "event=sim_live_run policy=%s seed=%d tasks=%d placed=%d alloc100=%.2f seconds=%.2f",
            policy,
            seed,
            result.tasks,
            placed,
            result.alloc100,
            seconds,
        )
        return result

    def _filter_and_bind(self, extender: Any, listener: Any, pod: dict[str, Any], candidates: list[str]) -> str | None:
        """kube-scheduler's calls for one pod (filter, then bind to the one node left), then the agent's part."""
        meta = pod["metadata"]
        args = {"Pod": pod, "NodeNames": candidates}
        result = self._call(extender, listener, "filter", args)
        chosen = result.get("NodeNames") or []
        if result.get("Error") or not chosen:
            return None
        node = chosen[0]
        bind = {"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"], "Node": node}
        error = self._call(extender, listener, "bind", bind).get("Error")
        if error:
            log.warning("event=sim_live_bind_failed pod=%s node=%s error=%r", meta["name"], node, error)
            return None
        self._allocated(extender.scheduler.core_v1, meta["name"], node)
        return cast(str, node)

    @staticmethod
    def _call(extender: Any, listener: Any, verb: str, args: dict[str, Any]) -> dict[str, Any]:
        if listener is None:
            return cast(dict[str, Any], getattr(extender, verb)(args))
        request = urllib.request.Request(
            f"{listener.url}/{verb}", data=json.dumps(args).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return cast(dict[str, Any], json.loads(response.read()))

    @staticmethod
    def _allocated(core_v1: Any, name: str, node: str) -> None:
        """The node agent's Allocate, as far as the scheduler can tell: the bind succeeded and the lock is free."""
        release(
            core_v1.patch_namespaced_pod(
                name, NAMESPACE, {"metadata": {"annotations": {BIND_PHASE: BindPhase.SUCCESS}}}, _preload_content=False
            )
        )
        release(core_v1.patch_node(node, {"metadata": {"annotations": {NODE_LOCK: None}}}, _preload_content=False))


__all__ = ["LiveReplay", "node_object"]
