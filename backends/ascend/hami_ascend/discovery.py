"""This node's Ascend chips: from the node inventory on a simulated node (sandbox, simulator), else
from ``npu-smi info``.

Every device carries the facts the runtime hooks need later (they get them back with each grant):
card (``-i``), chip (``-c``), physical id (``/dev/davinci<N>``, vNPU id range), HCCS ring or 910C
module.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hami.sdk import BackendError, NodeContext, PhysicalDevice, inventory_devices
from hami_ascend.chips import Chip, chip_table, classify
from hami_ascend.npusmi import HEALTHY, NpuSmi

log = logging.getLogger(__name__)


def ring_of(chip: Chip, phy_id: int, card: int) -> str:
    """The HCCS group a chip belongs to: ring ``phy_id // ringSize`` (HAMi: chips 0-3 and 4-7), the
    card for 910C modules, nothing for chips without HCCS."""
    if chip.hccs == "ring":
        return str(phy_id // chip.ring_size)
    if chip.hccs == "module":
        return str(card)
    return ""


def _inventory_facts(device: PhysicalDevice, table: Mapping[str, Chip]) -> PhysicalDevice:
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
    return PhysicalDevice(
        id=device.id,
        vendor=device.vendor,
        type=device.type,
        memory=device.memory,
        index=device.index,
        cores=device.cores,
        numa=device.numa,
        healthy=device.healthy,
        attributes=attributes,
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
            log.warning(
                "event=ascend_unknown_chip node=%s name=%r line=%d npu=%d chip=%d known=%s",
                node_name,
                row.name,
                row.line,
                row.npu_id,
                row.chip_id,
                ",".join(sorted(table)),
            )
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
                    "card": row.npu_id,
                    "chip": row.chip_id,
                    "phy_id": phy,
                    "name": row.name,
                    "health": row.health,
                    "bus_id": row.bus_id,
                    "hbm": row.memory_total,
                    "ring": ring_of(chip, phy, row.npu_id),
                },
            )
        )
    return devices


def discover(config: Mapping[str, Any], node: NodeContext, vendors: Sequence[str]) -> list[PhysicalDevice]:
    """The inventory on a simulated node; else npu-smi; no npu-smi is no devices, not an error."""
    table = chip_table(config)
    if node.simulated:
        return [_inventory_facts(d, table) for d in inventory_devices(config, node.name, vendors)]
    smi = NpuSmi.from_config(config)
    if not smi.available():
        log.info("event=ascend_no_npu_smi node=%s executable=%s", node.name, smi.executable)
        return []
    try:
        return from_npu_smi(smi, config, node.name)
    except BackendError as exc:
        log.warning("event=ascend_discovery_failed node=%s error=%r", node.name, str(exc))
        return []
