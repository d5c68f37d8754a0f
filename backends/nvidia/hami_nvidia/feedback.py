"""Priority feedback: HAMi's policy (Project-HAMi/HAMi ``cmd/vGPUmonitor/feedback.go`` Observe), acting
through the fields of HAMi-core's shared region the way upstream does.

HAMi-core sets ``recent_kernel`` to a small positive count when a container launches kernels, waits
while it is negative, and throttles with its SM limiter while ``utilization_switch`` is 1; the task's
``priority`` (``CUDA_TASK_PRIORITY``, 0 = high, higher numbers lower) is in the region. Each round
(the usage sampler's interval; upstream ticks every 5 s):

1. every region with ``recent_kernel > 0`` counts down by one; if still positive, the container is
   *active*, counted per device uuid at its priority;
2. a container blocks (``recent_kernel = -1``) while a container of a higher priority (lower number)
   is active on one of its devices, and is released (``recent_kernel = 0``) when none is;
3. its utilization switch is on while one of higher priority, or another of its own priority, is active
   on one of its devices, else off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from hami_nvidia.region import Region

log = logging.getLogger(__name__)


def _busy(active: dict[str, list[int]], priority: int, uuids: Sequence[str], *, same_too: bool) -> bool:
    for uuid in uuids:
        counts = active.get(uuid)
        if not counts:
            continue
        if any(c > 0 for c in counts[: max(priority, 0)]):
            return True
        if same_too and 0 <= priority < len(counts) and counts[priority] > 1:
            return True
    return False


def observe(regions: Iterable[Region]) -> None:
    """One feedback round over the regions of every live container on this node."""
    regions = list(regions)
    active: dict[str, list[int]] = {}
    for region in regions:
        recent = region.recent_kernel
        if recent <= 0:
            continue
        recent -= 1
        if recent > 0 and region.priority >= 0:
            for uuid in region.uuids():
                if uuid:
                    counts = active.setdefault(uuid, [])
                    counts.extend([0] * (region.priority + 1 - len(counts)))
                    counts[region.priority] += 1
        region.recent_kernel = recent
    for region in regions:
        priority, uuids = region.priority, region.uuids()
        if _busy(active, priority, uuids, same_too=False):
            if region.recent_kernel >= 0:
                log.info("event=priority_block region=%s priority=%d", region.path, priority)
                region.recent_kernel = -1
        elif region.recent_kernel < 0:
            log.info("event=priority_release region=%s priority=%d", region.path, priority)
            region.recent_kernel = 0
        switch = 1 if _busy(active, priority, uuids, same_too=True) else 0
        if region.utilization_switch != switch:
            region.utilization_switch = switch
