"""Biren GPUs: whole devices (``birentech.com/gpu``), as HAMi v2.10 models them.

Read from upstream pkg/device/biren/device.go (v2.10.0) and Project-HAMi/biren-device-plugin
(pkg/brgpu/register.go, plugin.go, runc.go): the node registers ``hami.io/node-biren-register``
(JSON, type ``Biren``, one slot per device), a request is a count of whole devices (HAMi asks
100 % of the memory and no cores), ``birentech.com/use-gpuuuid``/``nouse-gpuuuid`` select by id,
the allocation is ``hami.io/Biren-devices-to-allocate``/``-allocated``. The device plugin names
devices ``card_<N>``, exposes ``/dev/biren/card_<N>`` and sets ``BR_PHY_CARDS``; device ids here are
brsmi's uuid (``card_<N>`` repeats on every node, and a device id must be unique in the cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hami.sdk import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    DeviceKind,
    DeviceNode,
    Enforcement,
    GrantedDevice,
    NodeContext,
    PhysicalDevice,
    ResourceNames,
    WholeDeviceBackend,
    hookimpl,
    run_tool,
    tool_devices,
    whole_device_enforcement,
)

log = logging.getLogger(__name__)

KIND = DeviceKind(
    vendor="Biren",
    resources=ResourceNames(count="birentech.com/gpu"),
    annotations=AnnotationKeys.hami("hami.io/node-biren-register", "hami.io/node-handshake-biren", "hami.io/Biren"),
)
USE_UUID, NOUSE_UUID = "birentech.com/use-gpuuuid", "birentech.com/nouse-gpuuuid"
ARGS = ("gpu", "--query-gpu=index,name,uuid,memory.total", "--format=csv,noheader,nounits")

INFO = BackendInfo(
    name="biren",
    kinds=[KIND],
    description="Biren GPUs, whole devices (no sharing: Biren's stack enforces no per-container limits)",
    default_config={"brsmi": "brsmi", "brsmi_timeout": 10.0},
    host_paths=("/dev/biren",),
)


def parse(text: str) -> list[tuple[int, str, str, int | None]]:
    """``brsmi gpu --query-gpu=index,name,uuid,memory.total --format=csv,noheader,nounits`` rows:
    (index, name, uuid, MiB or None); lines that do not start with an index are skipped (messages), a
    row that does but lacks fields is kept with memory None (listed, not advertised)."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if not cells[0].isdecimal():
            continue
        if len(cells) != 4:
            cells = [cells[0], "", "", ""]
        memory = cells[3].split()[0] if cells[3] else ""
        rows.append((int(cells[0]), cells[1] or "Biren GPU", cells[2], int(memory) if memory.isdecimal() else None))
    return rows


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    def read() -> list[PhysicalDevice]:
        rows = parse(run_tool([str(config["brsmi"]), *ARGS], float(config["brsmi_timeout"]), missing_hint="is the Biren driver installed?"))
        return [
            PhysicalDevice(
                id=uuid or f"{node.name}-biren-{index}",
                vendor=KIND.vendor,
                type=name,
                memory=memory or 0,
                index=index,
                advertised=memory is not None,
                reason="" if memory is not None else "memory unknown: brsmi printed no memory.total for this GPU",
                attributes={"card": f"card_{index}"},
            )
            for index, name, uuid, memory in rows
        ]

    return tool_devices(node, config, [KIND.vendor], read, tool="brsmi", log=log)


class BirenBackend(WholeDeviceBackend):
    """One slot per GPU (HAMi registers Count 1: a Biren GPU is never shared), uuid selectors; the device
    plugin's card names in ``BR_PHY_CARDS`` and their device files."""

    uuid_keys = (USE_UUID, NOUSE_UUID)

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """A Biren GPU is one container's alone: nothing shared, nothing to enforce."""
        return whole_device_enforcement(devices, [KIND.vendor], node)

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discover(config, node)

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice]) -> ContainerEdits:
        cards = [f"card_{d.index}" for d in devices]
        return ContainerEdits(
            env={"BR_PHY_CARDS": ",".join(cards)}, devices=[DeviceNode(f"/dev/biren/{c}", f"/dev/biren/{c}") for c in cards]
        )


plugin = BirenBackend(INFO)
