"""Driving the node agent without the extender: what filter and bind do to a pod, and a recording backend.

:func:`schedule_pod` does what the scheduler extender's filter and bind do to a pod (signed
allocation annotations, node lock, ``bind-phase=allocating``, Binding) through the real client,
so agent tests do not depend on the extender and can later swap it in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from hami.backendkit.standard import StandardBackend
from hami.errors import BackendError
from hami.plugin import hookimpl
from hami.plugin.manager import BackendManager
from hami.plugin.model import (
    BackendInfo,
    ContainerEdits,
    DeviceNode,
    Grant,
    GrantedDevice,
    HealthEvent,
    Mount,
    NodeContext,
    PhysicalDevice,
)
from hami.wire.allocation import Allocation
from hami.wire.annotations import BIND_PHASE, BIND_TIME, BindPhase
from hami.wire.nodelock import NodeLock
from hami.wire.signing import SigningKeys

FAST_OPTIONS: dict[str, Any] = {
    "register_interval": 30.0,
    "health_interval": 0.05,
    "kubelet_poll_interval": 0.05,
    "retry_initial": 0.05,
    "retry_max": 0.5,
    "request_timeout": 5.0,
}


class RecordingBackend(StandardBackend):
    """A standard backend with runtime hooks that record their calls, for agent tests.

    Edits: ``HAMI_VISIBLE_DEVICES`` (granted ids), ``HAMI_DEVICE_MEMORY_LIMIT_<i>`` (``<MiB>m``),
    ``HAMI_CONTAINER``; a read-only mount of the first declared host path; a device node
    ``/dev/<vendor>-<i>`` when ``/dev`` is declared; CDI ``hami.test/device=<id>``; annotation
    ``hami.io/test-container``. Set ``fail_prepare`` to a message to make ``hami_prepare`` raise a
    ``BackendError`` with it, or to an exception to raise that one (a host failure); ``seen`` records the
    ``GrantedDevice`` lists and node contexts the runtime hooks got. Set
    ``unhealthy[device_id] = reason`` to make ``hami_device_health`` report a device unhealthy (remove
    the entry to report it healthy again).
    """

    def __init__(self, info: BackendInfo) -> None:
        super().__init__(info)
        self.prepared: list[tuple[str, tuple[Grant, ...]]] = []
        self.released: list[tuple[str, str, tuple[Grant, ...]]] = []
        self.fail_prepare: str | BaseException | None = None
        self.seen: list[tuple[str, tuple[GrantedDevice, ...], NodeContext]] = []
        self.unhealthy: dict[str, str] = {}
        self._reported: dict[str, bool] = {}

    @hookimpl
    def hami_container_edits(
        self,
        grants: Sequence[Grant],
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        node: NodeContext,
    ) -> ContainerEdits:
        name = str(container.get("name"))
        self.seen.append(("hami_container_edits", tuple(devices), node))
        env = {"HAMI_VISIBLE_DEVICES": ",".join(g.id for g in grants), "HAMI_CONTAINER": name}
        env.update({f"HAMI_DEVICE_MEMORY_LIMIT_{i}": f"{g.memory}m" for i, g in enumerate(grants)})
        paths = self.info.host_paths
        mounts = [Mount(paths[0], paths[0], read_only=True)] if paths and paths[0] != "/dev" else []
        nodes = (
            [DeviceNode(f"/dev/{g.vendor.lower()}-{i}", f"/dev/{g.vendor.lower()}-{i}") for i, g in enumerate(grants)]
            if "/dev" in paths
            else []
        )
        return ContainerEdits(
            env=env,
            mounts=mounts,
            devices=nodes,
            cdi_devices=[f"hami.test/device={g.id}" for g in grants],
            annotations={"hami.io/test-container": name},
        )

    @hookimpl
    def hami_prepare(
        self,
        grants: Sequence[Grant],
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        node: NodeContext,
    ) -> None:
        self.seen.append(("hami_prepare", tuple(devices), node))
        if isinstance(self.fail_prepare, BaseException):
            raise self.fail_prepare
        if self.fail_prepare:
            raise BackendError(self.fail_prepare)
        self.prepared.append((str(container.get("name")), tuple(grants)))

    @hookimpl
    def hami_release(self, grants: Sequence[Grant], pod: Mapping[str, Any], container: Mapping[str, Any], node: NodeContext) -> None:
        self.released.append((str(pod["metadata"]["name"]), str(container.get("name")), tuple(grants)))

    @hookimpl
    def hami_device_health(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any]) -> list[HealthEvent]:
        events = []
        for device in devices:
            healthy = device.id not in self.unhealthy
            if self._reported.get(device.id, True) != healthy:
                events.append(HealthEvent(device.id, healthy, self.unhealthy.get(device.id, "recovered")))
            self._reported[device.id] = healthy
        return events


def schedule_pod(
    core_v1: Any,
    manager: BackendManager,
    namespace: str,
    name: str,
    node: str,
    devices: Mapping[str, Sequence[Sequence[Grant]]],
    keys: SigningKeys | None,
    *,
    lock: bool = True,
    bind: bool = True,
    now: float | None = None,
) -> dict[str, str]:
    """Write the extender's allocation for pod ``namespace/name`` on ``node`` and bind it; returns the annotations.

    ``devices`` maps a vendor key to one grant list per container (init containers first), as
    :class:`hami.wire.allocation.Allocation` takes it.
    """
    now = time.time() if now is None else now
    pod = core_v1.read_namespaced_pod(name, namespace)
    allocation = Allocation(node, {vendor: tuple(tuple(c) for c in per) for vendor, per in devices.items()})
    annotations = allocation.annotations(manager.kinds, pod.metadata.uid, now, keys)
    core_v1.patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}})
    if lock:
        NodeLock(core_v1).acquire(node, namespace, name, timeout=5.0)
    core_v1.patch_namespaced_pod(
        name, namespace, {"metadata": {"annotations": {BIND_PHASE: BindPhase.ALLOCATING, BIND_TIME: str(int(now))}}}
    )
    if bind:
        core_v1.create_namespaced_pod_binding(
            name, namespace, {"metadata": {"name": name}, "target": {"kind": "Node", "name": node}}, _preload_content=False
        )
    return annotations


def pod_manifest(
    name: str, containers: Mapping[str, Mapping[str, str]], *, init: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, Any]:
    """A pod whose containers (name → limits) ask for devices; ``init`` adds init containers."""

    def spec(items: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
        return [{"name": c, "image": "busybox", "resources": {"limits": dict(limits)} if limits else {}} for c, limits in items.items()]

    body: dict[str, Any] = {"metadata": {"name": name}, "spec": {"containers": spec(containers)}}
    if init:
        body["spec"]["initContainers"] = spec(init)
    return body
