"""The simulated cluster: node objects as the scheduler's cache sees them, plus host resources.

Devices take the node agent's path (a :class:`PhysicalDevice` per device → its backend's
``hami_split_device`` → the node annotation), so the scheduler reads them exactly as in a real
cluster. Which installed device kind a trace's devices are is decided by :func:`trace_kind`, from
data the backends declare (:attr:`DeviceKind.models`), so the core names no vendor. CPU and memory,
which the extender leaves to kube-scheduler, live in numpy arrays that the simulator checks for a
whole cluster at once and that packing policies may read (a :class:`hami.policies.context.HostView`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from hami.plugin.manager import BackendManager
from hami.plugin.model import DeviceKind, PhysicalDevice
from hami.scheduler.state import ClusterState
from hami.sim.trace import MILLI, TraceError, TraceNode
from hami.wire.codec import encode_node_devices


def trace_kind(kinds: Mapping[str, DeviceKind], nodes: Sequence[TraceNode], vendor: str | None = None) -> DeviceKind:
    """The installed device kind the trace's devices are, in this order: ``vendor`` when given; the
    vendor the node file itself names (our inventory YAML does, openb's CSV does not); the only kind
    installed; the one kind that declares the most of the trace's model names. Anything else is
    ambiguous, and the error lists the candidates."""
    installed = ", ".join(sorted(kinds)) or "none"
    if vendor is not None:
        if vendor not in kinds:
            raise TraceError(f"vendor {vendor!r}: no installed backend owns it (installed vendor keys: {installed})")
        return kinds[vendor]
    named = sorted({d.vendor for n in nodes for d in n.gpus if d.vendor is not None})
    if len(named) > 1:
        raise TraceError(f"the node file has devices of several vendors ({', '.join(named)}): choose one with --vendor")
    if named:
        return trace_kind(kinds, nodes, named[0])
    if len(kinds) == 1:
        return next(iter(kinds.values()))
    models = {d.model.lower() for n in nodes for d in n.gpus}
    hits = Counter({key: len(models & {m.lower() for m in kind.models}) for key, kind in kinds.items()})
    ranked = [(key, n) for key, n in hits.most_common() if n]
    if not ranked:
        shown = ", ".join(sorted({d.model for n in nodes for d in n.gpus})) or "none"
        raise TraceError(
            f"no installed backend declares the trace's device models ({shown}): name the vendor with --vendor (installed: {installed})"
        )
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        tied = ", ".join(key for key, n in ranked if n == ranked[0][1])
        raise TraceError(f"the trace's device models fit several installed kinds equally ({tied}): name the vendor with --vendor")
    return kinds[ranked[0][0]]


def only_kind(nodes: Sequence[TraceNode], kind: DeviceKind) -> list[TraceNode]:
    """The nodes with only ``kind``'s devices (a node file that names vendors may list others)."""
    mine = (None, kind.vendor)
    return [n if all(d.vendor in mine for d in n.gpus) else attrs.evolve(n, gpus=[d for d in n.gpus if d.vendor in mine]) for n in nodes]


def device_id(node: str, index: int) -> str:
    return f"GPU-{node}-{index}"


def node_objects(manager: BackendManager, nodes: Sequence[TraceNode], kind: DeviceKind) -> list[dict[str, Any]]:
    """Kubernetes node objects carrying ``kind``'s device annotation, one per trace node."""
    objects = []
    for node in nodes:
        devices = [
            manager.split(PhysicalDevice(id=device_id(node.name, i), vendor=kind.vendor, type=gpu.model, memory=gpu.memory, index=i))
            for i, gpu in enumerate(node.gpus)
        ]
        annotations = {kind.annotations.node_register: encode_node_devices(devices, kind.node_encoding)} if devices else {}
        objects.append({"metadata": {"name": node.name, "annotations": annotations}})
    return objects


class SimHost:
    """Free and total CPU (milli) and memory (MiB) per node: the simulator's host accounting."""

    def __init__(self, nodes: Sequence[TraceNode]) -> None:
        self.names = [n.name for n in nodes]
        self._index = {name: i for i, name in enumerate(self.names)}
        self.cpu_total = np.array([n.cpu_milli for n in nodes], dtype=np.int64)
        self.mem_total = np.array([n.memory_mib for n in nodes], dtype=np.int64)
        self.cpu_free = self.cpu_total.copy()
        self.mem_free = self.mem_total.copy()

    def index(self, node: str) -> int | None:
        return self._index.get(node)

    def room(self, cpu: int, mem: int) -> np.ndarray:
        """Whether each node has ``cpu`` milli and ``mem`` MiB free."""
        return (self.cpu_free >= cpu) & (self.mem_free >= mem)

    def take(self, index: int, cpu: int, mem: int) -> None:
        self.cpu_free[index] -= cpu
        self.mem_free[index] -= mem


class GpuMirror:
    """Free cores per GPU, mirrored from the scheduler's own grants, to narrow the candidates the
    simulator hands to the filter to nodes that could possibly fit (a necessary condition only:
    the filter still decides)."""

    def __init__(self, nodes: Sequence[TraceNode]) -> None:
        width = max((len(n.gpus) for n in nodes), default=1) or 1
        self.free = np.full((len(nodes), width), -1, dtype=np.int64)
        self.position: dict[str, tuple[int, int]] = {}
        for i, node in enumerate(nodes):
            for j in range(len(node.gpus)):
                self.free[i, j] = 100
                self.position[device_id(node.name, j)] = (i, j)
        self.capacity_milli = MILLI * sum(len(n.gpus) for n in nodes)
        self.most = self.free.max(axis=1)
        """Per node, the most free cores on one GPU: the one-GPU check without a scan."""

    def could_fit(self, count: int, cores: int) -> np.ndarray:
        if count == 1:
            return self.most >= cores
        return np.count_nonzero(self.free >= cores, axis=1) >= count

    def take(self, holdings: Mapping[str, tuple[int, int, int]]) -> None:
        for device, (_, _, cores) in holdings.items():
            position = self.position.get(device)
            if position is not None:
                self.free[position] -= cores
                self.most[position[0]] = self.free[position[0]].max()


def cluster_state(manager: BackendManager, objects: Sequence[Mapping[str, Any]]) -> ClusterState:
    state = ClusterState(manager.kinds)
    for obj in objects:
        state.apply_node(obj)
    return state
