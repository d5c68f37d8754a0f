"""Choosing devices for a pod on one node: the core's capacity checks, the backend's predicates and
normalisation (through the manager's hooks), and the device policy's scores.

Containers are fitted in order (init first), each seeing what the earlier ones took, so a pod is
never granted more than a node has. A failure says which request could not be met and why, counted
over the node's devices (``"2/8 CardInsufficientMemory, 6/8 CardTypeMismatch"``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.plugin.manager import BackendManager
from hami.plugin.model import DeviceRequest, DeviceUsage, Grant
from hami.plugin.policy import ClusterView
from hami.scheduler.state import NodeState
from hami.wire.codec import PodDevices

@attrs.frozen
class Fit:
    node: str
    devices: Mapping[str, PodDevices] = attrs.field(hash=False)
    """Per vendor key, per container (init first), the grants."""


@attrs.frozen
class Misfit:
    node: str
    reason: str


def device_reason(manager: BackendManager, node: NodeState, request: DeviceRequest, usage: DeviceUsage, pod: Mapping[str, Any]) -> tuple[str | None, DeviceRequest]:
    """Why ``usage``'s device cannot take ``request`` (None if it can), and the request as normalised for it."""
    device = usage.device
    if not device.healthy:
        return "CardUnhealthy", request
    if device.id in node.cordoned:
        return "CardCordoned", request
    request = manager.normalize(request, usage, pod)
    vendor_reason = manager.device_fits(request, usage, pod)
    if vendor_reason:
        return vendor_reason, request
    if usage.free_slots < 1:
        return "CardTimeSlicingExhausted", request
    if request.exclusive and usage.used > 0:
        return "ExclusiveDeviceAllocateConflict", request
    if device.cores and usage.cores >= device.cores:
        return "CardComputeUnitsExhausted", request
    if request.memory_on(device) > usage.free_memory:
        return "CardInsufficientMemory", request
    if request.cores > usage.free_cores:
        return "CardInsufficientCore", request
    return None, request


def _counted(reasons: Counter[str], total: int) -> str:
    return ", ".join(f"{n}/{total} {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))


def _choose(
    manager: BackendManager, node: NodeState, pod: Mapping[str, Any], candidates: list[tuple[float, DeviceUsage, DeviceRequest]], request: DeviceRequest
) -> list[tuple[float, DeviceUsage, DeviceRequest]] | None:
    """The backend's choice of devices that must go together, else the best-scored (per NUMA node when bound)."""
    ranked = sorted(candidates, key=lambda c: (-c[0], c[1].device.index, c[1].device.id))
    if request.count > 1:
        chosen = manager.select_devices(request, [c[1] for c in ranked], node.annotations, pod)
        if chosen is not None:
            by_id = {c[1].device.id: c for c in ranked}
            return [by_id[i] for i in chosen] or None
    if not request.single_numa:
        return ranked[: request.count]
    groups: dict[int, list[tuple[float, DeviceUsage, DeviceRequest]]] = {}
    for candidate in ranked:
        groups.setdefault(candidate[1].device.numa, []).append(candidate)
    viable = [g[: request.count] for g in groups.values() if len(g) >= request.count]
    if not viable:
        return None
    return max(viable, key=lambda g: (sum(c[0] for c in g), -g[0][1].device.numa))


def fit_node(
    manager: BackendManager,
    node: NodeState,
    pod: Mapping[str, Any],
    requests: Sequence[Sequence[DeviceRequest]],
    device_policy: str,
    cluster: ClusterView | None = None,
) -> Fit | Misfit:
    """Fit every container's requests on ``node``; ``requests`` is per container, init containers first.
    Devices are scored by ``device_policy`` with ``cluster`` (the manager's default view when None)."""
    working: dict[str, DeviceUsage] = {}
    granted: dict[str, list[tuple[Grant, ...]]] = {}
    vendors = {r.vendor for container in requests for r in container}
    for vendor in vendors:
        if not node.by_vendor.get(vendor):
            why = node.problems.get(vendor, f"no {vendor} devices registered on this node")
            return Misfit(node.name, f"NodeInsufficientDevice: {why}")
        granted[vendor] = [() for _ in requests]
    for position, container_requests in enumerate(requests):
        for request in container_requests:
            reasons: Counter[str] = Counter()
            candidates = []
            ids = node.by_vendor[request.vendor]
            for device_id in ids:
                usage = working.get(device_id) or node.usage(device_id)
                reason, normalized = device_reason(manager, node, request, usage, pod)
                if reason:
                    reasons[reason] += 1
                    continue
                score = manager.score_device(device_policy, normalized, usage, pod, cluster)
                candidates.append((score, usage, normalized))
            chosen = _choose(manager, node, pod, candidates, request) if len(candidates) >= request.count else None
            if chosen is None:
                if len(candidates) >= request.count:
                    reasons["NumaNotFit" if request.single_numa else "TopologyNotFit"] += len(candidates)
                container = f"container #{position}"
                return Misfit(node.name, f"{container} needs {request.count} {request.vendor}: {_counted(reasons, len(ids))}")
            grants = []
            for _, usage, normalized in chosen:
                grant = Grant(usage.device.id, request.vendor, normalized.memory_on(usage.device), normalized.cores)
                working[usage.device.id] = usage.add(grant)
                grants.append(grant)
            granted[request.vendor][position] = tuple(grants)
    return Fit(node.name, {vendor: tuple(per_container) for vendor, per_container in granted.items()})
