"""This node's Ascend chips: from the node inventory when one is configured (sandbox, simulator),
else from ``npu-smi info``.

Every device carries the facts the runtime hooks need later: card (``-i``), chip (``-c``), physical
id (``/dev/davinci<N>``, vNPU id range), HCCS ring or 910C module, and whether it is simulated (no
vNPU is created on a simulated device). ``remember``/``facts`` keep them per device id for
``hami_prepare`` and ``hami_container_edits``, which only see grants.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from hami.sdk import (
    INVENTORY_ENV,
    BackendError,
    PhysicalDevice,
    inventory_devices,
    load_inventory,
)

from hami_ascend.chips import Chip, chip_table, classify
from hami_ascend.npusmi import HEALTHY, NpuSmi

log = logging.getLogger(__name__)

_FACTS: dict[str, Mapping[str, Any]] = {}
_LOCK = threading.Lock()


def ring_of(chip: Chip, phy_id: int, card: int) -> str:
    """The HCCS group a chip belongs to: ring ``phy_id // ringSize`` (HAMi: chips 0-3 and 4-7), the
    card for 910C modules, nothing for chips without HCCS."""
    if chip.hccs == "ring":
        return str(phy_id // chip.ring_size)
    if chip.hccs == "module":
        return str(card)
    return ""


def _simulated(device: PhysicalDevice, table: Mapping[str, Chip]) -> PhysicalDevice:
    """An inventory device with the facts discovery would have found (index = physical id)."""
    attributes = dict(device.attributes)
    phy = int(attributes.get("phy_id", device.index))
    chip = table.get(device.vendor)
    card = int(attributes.get("card", phy // 2 if chip is not None and chip.hccs == "module" else phy))
    attributes.setdefault("phy_id", phy)
    attributes.setdefault("card", card)
    attributes.setdefault("chip", phy % 2 if chip is not None and chip.hccs == "module" else 0)
    if chip is not None:
        attributes.setdefault("ring", ring_of(chip, phy, card))
    attributes["simulated"] = True
    return PhysicalDevice(
        id=device.id, vendor=device.vendor, type=device.type, memory=device.memory, index=device.index,
        cores=device.cores, numa=device.numa, healthy=device.healthy, attributes=attributes,
    )


def from_npu_smi(text_source: NpuSmi, config: Mapping[str, Any], node_name: str) -> list[PhysicalDevice]:
    """Chips of known kinds from ``npu-smi info``; unknown chips and unreadable lines are warnings."""
    table = chip_table(config)
    info = text_source.info()
    for problem in info.problems:
        log.warning("event=ascend_npu_smi_unreadable node=%s %s", node_name, problem)
    devices = []
    for row in info.chips:
        chip = classify(table, row.name, row.memory_total)
        if chip is None:
            log.warning("event=ascend_unknown_chip node=%s name=%r line=%d npu=%d chip=%d known=%s", node_name, row.name, row.line, row.npu_id, row.chip_id, ",".join(sorted(table)))
            continue
        phy = row.phy_id if row.phy_id is not None else row.npu_id
        devices.append(
            PhysicalDevice(
                id=f"{chip.vendor}-{node_name}-{phy}",
                vendor=chip.vendor,
                type=chip.vendor,
                memory=min(chip.memory, row.memory_total) if row.memory_total else chip.memory,
                index=phy,
                healthy=row.health in HEALTHY,
                attributes={
                    "card": row.npu_id, "chip": row.chip_id, "phy_id": phy, "name": row.name, "health": row.health,
                    "bus_id": row.bus_id, "hbm": row.memory_total, "ring": ring_of(chip, phy, row.npu_id),
                },
            )
        )
    return devices


def discover(config: Mapping[str, Any], node_name: str, vendors: Sequence[str]) -> list[PhysicalDevice]:
    """Inventory first when configured; else npu-smi; no npu-smi is no devices, not an error."""
    table = chip_table(config)
    simulated = inventory_devices(config, node_name, vendors)
    if simulated or config.get("inventory") or os.environ.get(INVENTORY_ENV):
        devices = [_simulated(d, table) for d in simulated]
    else:
        smi = NpuSmi.from_config(config)
        if not smi.available():
            log.info("event=ascend_no_npu_smi node=%s executable=%s", node_name, smi.executable)
            return []
        try:
            devices = from_npu_smi(smi, config, node_name)
        except BackendError as exc:
            log.warning("event=ascend_discovery_failed node=%s error=%r", node_name, str(exc))
            return []
    remember(devices)
    return devices


def remember(devices: Sequence[PhysicalDevice]) -> None:
    with _LOCK:
        for device in devices:
            _FACTS[device.id] = {**device.attributes, "vendor": device.vendor, "memory": device.memory}


def facts(device_id: str, config: Mapping[str, Any], node_name: str = "") -> Mapping[str, Any]:
    """What discovery found about ``device_id``; re-discovers once if it is not known yet."""
    with _LOCK:
        found = _FACTS.get(device_id)
    if found is None:
        vendors = tuple(chip_table(config))
        node = node_name or str(config.get("node_name") or os.environ.get("NODE_NAME", ""))
        if config.get("inventory") or os.environ.get(INVENTORY_ENV):
            path = config.get("inventory") or os.environ[INVENTORY_ENV]
            nodes = [n.name for n in load_inventory(path) if any(d.id == device_id for d in n.devices)]
            node = nodes[0] if nodes else node
        discover(config, node, vendors)
        with _LOCK:
            found = _FACTS.get(device_id)
    if found is None:
        raise BackendError(f"device {device_id!r} is not an Ascend chip discovered on this node")
    return found
