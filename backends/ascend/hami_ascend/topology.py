"""HCCS placement: multi-chip containers go on one ring (910A/910B) or on whole modules (910C).

The node agent publishes ``hami.io/node-hccs-<Chip>`` = ``{"<device id>": "<group>"}`` (HAMi puts a
``NetworkID`` into its device list instead; our device list codec carries no custom fields, see the
README). The scheduler reads it in ``hami_select_devices``: pure and in memory, so it stays cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

from hami.sdk import DeviceUsage, PhysicalDevice
from hami_ascend.chips import Chip

log = logging.getLogger(__name__)


def rings_key(vendor: str) -> str:
    return f"hami.io/node-hccs-{vendor}"


def rings_annotation(physical: Sequence[PhysicalDevice]) -> dict[str, str]:
    """One annotation per chip kind that has HCCS groups."""
    by_vendor: dict[str, dict[str, str]] = {}
    for device in physical:
        ring = device.attributes.get("ring")
        if ring not in (None, ""):
            by_vendor.setdefault(device.vendor, {})[device.id] = str(ring)
    return {rings_key(v): json.dumps(r, sort_keys=True, separators=(",", ":")) for v, r in sorted(by_vendor.items())}


def read_rings(annotations: Mapping[str, str], vendor: str) -> dict[str, str] | None:
    raw = annotations.get(rings_key(vendor))
    if not raw:
        return None
    try:
        rings = json.loads(raw)
    except ValueError:
        log.warning("event=ascend_bad_rings_annotation vendor=%s value=%r", vendor, raw[:120])
        return None
    return {str(k): str(v) for k, v in rings.items()} if isinstance(rings, dict) else None


def choose(chip: Chip, count: int, candidates: Sequence[DeviceUsage], rings: Mapping[str, str]) -> list[str] | None:
    """``count`` device ids from ``candidates`` (best first), grouped by HCCS; None = no preference,
    ``[]`` = no acceptable set (910C without enough whole modules)."""
    groups: dict[str, list[str]] = {}
    for usage in candidates:
        ring = rings.get(usage.device.id)
        if ring is None:
            return None  # a chip the annotation does not know: let the core choose
        groups.setdefault(ring, []).append(usage.device.id)
    if chip.hccs == "module":
        whole = [ids for ids in groups.values() if len(ids) >= 2]
        if count % 2 or len(whole) * 2 < count:
            return []
        chosen: list[str] = []
        for ids in whole:
            chosen += ids[:2]
            if len(chosen) == count:
                return chosen
        return []
    fitting = [ids for ids in groups.values() if len(ids) >= count]
    if fitting:
        # best fit: the ring with the fewest free chips that still holds the job keeps big rings whole
        return min(fitting, key=len)[:count]
    chosen = []
    for ids in sorted(groups.values(), key=len, reverse=True):
        chosen += ids[: count - len(chosen)]
        if len(chosen) == count:
            break
    return chosen
