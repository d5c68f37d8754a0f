"""Small pure pieces of the agent: the edits mapping, slot ids, node annotations, backoff, errors."""

from __future__ import annotations

import urllib3
from kubernetes.client.exceptions import ApiException

from hami.node.allocate import describe_api_error, is_transient
from hami.node.devices import Discovery, NodeDevice, device_of_slot, slot_id
from hami.node.edits import to_response
from hami.node.plugin_server import socket_name
from hami.node.registration import Backoff, handshake_value, node_annotations
from hami.plugin.model import (
    ContainerEdits,
    DeviceNode,
    Mount,
    PhysicalDevice,
    SchedulableDevice,
)
from hami_hygon.plugin import KIND as DCU
from hami_nvidia.plugin import KIND as NVIDIA


def test_every_edit_reaches_the_response():
    edits = ContainerEdits(
        env={"A": "1"},
        mounts=[Mount("/c", "/h", read_only=True)],
        devices=[DeviceNode("/dev/x0", "/dev/x0", "rw")],
        cdi_devices=["vendor.com/gpu=0"],
        annotations={"vendor.com/a": "b"},
    )
    r = to_response(edits)
    assert dict(r.envs) == {"A": "1"}
    assert [(m.container_path, m.host_path, m.read_only) for m in r.mounts] == [("/c", "/h", True)]
    assert [(d.container_path, d.host_path, d.permissions) for d in r.devices] == [("/dev/x0", "/dev/x0", "rw")]
    assert [c.name for c in r.cdi_devices] == ["vendor.com/gpu=0"]
    assert dict(r.annotations) == {"vendor.com/a": "b"}
    assert to_response(ContainerEdits()) == type(r)()


def test_slot_ids_round_trip_and_socket_names():
    assert slot_id("GPU-1234", 3) == "GPU-1234::3"
    assert device_of_slot("GPU-1234::3") == "GPU-1234"
    assert device_of_slot("bare") == "bare"
    assert socket_name("nvidia.com/gpu") == "hami-nvidia.com-gpu.sock"


def _device(vendor, resource, id_, healthy=True):
    physical = PhysicalDevice(id=id_, vendor=vendor, type="T", memory=100, healthy=healthy)
    return NodeDevice("b", resource, physical, SchedulableDevice(id=id_, vendor=vendor, type="T", count=2, memory=100, healthy=healthy))


def test_node_annotations_apply_health_and_clear_stale_lists():
    discovery = Discovery([_device("NVIDIA", "nvidia.com/gpu", "g0"), _device("NVIDIA", "nvidia.com/gpu", "g1")])
    kinds = {"NVIDIA": NVIDIA, "DCU": DCU}
    out = node_annotations(kinds, discovery, {"g1": False}, {"hami.io/node-dcu-register": "old,1,1,1,t,0,true:"}, 0.0)
    assert '"id":"g1"' in out["hami.io/node-nvidia-register"] and '"health":false' in out["hami.io/node-nvidia-register"]
    assert out["hami.io/node-dcu-register"] == ""  # CSV of no devices: the stale list is cleared
    assert out["hami.io/node-handshake-dcu"].startswith("Reported_")
    assert set(node_annotations(kinds, discovery, {}, {}, 0.0)) == {"hami.io/node-nvidia-register", "hami.io/node-handshake"}
    assert handshake_value(0.0).startswith("Reported_19")


def test_backoff_doubles_up_to_the_maximum_and_resets():
    b = Backoff(1, 5)
    assert [b.next() for _ in range(5)] == [1, 2, 4, 5, 5]
    b.reset()
    assert b.next() == 1


def test_transient_errors_are_told_apart():
    assert is_transient(ApiException(status=503)) and is_transient(ApiException(status=429))
    assert is_transient(urllib3.exceptions.MaxRetryError(None, "/", ConnectionRefusedError("refused")))
    assert not is_transient(ApiException(status=404)) and not is_transient(ApiException(status=422))
    assert "ConnectionRefusedError" in describe_api_error(urllib3.exceptions.MaxRetryError(None, "/", ConnectionRefusedError("refused")))
