"""Devices used whole: one slot each (HAMi registers them with Count 1), picked by HAMi's uuid
annotations, handed to the container as a list of indexes in one environment variable that the
vendor's container runtime or device plugin reads. Nothing is shared, so nothing needs enforcing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hami.backendkit import selectors
from hami.backendkit.standard import StandardBackend
from hami.plugin import hookimpl
from hami.plugin.model import ContainerEdits, DeviceNode, DeviceRequest, DeviceUsage, GrantedDevice, PhysicalDevice, SchedulableDevice


def one_slot(device: PhysicalDevice) -> SchedulableDevice:
    """The device as one schedulable slot with all its memory and cores."""
    return SchedulableDevice(
        id=device.id, vendor=device.vendor, type=device.type, count=1, memory=device.memory, cores=100,
        index=device.index, numa=device.numa, healthy=device.healthy,
    )  # fmt: skip


class WholeDeviceBackend(StandardBackend):
    """A :class:`StandardBackend` for whole devices: a kind declaring only a count resource already asks
    for whole devices (100 % of the memory); this adds the one-slot split, the uuid selectors
    (``uuid_keys``: the pod annotations listing ids to use and not to use) and the container's
    ``visible_env`` with the granted indexes plus :meth:`device_nodes`. Override a hook (re-marked with
    ``@hookimpl``) for kinds that differ."""

    uuid_keys: tuple[str, str] = ("", "")
    visible_env: str = ""

    def device_nodes(self, devices: Sequence[GrantedDevice]) -> list[DeviceNode]:
        """Host device files the container needs (none: the vendor's runtime adds them)."""
        return []

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        return one_slot(device)

    @hookimpl
    def hami_device_fits(
        self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> str | None:
        """HAMi's uuid selectors; all arguments named so tests may call it positionally as the spec orders them."""
        return selectors.pod_uuid_reason(pod, device.device.id, self.uuid_keys)

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice]) -> ContainerEdits:
        env = {self.visible_env: ",".join(str(d.index) for d in devices)} if self.visible_env else {}
        return ContainerEdits(env=env, devices=self.device_nodes(devices))
