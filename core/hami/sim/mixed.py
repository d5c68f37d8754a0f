"""Replaying pods on a mixed inventory: every vendor's devices through its own backend at once.

The single-kind simulator (:mod:`hami.sim.engine`) measures packing of one device kind on openb
traces. A planner with a heterogeneous cluster asks another question: *what do I lose to each
vendor's rounding (partition templates, memory slices) on my mix of workloads?* So here nodes come
from our inventory YAML with devices of any installed backend (each split by its backend, as the
node agent does), pods come as Kubernetes pod specs in any vendor's resources (or openb CSV rows,
written for the kind that declares their ``gpu_spec`` model, else ``vendor``), and each pod goes
through the real :meth:`Scheduler.filter` (requests, fit, templates, policies) with the node's CPU
and memory as kube-scheduler would check them. The report is per vendor: devices, what placed pods
asked (a share of the device they got: the larger of cores and memory), what their grants hold,
the difference (rounding), and why pods failed.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import yaml

from hami.backendkit.inventory import load_inventory
from hami.plugin.manager import BackendManager, load_backends
from hami.plugin.model import DeviceKind, DeviceRequest
from hami.plugin.policy import ClusterView
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.noderesources import pod_host_requests
from hami.sim.cluster import SimHost, cluster_state
from hami.sim.engine import policy_pair
from hami.sim.pods import ShareResources, pod_for
from hami.sim.trace import TraceError, TraceNode, read_pods_csv
from hami.wire.codec import encode_node_devices

REPLICAS = "sim.hami.io/replicas"
"""Pod annotation: how many copies of this pod the workload holds (default 1)."""


@attrs.frozen
class VendorResult:
    vendor: str
    devices: int
    pods: int
    placed: int
    failed: int
    requested_milli: int
    """What placed pods asked, in thousandths of a device (per device: the larger of cores and memory share)."""
    granted_milli: int
    """What their grants hold, same unit: above ``requested_milli`` by the backend's rounding."""
    failures: Mapping[str, int] = attrs.field(factory=dict, hash=False)

    @property
    def capacity_milli(self) -> int:
        return 1000 * self.devices

    def as_json(self) -> dict[str, Any]:
        capacity = self.capacity_milli or 1
        return {
            "devices": self.devices,
            "pods": self.pods,
            "placed": self.placed,
            "failed": self.failed,
            "capacity_milli": self.capacity_milli,
            "requested_milli": self.requested_milli,
            "granted_milli": self.granted_milli,
            "rounding_milli": self.granted_milli - self.requested_milli,
            "requested_pct": round(100.0 * self.requested_milli / capacity, 2),
            "granted_pct": round(100.0 * self.granted_milli / capacity, 2),
            "failures": dict(self.failures),
        }


@attrs.frozen
class MixedResult:
    policy: str
    seed: int
    pods: int
    placed: int
    failed: int
    seconds: float
    vendors: tuple[VendorResult, ...]
    placements: tuple[str | None, ...] = attrs.field(default=(), repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "seed": self.seed,
            "pods": self.pods,
            "placed": self.placed,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "vendors": {v.vendor: v.as_json() for v in self.vendors},
        }


def read_pod_specs(path: str | Path) -> list[dict[str, Any]]:
    """Pods from a YAML file: documents of kind Pod (or a List of them); ``sim.hami.io/replicas`` copies one."""
    path = Path(path)
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise TraceError(f"{path}: {exc}") from None
    pods: list[dict[str, Any]] = []
    for number, doc in enumerate(documents, 1):
        if doc is None:
            continue
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items or ():
            if not isinstance(item, dict) or item.get("kind", "Pod") != "Pod" or not isinstance(item.get("spec"), dict):
                raise TraceError(
                    f"{path}: document {number}: not a Pod (kind {item.get('kind') if isinstance(item, dict) else type(item).__name__!r})"
                )
            meta = item.setdefault("metadata", {})
            if not meta.get("name"):
                raise TraceError(f"{path}: document {number}: a pod without metadata.name")
            text = str((meta.get("annotations") or {}).get(REPLICAS, "1"))
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise TraceError(f"{path}: pod {meta['name']!r}: {REPLICAS}={text!r} is not a positive whole number")
            pods.extend(copy.deepcopy(item) for _ in range(int(text)))
    if not pods:
        raise TraceError(f"{path}: no pods")
    return pods


def csv_pods(path: str | Path, kinds: Mapping[str, DeviceKind], vendor: str | None) -> list[dict[str, Any]]:
    """openb rows as pods: each task in the resources of the kind that declares its ``gpu_spec`` models,
    else of ``vendor``; a task no kind takes is an error naming it."""
    by_model = {m.lower(): k for k in kinds.values() for m in k.models}
    pods = []
    for task in read_pods_csv(path):
        kind = next((by_model[m.lower()] for m in task.gpu_spec if m.lower() in by_model), None)
        if kind is None and task.num_gpu:
            if vendor is None or vendor not in kinds:
                raise TraceError(
                    f"{path}: task {task.name!r}: no installed kind declares its models {list(task.gpu_spec)}; name one with --vendor "
                    f"(installed: {', '.join(sorted(kinds))})"
                )
            kind = kinds[vendor]
        pods.append(pod_for(task, "", ShareResources.of(kind or next(iter(kinds.values())))))
    return pods


