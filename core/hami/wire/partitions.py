"""The partition instances a pod's containers hold, in HAMi's pod annotation.

HAMi v2.10 records each hardware partition it hands out as one entry of a JSON list on the pod
(Project-HAMi/HAMi ``pkg/device/<vendor>/*_allocations.go``, the allocation type): its scheduler
writes container index, device index, parent device, profile and placement; its device plugin adds
the realized instance's UUID, GPU-instance and compute-instance ids once the partition exists
(``pkg/device-plugin/.../plugin/server.go``, after Allocate). Its scheduler
(``cmd/scheduler/metrics.go``) and monitor (``cmd/vGPUmonitor/metrics.go``) export the realized ones.
Our agent writes the same list after Allocate from what the backend reports
(:class:`hami.plugin.model.PartitionInstance`), so HAMi's tools and ours read one format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from hami.errors import AnnotationError, ValidationError
from hami.plugin.model import PartitionInstance

ANNOTATION = "hami.io/vgpu-mig-allocations"
INSTANCE_UUID_KEY = "migUUID"
"""HAMi's JSON key for the realized instance's UUID."""


@attrs.frozen
class PartitionAllocation:
    """One entry of the annotation: which container (init containers first) holds ``instance``."""

    container_index: int
    instance: PartitionInstance


def _uint(entry: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> int | None:
    value = entry.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > 0xFFFFFFFF:
        raise AnnotationError(f"{ANNOTATION} {where}: {key}={value!r} must be an unsigned 32-bit integer")
    return value


def decode(raw: str | None) -> tuple[PartitionAllocation, ...]:
    """The annotation's entries (``()`` for none), checked as HAMi's decoder checks them: complete reservations, runtime identity all or nothing, one entry per (container, device).
    Raises :class:`AnnotationError` naming the entry and the value."""
    if not raw:
        return ()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AnnotationError(f"{ANNOTATION}={raw[:200]!r} is not JSON ({exc})") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{ANNOTATION}={raw[:200]!r} must be a JSON list of allocations")
    out: list[PartitionAllocation] = []
    seen: set[tuple[int, int]] = set()
    for i, entry in enumerate(data):
        where = f"entry {i}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{ANNOTATION} {where}={entry!r} must be an object")
        placement = entry.get("placement")
        if not isinstance(placement, dict):
            raise AnnotationError(f"{ANNOTATION} {where}: placement={placement!r} must be an object {{start, size}}")
        container = _uint(entry, "containerIndex", where)
        device = _uint(entry, "deviceIndex", where)
        start, size = _uint(placement, "start", where), _uint(placement, "size", where)
        instance_id = _uint(entry, "gpuInstanceID", where, optional=True)
        compute_id = _uint(entry, "computeInstanceID", where, optional=True)
        uuid = entry.get(INSTANCE_UUID_KEY) or ""
        parent, profile = entry.get("gpuUUID"), entry.get("profile")
        if not isinstance(uuid, str) or not isinstance(parent, str) or not isinstance(profile, str):
            raise AnnotationError(f"{ANNOTATION} {where}={entry!r}: gpuUUID, profile and {INSTANCE_UUID_KEY} must be strings")
        if len([x for x in (uuid or None, instance_id, compute_id) if x is not None]) not in (0, 3):
            raise AnnotationError(
                f"{ANNOTATION} {where}={entry!r} has a partial runtime identity (all of {INSTANCE_UUID_KEY}, gpuInstanceID, computeInstanceID or none)"
            )
        assert container is not None and device is not None and start is not None and size is not None
        try:
            instance = PartitionInstance(device, parent, profile, start, size, uuid, instance_id, compute_id)
        except ValidationError as exc:
            raise AnnotationError(f"{ANNOTATION} {where} is incomplete: {exc}") from None
        if (container, device) in seen:
            raise AnnotationError(f"{ANNOTATION} {where}: a second allocation for container {container} device {device}")
        seen.add((container, device))
        out.append(PartitionAllocation(container, instance))
    return tuple(out)


def encode(allocations: Iterable[PartitionAllocation]) -> str:
    """HAMi's JSON list, ordered by container then device; the runtime keys only when realized."""
    out = []
    for a in sorted(allocations, key=lambda a: (a.container_index, a.instance.device_index)):
        p = a.instance
        entry: dict[str, Any] = {
            "containerIndex": a.container_index,
            "deviceIndex": p.device_index,
            "gpuUUID": p.device,
            "profile": p.profile,
            "placement": {"start": p.placement_start, "size": p.placement_size},
        }
        if p.realized:
            entry.update({INSTANCE_UUID_KEY: p.uuid, "gpuInstanceID": p.instance_id, "computeInstanceID": p.compute_instance_id})
        out.append(entry)
    return json.dumps(out, separators=(",", ":"))


def with_container(raw: str | None, container_index: int, instances: Iterable[PartitionInstance]) -> str:
    """The annotation after one container's Allocate: its earlier entries replaced by ``instances``
    (kubelet retries Allocate), every other container's kept. An unreadable earlier value is
    replaced (it could not be used by anyone) — the caller logs it."""
    try:
        kept = [a for a in decode(raw) if a.container_index != container_index]
    except AnnotationError:
        kept = []
    return encode([*kept, *(PartitionAllocation(container_index, p) for p in instances)])
