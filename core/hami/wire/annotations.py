"""The pod and node annotations hami reads and writes (hami-compat.md), in one place.

Per-vendor keys (node registration, handshake, ``…-devices-to-allocate``, ``…-devices-allocated``)
come from each backend's :class:`hami.plugin.model.AnnotationKeys`; the keys here are vendor-neutral.
"""

from __future__ import annotations

from collections.abc import Iterable

from hami.plugin.model import DeviceKind
from hami.wire import partitions

# pod, written by the scheduler and the node agent
ASSIGNED_NODE = "hami.io/vgpu-node"
SCHEDULE_TIME = "hami.io/vgpu-time"
BIND_TIME = "hami.io/bind-time"
BIND_PHASE = "hami.io/bind-phase"
SIGNATURE = "hami.io/allocation-signature"

# pod, written by users
NODE_POLICY = "hami.io/node-scheduler-policy"
DEVICE_POLICY = "hami.io/gpu-scheduler-policy"
SCORING_WEIGHTS = "hami.io/device-scoring-weights"

# node
NODE_LOCK = "hami.io/mutex.lock"
DEVICE_CORDON = "hami.io/device-cordon"

HANDSHAKE_TIME_LAYOUT = "%Y-%m-%d %H:%M:%S"
"""Go's ``2006-01-02 15:04:05``, as in ``Requesting_<time>`` / ``Reported_<time>``."""


class BindPhase:
    ALLOCATING = "allocating"
    SUCCESS = "success"
    FAILED = "failed"


def system_pod_annotations(kinds: Iterable[DeviceKind]) -> frozenset[str]:
    """Pod annotations only hami may write: a user setting one at creation is forging an allocation."""
    # the partition instances the agent records at Allocate: a forged list would show in the metrics
    keys = {ASSIGNED_NODE, SCHEDULE_TIME, BIND_TIME, BIND_PHASE, SIGNATURE, partitions.ANNOTATION}
    for kind in kinds:
        keys |= {kind.annotations.to_allocate, kind.annotations.allocated}
    return frozenset(keys)
