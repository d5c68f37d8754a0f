"""The liveness handshake as HAMi v2.10 decides it (pkg/device/devices.go ``CheckHealth``,
pkg/scheduler/scheduler.go ``register``): HAMi >= 2.8 device plugins no longer write ``Reported_``,
so a stale ``Requesting_`` drops a node's devices only when its Allocatable for the vendor's count
resource is not above zero."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from hami.plugin.model import SchedulableDevice
from hami.scheduler.handshake import HandshakeRequester, handshake_problem
from hami.scheduler.state import ClusterState
from hami.wire.annotations import HANDSHAKE_TIME_LAYOUT
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND

RESOURCE = KIND.resources.count
GPU = SchedulableDevice(id="GPU-0", vendor="NVIDIA", type="A100", count=4, memory=8000, cores=100)


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago).strftime(HANDSHAKE_TIME_LAYOUT)


def node(handshake: str | None, allocatable: str | None) -> dict:
    annotations = {KIND.annotations.node_register: encode_node_devices([GPU], "json")}
    if handshake is not None:
        annotations[KIND.annotations.handshake] = handshake
    status = {"allocatable": {RESOURCE: allocatable}} if allocatable is not None else {}
    return {"metadata": {"name": "n1", "annotations": annotations}, "status": status}


@pytest.mark.parametrize(
    ("handshake", "allocatable", "alive"),
    [
        (lambda: f"Requesting_{stamp(300)}", "40", True),  # HAMi >= 2.8 plugin: never answers, kubelet still lists it
        (lambda: f"Requesting_{stamp(300)}", "500m", True),  # Go's Quantity.Value() rounds up: above zero
        (lambda: f"Requesting_{stamp(300)}", "0", False),  # plugin gone: kubelet zeroed the resource
        (lambda: f"Requesting_{stamp(300)}", None, False),
        (lambda: f"Requesting_{stamp(10)}", None, True),  # asked less than 60 s ago
        ("Requesting_not-a-time", None, True),  # unparseable time: CheckHealth returns healthy
        ("Requesting", None, True),  # no '_': healthy
        (lambda: f"Reported_{stamp(3000)}", None, True),
        (lambda: f"Deleted_{stamp(3000)}", None, True),  # CheckHealth turns it into a new request, healthy
        (None, None, True),
    ],
)
def test_upstream_check_health_rule(handshake, allocatable, alive):
    handshake = handshake() if callable(handshake) else handshake  # stamped when the test runs
    state = ClusterState({"NVIDIA": KIND})
    state.apply_node(node(handshake, allocatable))
    assert (list(state.node("n1").devices) == ["GPU-0"]) is alive
    if not alive:
        assert f"no {RESOURCE} allocatable" in state.node("n1").problems["NVIDIA"]


@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=12)))
def test_handshake_problem_never_raises_on_any_text(value, allocatable):
    node_ = {"status": {"allocatable": {RESOURCE: allocatable}}}
    result = handshake_problem(value, node_, RESOURCE, time.time(), 60.0)
    assert result is None or "Requesting" in value


def test_requester_asks_hami_nodes_and_keeps_them_while_allocatable(core_v1):
    """A HAMi 2.10 node (register annotation, no handshake) is asked like upstream asks it, never
    answers, and stays schedulable while the kubelet lists its GPUs; when Allocatable drops to 0 its
    devices go 60 s after the request."""
    annotations = {KIND.annotations.node_register: encode_node_devices([GPU], "json")}
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="n1", annotations=annotations)))
    core_v1.patch_node_status("n1", {"status": {"allocatable": {RESOURCE: "4"}, "capacity": {RESOURCE: "4"}}})
    state = ClusterState({"NVIDIA": KIND})
    state.apply_node(json.loads(core_v1.read_node("n1", _preload_content=False).data))
    requester = HandshakeRequester(state, core_v1)
    assert requester.request_once() == 1
    assert core_v1.read_node("n1").metadata.annotations[KIND.annotations.handshake].startswith("Requesting_")
    state.apply_node(json.loads(core_v1.read_node("n1", _preload_content=False).data))
    assert requester.request_once() == 0  # already asked: a request is not rewritten
    state.clock = lambda: time.time() + 120  # no answer ever comes
    state.recheck_handshakes()
    assert list(state.node("n1").devices) == ["GPU-0"]
    core_v1.patch_node_status("n1", {"status": {"allocatable": {RESOURCE: "0"}}})
    state.apply_node(json.loads(core_v1.read_node("n1", _preload_content=False).data))
    assert state.node("n1").devices == {}
    assert "has not reported since" in state.node("n1").problems["NVIDIA"]
