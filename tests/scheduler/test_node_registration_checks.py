"""Issue 19 item 7: hostile node registrations. A device id another node already registered makes
the later registration's devices unschedulable, with a Warning Event on that node naming the other;
out-of-bound values are refused by the decoder (tests/core/test_codec.py) and leave no device."""

from __future__ import annotations

import json
import time

from kubernetes import client

from hami.plugin.model import SchedulableDevice
from hami.scheduler.cache import DUPLICATE_DEVICE_REASON, ClusterCache
from hami.scheduler.state import ClusterState
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND

REGISTER = KIND.annotations.node_register


def gpu(i: str, memory: int = 10000) -> SchedulableDevice:
    return SchedulableDevice(id=i, vendor="NVIDIA", type="NVIDIA A100", count=4, memory=memory, cores=100)


def node(name: str, *ids: str, text: str | None = None) -> dict:
    value = text if text is not None else encode_node_devices([gpu(i) for i in ids], "json")
    return {"metadata": {"name": name, "annotations": {REGISTER: value}}}


def test_a_device_id_registered_by_two_nodes_is_refused_on_the_later_one():
    state = ClusterState({"NVIDIA": KIND})
    seen: list[tuple[str, str, str]] = []
    state.on_duplicate = lambda *args: seen.append(args)
    state.apply_node(node("n1", "GPU-a", "GPU-b"))
    state.apply_node(node("n2", "GPU-b", "GPU-c"))
    assert set(state.nodes["n1"].devices) == {"GPU-a", "GPU-b"}
    assert state.nodes["n2"].devices == {}
    assert "already registered by node 'n1'" in state.nodes["n2"].problems["NVIDIA"]
    assert seen == [("n2", "n1", "GPU-b")]

    state.apply_node(node("n2", "GPU-b", "GPU-c"))  # the agent's heartbeat: no second event
    state.apply_node(node("n1", "GPU-b", "GPU-c"))  # the first node is not displaced by the later one
    assert seen == [("n2", "n1", "GPU-b")] and set(state.nodes["n1"].devices) == {"GPU-b", "GPU-c"}

    state.delete_node("n1")  # the owner is gone: the refused node is read again and accepted
    assert set(state.nodes["n2"].devices) == {"GPU-b", "GPU-c"}
    assert state.device_owner == {"GPU-b": "n2", "GPU-c": "n2"}


def test_owner_dropping_the_id_lets_the_refused_node_in():
    state = ClusterState({"NVIDIA": KIND})
    state.apply_node(node("n1", "GPU-a"))
    state.apply_node(node("n2", "GPU-a"))
    assert state.nodes["n2"].devices == {}
    state.apply_node(node("n1", "GPU-z"))
    assert set(state.nodes["n2"].devices) == {"GPU-a"}


def test_hostile_values_leave_the_node_without_devices():
    state = ClusterState({"NVIDIA": KIND})
    for text in (
        json.dumps([{"id": "GPU-x", "count": 10**18, "devmem": 16384, "devcore": 100}]),
        json.dumps([{"id": "GPU-x", "count": 4, "devmem": 10**400, "devcore": 100}]),
        json.dumps([{"id": "GPU-x", "count": 4, "devmem": 16384, "devcore": 10**6}]),
        json.dumps([{"id": "GPU-x,GPU-y", "count": 4, "devmem": 16384}]),
    ):
        state.apply_node(node("evil", text=text))
        assert state.nodes["evil"].devices == {}, text
        assert "corrupt" in state.nodes["evil"].problems["NVIDIA"]


def test_the_refused_node_gets_a_warning_event_naming_the_other(core_v1):
    cache = ClusterCache(ClusterState({"NVIDIA": KIND}), core_v1)
    for name, ids in (("n1", ("GPU-a",)), ("n2", ("GPU-a", "GPU-b"))):
        core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, annotations=node(name, *ids)["metadata"]["annotations"])))
    cache.start()
    try:
        assert cache.wait_synced(10)
        deadline = time.monotonic() + 10
        events: list = []
        while time.monotonic() < deadline and not events:
            events = [e for e in core_v1.list_namespaced_event("default").items if e.reason == DUPLICATE_DEVICE_REASON]
            time.sleep(0.05)
    finally:
        cache.stop()
    (event,) = events
    assert (event.involved_object.kind, event.involved_object.name, event.type) == ("Node", "n2", "Warning")
    assert "'GPU-a'" in event.message and "node 'n1'" in event.message
    assert cache.state.nodes["n2"].devices == {}
