"""Cambricon MLUs as hami devices: cnmon on a real node, the node inventory elsewhere.

Ids follow HAMi (``<node>-cambricon-mlu-<index>``) so ``cambricon.com/use-gpuuuid`` annotations
written for HAMi keep working; the PCI bus id and firmware go into the attributes. MLULink peers
come from the inventory attribute ``mlulink`` (peer card indexes, one entry per link) or the config
key ``mlulink`` (``{index: [peer indexes]}``): cnmon's default table does not print them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hami.sdk import BackendError, NodeContext, PhysicalDevice, ToolNotFound, inventory_devices
from hami_cambricon import cnmon

log = logging.getLogger(__name__)

VENDOR = "MLU"


def _table(config: Mapping[str, Any]) -> list[cnmon.Card] | None:
    try:
        text = cnmon.run([str(config.get("cnmon", "cnmon"))], float(config.get("cnmon_timeout", cnmon.DEFAULT_TIMEOUT)))
    except ToolNotFound as exc:
        log.info("event=cnmon_absent error=%r", str(exc))
        return None
    except BackendError as exc:
        log.warning("event=cnmon_failed error=%r", str(exc))
        return None
    return cnmon.parse_table(text)


def _no_memory_reason(card: cnmon.Card) -> str:
    shown = f"its Memory-Usage cell reads {card.memory_text!r}" if card.memory_text else "its memory line is missing"
    return f"memory unknown: cnmon printed no memory total for card {card.index} ({shown}); the card is listed, not advertised"


def cnmon_devices(config: Mapping[str, Any], node_name: str) -> list[PhysicalDevice]:
    cards = _table(config)
    devices = []
    for card in cards or []:
        devices.append(
            PhysicalDevice(
                id=f"{node_name}-cambricon-mlu-{card.index}",
                vendor=VENDOR,
                type=card.model,
                memory=card.memory_total or 0,
                index=card.index,
                advertised=bool(card.memory_total),
                reason="" if card.memory_total else _no_memory_reason(card),
                attributes={"pci_bus_id": card.pci_bus_id or "", "firmware": card.firmware, "cnmon": card.version or ""},
            )
        )
    unsized = sum(not d.advertised for d in devices)
    log.info("event=mlu_discovered node=%s devices=%d unadvertised=%d", node_name, len(devices), unsized)
    return devices


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    if node.simulated:
        return inventory_devices(config, node.name, [VENDOR])
    return cnmon_devices(config, node.name)


def present_indexes(config: Mapping[str, Any]) -> set[int] | None:
    cards = _table(config)
    return None if cards is None else {c.index for c in cards}


def mlulinks(physical: Sequence[PhysicalDevice], config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Each card's MLULink peers by device id (a peer listed n times has n links)."""
    by_index = {d.index: d.id for d in physical}
    configured = {int(k): v for k, v in (config.get("mlulink") or {}).items()}
    links: dict[str, list[str]] = {}
    for device in physical:
        peers = device.attributes.get("mlulink", configured.get(device.index, ()))
        ids = [by_index[p] for p in peers if p in by_index]
        if ids:
            links[device.id] = ids
    return links
