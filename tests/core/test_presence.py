"""Health from a tool's device table: only changes are reported, recovery included."""

from __future__ import annotations

from hami.backendkit.presence import PresenceWatch
from hami.plugin.model import HealthEvent, PhysicalDevice


def test_dropping_out_and_coming_back():
    devices = [PhysicalDevice(id=f"d{i}", vendor="V", type="t", memory=1, index=i) for i in range(2)]
    watch = PresenceWatch()
    gone = lambda d: f"V {d.index} is no longer listed"  # noqa: E731
    assert watch.events(devices, {0, 1}, gone) == []
    assert watch.events(devices, {0}, gone) == [HealthEvent("d1", False, "V 1 is no longer listed")]
    assert watch.events(devices, {0}, gone) == []  # reported once
    assert watch.events(devices, {0, 1}, gone) == [HealthEvent("d1", True, "")]