class MixedSimulator:
    """An inventory of any installed vendors' nodes and a pod list; :meth:`run` replays them."""

    def __init__(self, nodes_path: str | Path, pods: Sequence[Mapping[str, Any]], *, manager: BackendManager | None = None) -> None:
        inventory = load_inventory(nodes_path)
        vendors = sorted({d.vendor for n in inventory for d in n.devices})
        if manager is None:
            installed = load_backends()
            missing = [v for v in vendors if v not in installed.kinds]
            if missing:
                raise TraceError(
                    f"{nodes_path}: no installed backend owns vendor(s) {', '.join(missing)} (installed: {', '.join(sorted(installed.kinds))})"
                )
            manager = load_backends(allow=sorted({r.name for r in installed.records if set(r.vendors) & set(vendors)}))
        self.manager = manager
        self.vendors = vendors
        self.pods = [dict(p) for p in pods]
        self.nodes = [TraceNode(n.name, n.cpu_milli, n.memory) for n in inventory]
        self.device_counts = Counter(d.vendor for n in inventory for d in n.devices)
        self.objects = []
        for node in inventory:
            annotations: dict[str, str] = {}
            for vendor in vendors:
                kind = manager.kinds[vendor]
                split = [manager.split(d, node.name) for d in node.devices if d.vendor == vendor]
                if split:
                    annotations[kind.annotations.node_register] = encode_node_devices(split, kind.node_encoding)
            self.objects.append({"metadata": {"name": node.name, "labels": dict(node.labels), "annotations": annotations}})

    def run(self, policy: str, seed: int, shuffle: bool = True) -> MixedResult:
        from hami.scheduler.core import Scheduler

        node_policy, device_policy = policy_pair(policy)
        order = list(range(len(self.pods)))
        if shuffle:
            random.Random(seed).shuffle(order)
        started = time.perf_counter()
        state = cluster_state(self.manager, self.objects)
        host = SimHost(self.nodes)
        cluster = ClusterView(host=host, seed=seed, device_fits=self.manager.device_fits)
        scheduler = Scheduler(
            self.manager, state, None, SchedulerConfig(node_policy=node_policy, device_policy=device_policy, events=False), cluster=cluster
        )
        scheduler.policies({"metadata": {}})
        names = np.array(host.names, dtype=object)
        tally: dict[str, Counter[str]] = {v: Counter() for v in self.vendors}
        placements: list[str | None] = []
        try:
            for i in order:
                pod = copy.deepcopy(self.pods[i])
                meta = pod.setdefault("metadata", {})
                meta.update(uid=f"sim-{seed}-{i}", name=f"{meta.get('name') or 'pod'}-{i}", namespace=meta.get("namespace") or "sim")
                cpu, mem = pod_host_requests(pod)
                room = host.room(cpu, mem)
                try:
                    requests = [r for c in scheduler.requests(pod) for r in c]
                except Exception as exc:  # a pod the backends refuse is a failure of the run's input, named
                    raise TraceError(f"pod {self.pods[i]['metadata']['name']!r}: {exc}") from None
                asked = sorted({r.vendor for r in requests})
                for vendor in asked:
                    tally.setdefault(vendor, Counter())["pods"] += 1
                if not requests:
                    chosen = str(names[room][0]) if room.any() else None
                else:
                    outcome = scheduler.filter(pod, names[room].tolist())
                    chosen = outcome.node
                    if chosen is None:
                        reason = _first_reason(outcome.error, outcome.failed, bool(room.any()))
                        for vendor in asked:
                            tally[vendor]["failed"] += 1
                            tally[vendor][f"reason:{reason}"] += 1
                    else:
                        self._count(tally, state, chosen, meta["uid"], requests)
                if chosen is not None:
                    host.take(host.index(chosen) or 0, cpu, mem)
                placements.append(chosen)
        finally:
            scheduler.close()
        vendors = tuple(
            VendorResult(
                v,
                self.device_counts.get(v, 0),
                t["pods"],
                t["placed"],
                t["failed"],
                t["requested"],
                t["granted"],
                {k.removeprefix("reason:"): n for k, n in sorted(t.items()) if k.startswith("reason:")},
            )
            for v, t in sorted(tally.items())
        )
        placed = sum(p is not None for p in placements)
        return MixedResult(policy, seed, len(order), placed, len(order) - placed, time.perf_counter() - started, vendors, tuple(placements))

    @staticmethod
    def _count(tally: dict[str, Counter[str]], state: Any, node: str, uid: str, requests: Sequence[DeviceRequest]) -> None:
        """Per vendor: the pod placed, what it asked and what its grants hold, as device shares."""
        record = state.pods[uid]
        devices = state.nodes[node].devices
        by_vendor: dict[str, list[Any]] = {}
        for per_container in record.devices.values():
            for grants in per_container:
                for grant in grants:
                    by_vendor.setdefault(grant.vendor, []).append(grant)
        for vendor, grants in by_vendor.items():
            tally[vendor]["placed"] += 1
            wanted = [r for r in requests if r.vendor == vendor]
            for grant in grants:
                device = devices.get(grant.id)
                total = device.memory if device is not None and device.memory else 1
                tally[vendor]["granted"] += round(10 * max(grant.cores, 100 * grant.memory / total))
            for request in wanted:
                total = devices[grants[0].id].memory if grants[0].id in devices and devices[grants[0].id].memory else 1
                memory = request.memory_percentage if request.memory_percentage is not None else 100 * request.memory / total
                share = 100 if request.exclusive else max(request.cores, memory)
                tally[vendor]["requested"] += round(10 * min(share, 100)) * request.count


def _first_reason(error: str, failed: Mapping[str, str], any_room: bool) -> str:
    """A failure's kind in a word (the extender's reason names), for counting."""
    if error:
        return "error"
    if not any_room:
        return "Insufficient cpu/memory"
    words = Counter(r.split(":", 1)[0].split(" ", 1)[0] for r in failed.values())
    return words.most_common(1)[0][0] if words else "no candidate"


__all__ = ["REPLICAS", "MixedResult", "MixedSimulator", "VendorResult", "csv_pods", "read_pod_specs"]
