"""Plausible usage figures for simulated nodes (``hami sandbox``), so usage metrics, ``hami top``
and the dashboard can be seen without hardware: what :class:`~hami.backendkit.standard.StandardBackend`
answers ``hami_sample_usage`` with on a simulated node, and what a backend may return there too."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from hami.plugin.model import ContainerShare, DeviceLoad, PhysicalDevice, ShareLoad, UsageReport

MIB = 1024 * 1024
BASE_MIB = 300
"""What the driver itself holds on a device with no work."""


def _unit(*parts: object) -> float:
    """A stable number in [0, 1) from ``parts``: figures that differ per container, the same each run."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def simulated_usage(
    devices: Sequence[PhysicalDevice], containers: Sequence[ContainerShare], now: float, period: float = 5.0
) -> UsageReport:
    """Each share uses 30-90 % of its memory grant and a slowly varying part of its compute grant
    (changing every ``period`` seconds of ``now``); a device holds :data:`BASE_MIB` plus its shares'
    memory and is as busy as its shares together."""
    tick = int(now // period)
    by_device: dict[str, list[ShareLoad]] = {}
    shares = []
    ids = {d.id for d in devices}
    for share in containers:
        for index, grant in enumerate(share.grants):
            if grant.id not in ids:
                continue
            seed = _unit(share.pod_uid, share.container, grant.id)
            granted = grant.memory * MIB
            cores = (grant.cores or 100) / 100
            busy = cores * (0.35 + 0.6 * seed) * (0.75 + 0.25 * math.sin(tick / 3 + seed * 6.28))
            load = ShareLoad(
                grant.id,
                share.namespace,
                share.pod,
                share.container,
                vdevice_index=index,
                memory_used=int(granted * (0.3 + 0.6 * seed)),
                memory_limit=granted or None,
                utilization=round(min(max(busy, 0.0), 1.0), 4),
                last_kernel_seconds=float(int(seed * 5)),
            )
            shares.append(load)
            by_device.setdefault(grant.id, []).append(load)
    loads = []
    for device in devices:
        mine = by_device.get(device.id, [])
        total = device.memory * MIB
        used = min(BASE_MIB * MIB + sum(s.memory_used for s in mine), total) if total else 0
        busy = min(sum(s.utilization or 0.0 for s in mine), 1.0)
        loads.append(
            DeviceLoad(
                device.id,
                memory_used=used,
                memory_total=total or None,
                utilization=round(busy, 4),
                memory_utilization=round(busy * 0.4, 4),
                power_watts=round(60 + 240 * busy, 1),
                temperature_celsius=round(35 + 40 * busy, 1),
            )
        )
    return UsageReport(devices=loads, shares=shares)
