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


def nearest_kind(table: Mapping[str, Chip], name: str) -> str:
    """The known chip whose npu-smi names share the longest prefix with ``name`` (table order breaks
    ties): the vendor key an unknown chip is listed under, since every device must belong to one of
    the backend's kinds. Its ``type`` and reason carry npu-smi's own name."""

    def prefix(a: str, b: str) -> int:
        return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))

    def shared(chip: Chip) -> int:
        return max(prefix(name, n) for n in chip.npu_smi_names)

    return max(table.values(), key=shared).vendor


def unknown_chip_reason(name: str, table: Mapping[str, Chip]) -> str:
    names = sorted({n for chip in table.values() for n in chip.npu_smi_names})
    return (
        f"unknown chip {name!r}: no entry of the Ascend chip table lists it; add {name!r} to the npuSmiNames of its chip "
        f"in a templates_file (ascend config; shape of hami_ascend/templates.yaml) if it is one of the known kinds "
        f"(known names: {', '.join(names)})"
    )


def from_npu_smi(text_source: NpuSmi, config: Mapping[str, Any], node_name: str) -> list[PhysicalDevice]:
    """Every chip ``npu-smi info`` names: known chips advertised; unknown chips and chips whose row
    could not be read returned unadvertised with the reason (``hami devices`` lists them, the agent
    logs each once). Unreadable lines that name no chip (an elided ``...``) are warnings."""
    table = chip_table(config)
    info = text_source.info()
    explained = {f"line {u.problem_line}:" for u in info.unread}
    for problem in info.problems:
        if not any(problem.startswith(e) for e in explained):  # the others are listed as unadvertised chips
            log.warning("event=ascend_npu_smi_unreadable node=%s %s", node_name, problem)
    devices = []
    for row in info.chips:
        chip = classify(table, row.name, row.memory_total)
        phy = row.phy_id if row.phy_id is not None else row.npu_id
        attributes = {
            "card": row.npu_id,
            "chip": row.chip_id,
            "phy_id": phy,
            "name": row.name,
            "health": row.health,
            "bus_id": row.bus_id,
            "hbm": row.memory_total,
        }
        if chip is None:
            vendor = nearest_kind(table, row.name)
            devices.append(
                PhysicalDevice(
                    id=f"{vendor}-{node_name}-{phy}",
                    vendor=vendor,
                    type=row.name,
                    memory=row.memory_total,
                    index=phy,
                    healthy=row.health in HEALTHY,
                    attributes=attributes,
                    advertised=False,
                    reason=unknown_chip_reason(row.name, table),
                )
            )
            continue
        devices.append(
            PhysicalDevice(
                id=f"{chip.vendor}-{node_name}-{phy}",
                vendor=chip.vendor,
                type=chip.vendor,
                memory=min(chip.memory, row.memory_total) if row.memory_total else chip.memory,
                index=phy,
                healthy=row.health in HEALTHY,
                attributes={**attributes, "ring": ring_of(chip, phy, row.npu_id)},
            )
        )
    for unread in info.unread:
        chip = classify(table, unread.name, 0)
        vendor = chip.vendor if chip is not None else nearest_kind(table, unread.name)
        devices.append(
            PhysicalDevice(
                id=f"{vendor}-{node_name}-npu{unread.npu_id}-line{unread.line}",
                vendor=vendor,
                type=unread.name,
                memory=0,
                index=unread.npu_id,
                healthy=unread.health in HEALTHY,
                attributes={"card": unread.npu_id, "name": unread.name, "health": unread.health},
                advertised=False,
                reason=unread.why if chip is not None else f"{unread.why}; {unknown_chip_reason(unread.name, table)}",
            )
        )
    unadvertised = sum(not d.advertised for d in devices)
    log.info("event=ascend_discovered node=%s chips=%d unadvertised=%d", node_name, len(devices), unadvertised)
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
