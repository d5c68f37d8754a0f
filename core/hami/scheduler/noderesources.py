"""Each node's allocatable CPU and memory minus what the pods on it request: the host view of the
packing policies (:class:`hami.plugin.policy.HostView`), fed by the informers.

kube-scheduler filters CPU and memory before it asks the extender, but packing policies (FGD,
best-fit) score *how much* is left, so the extender keeps the same arithmetic: ``status.allocatable``
of each node, and per bound pod what it requests (kube-scheduler's ``PodRequests``: containers and
sidecars summed, init containers as a maximum, overhead added). A pod the filter has chosen a node
for counts from the filter on (kube-scheduler's assume), so the next pod sees it before the bind's
watch event arrives. Units are CPU milli and MiB, the simulator's: requests round up, allocatable down.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from hami.errors import QuantityError
from hami.wire.quantity import parse_quantity

_MIB = Decimal(1 << 20)


def _quantity(value: Any) -> Decimal:
    try:
        return Decimal(parse_quantity(str(value)))
    except (QuantityError, ArithmeticError, ValueError):
        return Decimal(0)


def _container(container: Mapping[str, Any]) -> tuple[Decimal, Decimal]:
    """(CPU cores, memory bytes) a container requests; a limit without a request is the request (API defaulting)."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return _quantity(merged.get("cpu", 0)), _quantity(merged.get("memory", 0))


def pod_host_requests(pod: Mapping[str, Any]) -> tuple[int, int]:
    """(CPU milli, memory MiB) the pod asks of its node, as kube-scheduler's ``PodRequests`` sums it."""
    spec = pod.get("spec") or {}
    cpu = mem = Decimal(0)
    for container in spec.get("containers") or ():
        c, m = _container(container)
        cpu, mem = cpu + c, mem + m
    side_cpu = side_mem = Decimal(0)
    peak_cpu = peak_mem = Decimal(0)
    for container in spec.get("initContainers") or ():
        c, m = _container(container)
        if container.get("restartPolicy") == "Always":  # a sidecar runs beside everything after it
            cpu, mem, side_cpu, side_mem = cpu + c, mem + m, side_cpu + c, side_mem + m
            continue
        peak_cpu, peak_mem = max(peak_cpu, side_cpu + c), max(peak_mem, side_mem + m)
    cpu, mem = max(cpu, peak_cpu), max(mem, peak_mem)
    overhead = spec.get("overhead") or {}
    cpu += _quantity(overhead.get("cpu", 0))
    mem += _quantity(overhead.get("memory", 0))
    return int((cpu * 1000).to_integral_value(ROUND_CEILING)), int((mem / _MIB).to_integral_value(ROUND_CEILING))


def node_allocatable(node: Mapping[str, Any]) -> tuple[int, int] | None:
    """(CPU milli, memory MiB) of ``status.allocatable`` (capacity when no allocatable); None when neither says."""
    status = node.get("status") or {}
    figures = status.get("allocatable") or status.get("capacity") or {}
    if "cpu" not in figures and "memory" not in figures:
        return None
    cpu = (_quantity(figures.get("cpu", 0)) * 1000).to_integral_value(ROUND_FLOOR)
    mem = (_quantity(figures.get("memory", 0)) / _MIB).to_integral_value(ROUND_FLOOR)
    return int(cpu), int(mem)


class NodeResources:
    """Free and total CPU (milli) and memory (MiB) per node as numpy arrays (a ``HostView``).

    Mutated only under :class:`hami.scheduler.state.ClusterState`'s lock. A node without a known
    allocatable has no index (the policies treat it as unlimited); pods on it are kept and counted
    once its allocatable arrives.
    """

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._index: dict[str, int] = {}
        self._known: dict[str, bool] = {}
        self.cpu_total = np.zeros(0, dtype=np.int64)
        self.mem_total = np.zeros(0, dtype=np.int64)
        self.cpu_free = np.zeros(0, dtype=np.int64)
        self.mem_free = np.zeros(0, dtype=np.int64)
        self._used: dict[str, list[int]] = {}
        self.pods: dict[str, tuple[str, int, int]] = {}
        """Pod uid → (node, CPU milli, MiB) counted on that node."""

    def index(self, node: str) -> int | None:
        return self._index.get(node) if self._known.get(node) else None

    def _slot(self, node: str) -> int:
        slot = self._index.get(node)
        if slot is None:
            slot = self._index[node] = len(self._index)
            if slot >= len(self.cpu_total):  # grow by doubling: the arrays are replaced, never resized in place
                size = max(64, 2 * len(self.cpu_total))
                for name in ("cpu_total", "mem_total", "cpu_free", "mem_free"):
                    grown = self._np.zeros(size, dtype=self._np.int64)
                    old = getattr(self, name)
                    grown[: len(old)] = old
                    setattr(self, name, grown)
        return slot

    def _refresh(self, node: str) -> None:
        slot = self._slot(node)
        used = self._used.get(node, [0, 0])
        self.cpu_free[slot] = self.cpu_total[slot] - used[0]
        self.mem_free[slot] = self.mem_total[slot] - used[1]

    def set_node(self, node: str, allocatable: tuple[int, int] | None) -> None:
        """A node's allocatable (None: not known, or the node is gone)."""
        slot = self._slot(node)
        self._known[node] = allocatable is not None
        self.cpu_total[slot], self.mem_total[slot] = allocatable or (0, 0)
        self._refresh(node)

    def place(self, uid: str, node: str, cpu: int, mem: int) -> None:
        """Count a pod's requests on ``node`` (replacing what it was counted for before)."""
        if self.pods.get(uid) == (node, cpu, mem):
            return
        self.release(uid)
        self.pods[uid] = (node, cpu, mem)
        used = self._used.setdefault(node, [0, 0])
        used[0] += cpu
        used[1] += mem
        self._refresh(node)

    def release(self, uid: str) -> None:
        held = self.pods.pop(uid, None)
        if held is None:
            return
        node, cpu, mem = held
        used = self._used[node]
        used[0] -= cpu
        used[1] -= mem
        self._refresh(node)

    def free(self, node: str) -> tuple[int, int] | None:
        """(CPU milli, MiB) free on ``node``; None when its allocatable is not known."""
        slot = self.index(node)
        return None if slot is None else (int(self.cpu_free[slot]), int(self.mem_free[slot]))


__all__ = ["NodeResources", "node_allocatable", "pod_host_requests"]
