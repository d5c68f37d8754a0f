"""The allocation a pod carries from the scheduler to the node agent, as pod annotations.

For every vendor key the scheduler writes ``<prefix>-devices-allocated`` (the record, used for usage
accounting) and ``<prefix>-devices-to-allocate`` (the work list the agent empties container by
container), both in HAMi's encoding with one entry per container, init containers first; plus
``hami.io/vgpu-node``, ``hami.io/vgpu-time`` and the allocation signature (:mod:`hami.wire.signing`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from hami.errors import AnnotationError
from hami.plugin.model import ALLOCATED_SUFFIX, DeviceKind, Grant, frozen_map
from hami.wire.annotations import ASSIGNED_NODE, SCHEDULE_TIME, SIGNATURE
from hami.wire.codec import PodDevices, decode_pod_devices, encode_pod_devices
from hami.wire.signing import SignatureError, SigningKeys, sign, verify


def ordered_containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Init containers, then app containers: the order of every per-container annotation entry."""
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


@attrs.frozen
class Allocation:
    """What the scheduler granted a pod on one node: per vendor key, per container, the grants."""

    node: str
    devices: Mapping[str, PodDevices] = attrs.field(converter=frozen_map, hash=False)

    def annotations(self, kinds: Mapping[str, DeviceKind], pod_uid: str, now: float, keys: SigningKeys | None) -> dict[str, str]:
        """The pod annotations that record this allocation (signed when keys are given)."""
        out = {ASSIGNED_NODE: self.node, SCHEDULE_TIME: str(int(now))}
        allocated = {}
        for vendor, containers in sorted(self.devices.items()):
            kind = kinds[vendor]
            encoded = encode_pod_devices(containers)
            out[kind.annotations.to_allocate] = encoded
            allocated[kind.annotations.allocated] = encoded
        out.update(allocated)
        if keys is not None:
            out[SIGNATURE] = sign(keys, pod_uid, self.node, allocated)
        return out


def allocation_records(annotations: Mapping[str, str]) -> dict[str, str]:
    """Every ``…-devices-allocated`` annotation on a pod, of any vendor: what the signature covers."""
    return {k: v for k, v in annotations.items() if k.endswith(ALLOCATED_SUFFIX)}


def read_allocated(annotations: Mapping[str, str], kinds: Mapping[str, DeviceKind]) -> dict[str, PodDevices]:
    """Per vendor key, the granted devices recorded on a pod (what usage accounting counts)."""
    found = {}
    for vendor, kind in kinds.items():
        text = annotations.get(kind.annotations.allocated)
        if text:
            found[vendor] = decode_pod_devices(text)
    return found


def verify_allocation(annotations: Mapping[str, str], kinds: Mapping[str, DeviceKind], keys: SigningKeys, pod_uid: str) -> None:
    """Refuse an allocation the scheduler did not write: a bad signature, or a work list that is not
    a prefix-emptied copy of the signed record."""
    verify(keys, annotations.get(SIGNATURE), pod_uid, annotations.get(ASSIGNED_NODE, ""), allocation_records(annotations))
    for kind in kinds.values():
        pending_text = annotations.get(kind.annotations.to_allocate)
        if not pending_text:
            continue
        record = decode_pod_devices(annotations.get(kind.annotations.allocated, ""))
        pending = decode_pod_devices(pending_text)
        if len(pending) != len(record) or any(p and p != r for p, r in zip(pending, record, strict=True)):
            raise SignatureError(
                f"{kind.annotations.to_allocate} differs from the signed {kind.annotations.allocated}: it was changed after scheduling"
            )


@attrs.frozen
class NextContainer:
    """The first container still waiting for ``vendor`` devices, and the work list without it."""

    index: int
    grants: tuple[Grant, ...]
    remaining: str


def next_container(annotations: Mapping[str, str], kind: DeviceKind) -> NextContainer | None:
    """HAMi's Allocate step: the first non-empty entry of ``…-devices-to-allocate``, or None."""
    text = annotations.get(kind.annotations.to_allocate)
    if not text:
        return None
    pending = decode_pod_devices(text)
    for index, grants in enumerate(pending):
        if grants:
            rest = [() if i == index else g for i, g in enumerate(pending)]
            return NextContainer(index, grants, encode_pod_devices(rest))
    return None


def is_fully_allocated(annotations: Mapping[str, str], kinds: Mapping[str, DeviceKind]) -> bool:
    """True when no vendor has a container left to allocate."""
    try:
        return all(next_container(annotations, kind) is None for kind in kinds.values())
    except AnnotationError:
        return False
