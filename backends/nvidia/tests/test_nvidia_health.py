"""XID handling of the health watcher, with a scripted event source and clock (the real NVML event
path is covered end to end in test_nvidia_nvml.py)."""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence

import pytest

from hami.sdk import BackendError, NodeContext, PhysicalDevice
from hami_nvidia.health import ALL_DEVICES, Xid, XidWatcher
from hami_nvidia.settings import DEFAULT_IGNORED_XIDS


class ScriptedSource:
    def __init__(self) -> None:
        self.events: queue.Queue[Xid] = queue.Queue()
        self.closed = False

    def wait(self, timeout_ms: int) -> Xid | None:
        try:
            return self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def watcher(probe=lambda _id: True, ignored=frozenset(DEFAULT_IGNORED_XIDS), clock=None) -> XidWatcher:
    return XidWatcher(lambda ids: ScriptedSource(), ignored=ignored, recovery_seconds=60, probe=probe, wait_ms=10, clock=clock or Clock())


def test_critical_xids_mark_only_their_gpu_and_application_xids_are_ignored():
    w = watcher()
    for xid in DEFAULT_IGNORED_XIDS:
        w.record(Xid("GPU-0", xid))
    assert w.changes(["GPU-0", "GPU-1"]) == []
    w.record(Xid("GPU-1", 79))
    (event,) = w.changes(["GPU-0", "GPU-1"])
    assert (event.device_id, event.healthy, event.reason) == ("GPU-1", False, "XID 79 (critical error)")
    assert w.changes(["GPU-0", "GPU-1"]) == []  # only changes are reported


def test_recovery_needs_quiet_time_and_an_answering_gpu():
    clock, answering = Clock(), {"GPU-0": False}
    w = watcher(probe=lambda i: answering[i], clock=clock)
    w.record(Xid("GPU-0", 48))
    assert [e.healthy for e in w.changes(["GPU-0"])] == [False]
    clock.now += 61
    assert w.changes(["GPU-0"]) == []  # quiet long enough, but NVML does not answer
    answering["GPU-0"] = True
    clock.now += 1
    w.record(Xid("GPU-0", 48))  # a new critical XID restarts the quiet period
    clock.now += 30
    assert w.changes(["GPU-0"]) == []
    clock.now += 31
    (event,) = w.changes(["GPU-0"])
    assert event.healthy and event.reason.startswith("recovered")


def test_an_event_nvml_did_not_attribute_marks_every_watched_gpu():
    w = watcher()
    w.ensure_started(["GPU-0", "GPU-1"])
    try:
        w.record(Xid(ALL_DEVICES, 79))
        assert sorted(e.device_id for e in w.changes(["GPU-0", "GPU-1"])) == ["GPU-0", "GPU-1"]
    finally:
        w.stop()


def test_the_thread_delivers_events_and_restarts_when_the_gpus_change():
    sources: list[tuple[tuple[str, ...], ScriptedSource]] = []

    def factory(ids: Sequence[str]) -> ScriptedSource:
        sources.append((tuple(ids), ScriptedSource()))
        return sources[-1][1]

    w = XidWatcher(factory, ignored=frozenset(), recovery_seconds=60, probe=lambda _: True, wait_ms=10)
    w.ensure_started(["GPU-1", "GPU-0"])
    w.ensure_started(["GPU-0", "GPU-1"])  # same set: same thread
    assert [ids for ids, _ in sources] == [("GPU-0", "GPU-1")]
    sources[0][1].events.put(Xid("GPU-1", 94))
    deadline = time.monotonic() + 5
    events = []
    while not events and time.monotonic() < deadline:
        events = w.changes(["GPU-0", "GPU-1"])
        time.sleep(0.01)
    assert [(e.device_id, e.healthy) for e in events] == [("GPU-1", False)]
    w.ensure_started(["GPU-0", "GPU-1", "GPU-2"])
    assert sources[0][1].closed and sources[1][0] == ("GPU-0", "GPU-1", "GPU-2")
    w.stop()
    assert sources[1][1].closed


def test_a_source_that_cannot_start_is_logged_not_raised(caplog):
    def broken(ids: Sequence[str]) -> ScriptedSource:
        raise BackendError("cannot watch GPU health: NVML initialisation failed: Driver Not Loaded")

    w = XidWatcher(broken, ignored=frozenset(), recovery_seconds=60, probe=lambda _: True, wait_ms=10)
    w.ensure_started(["GPU-0"])
    assert w.error and "Driver Not Loaded" in w.error
    assert "event=xid_watch_failed" in caplog.text
    assert w.changes(["GPU-0"]) == []
    w.stop()


def test_the_backend_watches_only_real_nodes_gpus(nvidia, backend):
    started: list[tuple[str, ...]] = []

    def factory(ids: Sequence[str]) -> ScriptedSource:
        started.append(tuple(ids))
        return ScriptedSource()

    backend.event_source_factory = factory
    manager = nvidia(health_wait_ms=10)
    simulated = PhysicalDevice(id="NVIDIA-n-0", vendor="NVIDIA", type="NVIDIA A100", memory=1)
    assert (
        manager.device_health("nvidia", [simulated], NodeContext("n", simulated=True)) == [] and started == []
    )  # no thread for inventory GPUs
    real = PhysicalDevice(id="GPU-0", vendor="NVIDIA", type="NVIDIA A100", memory=1, attributes={"source": "nvml"})
    assert manager.device_health("nvidia", [real], NodeContext("n")) == []
    assert started == [("GPU-0",)]


def test_bad_ignored_xids_config_is_refused(nvidia):
    manager = nvidia(ignored_xids="13,31")
    real = PhysicalDevice(id="GPU-0", vendor="NVIDIA", type="NVIDIA A100", memory=1, attributes={"source": "nvml"})
    with pytest.raises(BackendError, match="ignored_xids='13,31'"):
        manager.device_health("nvidia", [real])
