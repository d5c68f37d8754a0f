"""HAMi's even split, for backends whose devices share by slots: ``split_count`` containers at
once, memory scaled by ``memory_scaling`` (> 1 oversubscribes), cores by ``core_scaling``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hami.errors import BackendError
from hami.plugin.model import PhysicalDevice, SchedulableDevice


def _number(config: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise BackendError(f"config {key}={value!r}: must be a number >= {minimum}")
    return value


def split_evenly(device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
    count = _number(config, "split_count", 10, 1)
    if count != int(count):
        raise BackendError(f"config split_count={count!r}: must be a whole number")
    return SchedulableDevice(
        id=device.id,
        vendor=device.vendor,
        type=device.type,
        count=int(count),
        memory=int(device.memory * _number(config, "memory_scaling", 1, 0)),
        cores=int(device.cores * _number(config, "core_scaling", 1, 0)),
        index=device.index,
        numa=device.numa,
        mode=str(config.get("mode", "")),
        healthy=device.healthy,
    )
