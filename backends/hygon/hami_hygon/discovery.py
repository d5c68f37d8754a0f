"""Hygon DCUs as hami devices: from hy-smi on a real node, from the node inventory elsewhere.

hy-smi gives the device list (default table), PCI bus ids and serial numbers (``--showbus``) and
compute units (``virtual -show-device-info``). Memory comes from the first source that answers for a
device: ``virtual -show-device-info`` (needs the virtualization module), ``--showmeminfo vram``
(total), ``--showmemavailable``, then the config's ``memory_mib``; the model from ``--showproductname``,
then ``-a`` (``Card Series``), then the config's ``device_type``. A later query runs only for the
devices the earlier ones left unknown. Only the table is required; every other query that fails
costs its fields and a warning. A device whose memory stays unknown is returned unadvertised, with
what to do, so ``hami devices`` shows it. Ids follow HAMi's dcu-vgpu-device-plugin (``DCU-<serial>``)
so pods' ``hygon.com/use-gpuuuid`` keep working.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hami.sdk import BackendError, NodeContext, PhysicalDevice, ToolNotFound, inventory_devices
from hami_hygon import hysmi

log = logging.getLogger(__name__)

VENDOR = "DCU"
HYGON_PCI_VENDOR = "0x1d94"
_MIB = 1 << 20
_UNSAFE_ID = re.compile(r"[,:;\s]")
_DRM_NAME = re.compile(r"(card|renderD)(\d+)")
UNKNOWN_MEMORY = (
    "memory unknown: hy-smi gave none (virtual -show-device-info, --showmeminfo vram, --showmemavailable); "
    "set memory_mib in the hygon config or install the virtualization module"
)


def _query(tool: str, args: list[str], timeout: float) -> str | None:
    try:
        return hysmi.run([tool, *args], timeout)
    except ToolNotFound as exc:
        log.info("event=hysmi_absent args=%r error=%r", " ".join(args), str(exc))
        return None
    except BackendError as exc:
        log.warning("event=hysmi_query_failed args=%r error=%r", " ".join(args), str(exc))
        return None


def drm_nodes(sysfs_root: str) -> list[tuple[str, str]]:
    """(cardN, renderDN) of Hygon devices in PCI order, as HAMi's plugin pairs them; [] when unknown."""
    drm = Path(sysfs_root) / "class" / "drm"
    cards: list[str] = []
    renders: list[str] = []
    try:
        named = [(m.group(1), int(m.group(2)), p) for p in drm.iterdir() if (m := _DRM_NAME.fullmatch(p.name))]
    except OSError:
        return []
    for _, _, entry in sorted(named, key=lambda t: (t[0], t[1])):
        try:
            vendor = (entry / "device" / "vendor").read_text().strip()
        except OSError:
            continue
        if vendor.lower() == HYGON_PCI_VENDOR:
            (cards if entry.name.startswith("card") else renders).append(entry.name)
    if len(cards) != len(renders):
        log.warning("event=hygon_drm_mismatch cards=%s renders=%s", cards, renders)
        return []
    return list(zip(cards, renders, strict=True))


def hysmi_devices(config: Mapping[str, Any], node_name: str) -> list[PhysicalDevice]:
    """This node's DCUs according to hy-smi; [] (logged) when the tool is missing or fails."""
    tool = str(config.get("hy_smi", "hy-smi"))
    timeout = float(config.get("hy_smi_timeout", hysmi.DEFAULT_TIMEOUT))
    table_text = _query(tool, [], timeout)
    if table_text is None:
        return []
    rows = hysmi.parse_table(table_text)
    bus_text = _query(tool, ["--showbus"], timeout)
    buses = {b.index: b for b in hysmi.parse_showbus(bus_text)} if bus_text else {}
    virtual_text = _query(tool, ["virtual", "-show-device-info"], timeout)
    sizes = {}
    for info in hysmi.parse_virtual_info(virtual_text) if virtual_text else []:
        sizes[info.actual_device if info.actual_device is not None else info.index] = info
    indexes = [row.index for row in rows]
    memory = {i: b // _MIB for i in indexes if i in sizes and (b := sizes[i].memory_bytes)}
    for args, key in ((["--showmeminfo", "vram"], hysmi.MEMINFO_TOTAL), (["--showmemavailable"], hysmi.MEM_AVAILABLE)):
        if all(i in memory for i in indexes):
            break
        text = _query(tool, args, timeout)
        for index, mib in (hysmi.parse_memory_mib(text, key) if text else {}).items():
            if mib > 0:
                memory.setdefault(index, mib)
    names: dict[int, str] = {}
    for args in (["--showproductname"], ["-a"]):
        if all(i in names for i in indexes):
            break
        text = _query(tool, args, timeout)
        for index, series in (hysmi.parse_indexed_values(text, "Card Series") if text else {}).items():
            if hysmi.model_name(series) and series.upper() != "N/A":
                names.setdefault(index, hysmi.model_name(series))
    drm = drm_nodes(str(config.get("sysfs_root", "/sys")))
    devices = []
    for row in rows:
        index = row.index
        size = sizes.get(index)
        mib = int(memory.get(index) or config.get("memory_mib") or 0)
        units = size.compute_units if size and size.compute_units else int(config.get("compute_units", 60))
        bus = buses.get(index)
        if bus and bus.serial:
            device_id = f"DCU-{bus.serial}"
        elif bus:
            device_id = "DCU-" + _UNSAFE_ID.sub("-", bus.pci_bus_id)
        else:
            device_id = f"DCU-{node_name}-{index}"
        model = names.get(index)
        card, render = drm[index] if index < len(drm) else (f"card{index}", f"renderD{128 + index}")
        devices.append(
            PhysicalDevice(
                id=device_id,
                vendor=VENDOR,
                type=f"DCU-{model}" if model else str(config.get("device_type", "DCU")),
                memory=mib,
                index=index,
                advertised=bool(mib),
                reason="" if mib else UNKNOWN_MEMORY,
                attributes={
                    "pci_bus_id": bus.pci_bus_id if bus else "",
                    "serial": (bus.serial or "") if bus else "",
                    "compute_units": units,
                    "virtualization": size is not None,  # the virtualization module answered: it enforces vDCU limits
                    "card": card,
                    "render": render,
                },
            )
        )
    unsized = sum(not d.advertised for d in devices)
    log.info("event=hygon_discovered node=%s devices=%d unadvertised=%d", node_name, len(devices), unsized)
    return devices


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    """The inventory on a simulated node (sandbox, tests, simulator), else hy-smi."""
    if node.simulated:
        return inventory_devices(config, node.name, [VENDOR])
    return hysmi_devices(config, node.name)


def present_indexes(config: Mapping[str, Any]) -> set[int] | None:
    """Device indexes hy-smi lists now (health); None when hy-smi cannot be asked."""
    text = _query(str(config.get("hy_smi", "hy-smi")), [], float(config.get("hy_smi_timeout", hysmi.DEFAULT_TIMEOUT)))
    return None if text is None else {row.index for row in hysmi.parse_table(text)}
