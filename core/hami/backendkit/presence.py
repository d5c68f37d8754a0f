"""Health from a vendor tool's device table: a device it stops listing is unhealthy until listed again.

For backends whose tool (a vendor's SMI tool …) has no fault codes to watch; ``hami_device_health`` reports
only changes, so this remembers what it reported last.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from hami.plugin.model import HealthEvent, PhysicalDevice


class PresenceWatch:
    def __init__(self) -> None:
        self._listed: dict[str, bool] = {}

    def events(
        self, devices: Sequence[PhysicalDevice], present: Collection[int], gone: Callable[[PhysicalDevice], str]
    ) -> list[HealthEvent]:
        """Changes since the last call for ``devices``, given the indexes the tool lists now;
        ``gone(device)`` is the reason shown for a device that dropped out."""
        events = []
        for device in devices:
            listed = device.index in present
            if self._listed.get(device.id, True) != listed:
                events.append(HealthEvent(device.id, listed, "" if listed else gone(device)))
            self._listed[device.id] = listed
        return events
