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

from hami.errors import ValidationError
from hami.plugin.manager import BackendManager
from hami.plugin.model import MAX_REQUEST_CORES, DeviceRequest, DeviceUsage, Grant
from hami.plugin.policy import ClusterView, DevicePolicy
from hami.scheduler.state import NodeState
from hami.wire.codec import PodDevices
from hami.wire.isolation import MISSING_REASON, whole_only_reason

FALLBACK_SORT_KEY = "spread"
"""The sort key of a comma list that names none (``mutex,topology-aware``): HAMi's lessByChain
falls back to spread (pkg/scheduler/policy/gpu_policy.go)."""


@attrs.frozen
class DeviceChoice:
    """A device policy as a pod or the configuration names it: one policy, or a comma list
    (``binpack,numa``, ``mutex,topology-aware``) as HAMi's gpuSortKeyChain/PolicyContains read it."""

    name: str
    keys: tuple[str, ...]
    """Policies whose scores are compared, in the order written (most significant first)."""
    filters: tuple[str, ...]
    """Every policy named: each may refuse a device."""
    selects: bool
    """The owning backend chooses the devices for every request (a policy with ``selects``)."""


def device_choice(manager: BackendManager, name: str) -> DeviceChoice:
    """Resolve ``name``; a ValidationError names an unknown policy in it. Stricter than HAMi, which
    ignores unknown names in a list (``binpak,numa`` would silently be ``numa``)."""
    if "," not in name:
        policy = manager.policy("device", name)
        return DeviceChoice(name, (name,), (name,), bool(getattr(policy, "selects", False)))
    parts: list[str] = []
    for token in (t.strip() for t in name.split(",")):
        if token and token not in parts:
            parts.append(token)
    if not parts:
        raise ValidationError(f"device scheduling policy {name!r} names no policy")
    policies: list[DevicePolicy] = []
    for token in parts:
        try:
            policies.append(manager.policy("device", token))  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ValidationError(f"in device scheduling policy list {name!r}: {exc}") from None
    keys = tuple(p.name for p in policies if getattr(p, "sort_key", True)) or (FALLBACK_SORT_KEY,)
    return DeviceChoice(name, keys, tuple(parts), any(getattr(p, "selects", False) for p in policies))


@attrs.frozen
class Fit:
    node: str
    devices: Mapping[str, PodDevices] = attrs.field(hash=False)
    """Per vendor key, per container (init first), the grants."""


@attrs.frozen
class Misfit:
    node: str
    reason: str


def device_reason(
    manager: BackendManager, node: NodeState, request: DeviceRequest, usage: DeviceUsage, pod: Mapping[str, Any]
) -> tuple[str | None, DeviceRequest]:
    """Why ``usage``'s device cannot take ``request`` (None if it can), and the request as normalised for it."""
    device = usage.device
    if not device.healthy:
        return "CardNotHealth", request
    if device.id in node.cordoned:
        return "CardCordoned", request
    request = manager.normalize(request, usage, pod)
    vendor_reason = manager.device_fits(request, usage, pod)
    if vendor_reason:
        return vendor_reason, request
    if request.cores < MAX_REQUEST_CORES or request.memory_on(device) < device.memory:
        missing = whole_only_reason(node.annotations, device)
        if missing:  # a share here would carry a limit nothing enforces (hami.wire.isolation)
            return f"{MISSING_REASON} ({missing}; only whole devices)", request
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


Scored = tuple[tuple[float, ...], DeviceUsage, DeviceRequest]
"""A candidate device: its scores (one per sort key, most significant first), usage and normalised request."""


def _choose(
    manager: BackendManager, node: NodeState, pod: Mapping[str, Any], candidates: list[Scored], request: DeviceRequest, selects: bool
) -> list[Scored] | None:
    """The backend's choice of devices that must go together (for every request when the policy
    ``selects``), else the best-scored (per NUMA node when bound)."""
    ranked = sorted(candidates, key=lambda c: (tuple(-x for x in c[0]), c[1].device.index, c[1].device.id))
    if request.count > 1 or selects:
        chosen = manager.select_devices(request, [c[1] for c in ranked], node.annotations, pod)
        if chosen is not None:
            by_id = {c[1].device.id: c for c in ranked}
            return [by_id[i] for i in chosen] or None
    if not request.single_numa:
        return ranked[: request.count]
    groups: dict[int, list[Scored]] = {}
    for candidate in ranked:
        groups.setdefault(candidate[1].device.numa, []).append(candidate)
    viable = [g[: request.count] for g in groups.values() if len(g) >= request.count]
    if not viable:
        return None
    return max(viable, key=lambda g: (tuple(sum(keys) for keys in zip(*(c[0] for c in g), strict=True)), -g[0][1].device.numa))


def fit_node(
    manager: BackendManager,
    node: NodeState,
    pod: Mapping[str, Any],
    requests: Sequence[Sequence[DeviceRequest]],
    device_policy: str,
    cluster: ClusterView | None = None,
) -> Fit | Misfit:
    """Fit every container's requests on ``node``; ``requests`` is per container, init containers first.
    Devices are scored by ``device_policy`` (a name or a comma list, :func:`device_choice`) with
    ``cluster`` (the manager's default view when None)."""
    choice = device_choice(manager, device_policy)
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
            candidates: list[Scored] = []
            ids = node.by_vendor[request.vendor]
            for device_id in ids:
                usage = working.get(device_id) or node.usage(device_id)
                reason, normalized = device_reason(manager, node, request, usage, pod)
                for policy in choice.filters:
                    if reason:
                        break
                    reason = manager.refuse_device(policy, normalized, usage, pod, cluster)
                if reason:
                    reasons[reason] += 1
                    continue
                scores = tuple(manager.score_device(key, normalized, usage, pod, cluster) for key in choice.keys)
                candidates.append((scores, usage, normalized))
            chosen = _choose(manager, node, pod, candidates, request, choice.selects) if len(candidates) >= request.count else None
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
