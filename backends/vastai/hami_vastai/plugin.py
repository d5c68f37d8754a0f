"""Vastai accelerators: whole devices (``vastaitech.com/va``), as HAMi v2.10 models them.

Read from upstream pkg/device/vastai/device.go (v2.10.0): the node registers ``hami.io/node-va-register``
(JSON, type ``Vastai``, one slot per device), a request is a count of whole devices (100 % of the
memory, no cores), ``vastaitech.com/use-gpuuuid``/``nouse-gpuuuid`` select by id, the allocation is
``hami.io/Vastai-devices-to-allocate``/``-allocated``. The container gets ``VASTAI_VISIBLE_DEVICES``
(what Vastai's container runtime, ``--runtime=vastai``, reads to expose the devices).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from hami.sdk import (
    AnnotationKeys,
    BackendError,
    BackendInfo,
    DeviceKind,
    Enforcement,
    NodeContext,
    PhysicalDevice,
    ResourceNames,
    WholeDeviceBackend,
    hookimpl,
    run_tool,
    tool_devices,
    tool_json,
    whole_device_enforcement,
)

log = logging.getLogger(__name__)

KIND = DeviceKind(
    vendor="Vastai",
    resources=ResourceNames(count="vastaitech.com/va"),
    annotations=AnnotationKeys.hami("hami.io/node-va-register", "hami.io/node-handshake-va", "hami.io/Vastai"),
)
USE_UUID, NOUSE_UUID = "vastaitech.com/use-gpuuuid", "vastaitech.com/nouse-gpuuuid"
ARGS = ("getmem", "--display-format=json")
_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "kb": 1 << 10, "mib": 1 << 20, "mb": 1 << 20, "gib": 1 << 30, "gb": 1 << 30, "g": 1 << 30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

INFO = BackendInfo(
    name="vastai",
    kinds=[KIND],
    description="Vastai accelerators, whole devices (no sharing: Vastai's stack enforces no per-container limits)",
    default_config={"vasmi": "vasmi", "vasmi_timeout": 10.0},
    host_paths=("/dev",),
)


def _mib(value: Any) -> int | None:
    match = _SIZE.match(str(value))
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()]) >> 20


def parse(text: str) -> list[tuple[str, str, int | None]]:
    """``vasmi getmem --display-format=json``: ``{"elem": [{"pci_bus", "sn", "vals": {"Physical"|"Physical memory": {"value"}}}]}``
    as (pci bus, serial, MiB or None), in the tool's order."""
    data = tool_json(text, "vasmi")
    elems = data.get("elem") if isinstance(data, dict) else None
    if not isinstance(elems, list):
        raise BackendError(f"vasmi JSON has no 'elem' list: {text[:120]!r}")
    rows = []
    for entry in elems:
        elem = entry if isinstance(entry, dict) else {}  # listed, without figures: shown unadvertised
        vals = elem.get("vals")
        vals = vals if isinstance(vals, dict) else {}
        memory = next((v.get("value") for k in ("Physical", "Physical memory") if isinstance(v := vals.get(k), dict)), None)
        rows.append((str(elem.get("pci_bus", "")).lower(), str(elem.get("sn", "")), _mib(memory) if memory is not None else None))
    return rows


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    def read() -> list[PhysicalDevice]:
        rows = parse(
            run_tool([str(config["vasmi"]), *ARGS], float(config["vasmi_timeout"]), missing_hint="is the Vastai driver installed?")
        )
        return [
            PhysicalDevice(
                id=f"{node.name}-vastai-{index}",
                vendor=KIND.vendor,
                type="Vastai",
                memory=memory or 0,
                index=index,
                advertised=memory is not None,
                reason="" if memory is not None else "memory unknown: vasmi getmem printed no Physical memory for this device",
                attributes={"pci_bus": bus, "serial": serial},
            )
            for index, (bus, serial, memory) in enumerate(rows)
        ]

    return tool_devices(node, config, [KIND.vendor], read, tool="vasmi", log=log)


class VastaiBackend(WholeDeviceBackend):
    """One slot per device (HAMi registers each device, or die, with Count 1), uuid selectors,
    ``VASTAI_VISIBLE_DEVICES`` for Vastai's container runtime."""

    uuid_keys = (USE_UUID, NOUSE_UUID)
    visible_env = "VASTAI_VISIBLE_DEVICES"

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """A Vastai device is one container's alone: nothing shared, nothing to enforce."""
        return whole_device_enforcement(devices, [KIND.vendor], node)

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discover(config, node)


plugin = VastaiBackend(INFO)
