"""What one pod holds on each device: init containers run before app containers, so a pod holds
per device the larger of its biggest init container and the sum of its app containers (the way
Kubernetes counts a pod's effective requests)."""

from __future__ import annotations

from collections.abc import Mapping

from hami.wire.codec import PodDevices

Holding = tuple[int, int, int]
"""(slots, MiB, cores) one pod holds on one device."""


def pod_holdings(devices: Mapping[str, PodDevices], init_count: int) -> dict[str, Holding]:
    """Per device id, what the pod holds, over all vendors; ``devices`` is per vendor, per container."""
    init: dict[str, list[int]] = {}
    app: dict[str, list[int]] = {}
    for containers in devices.values():
        for position, grants in enumerate(containers):
            is_init = position < init_count
            per_container: dict[str, list[int]] = {}
            for g in grants:
                acc = per_container.setdefault(g.id, [0, 0, 0])
                acc[0] += 1
                acc[1] += g.memory
                acc[2] += g.cores
            for device_id, (slots, memory, cores) in per_container.items():
                if is_init:
                    top = init.setdefault(device_id, [0, 0, 0])
                    top[0], top[1], top[2] = max(top[0], slots), max(top[1], memory), max(top[2], cores)
                else:
                    total = app.setdefault(device_id, [0, 0, 0])
                    total[0] += slots
                    total[1] += memory
                    total[2] += cores
    result = {}
    for device_id in init.keys() | app.keys():
        a, b = init.get(device_id, [0, 0, 0]), app.get(device_id, [0, 0, 0])
        result[device_id] = (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]))
    return result
