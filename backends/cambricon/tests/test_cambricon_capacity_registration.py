"""A node whose MLUs HAMi's cambricon-device-plugin registered: no ``hami.io/node-mlu-register``
annotation, only node capacity. HAMi v2.10 reads the MLUs from there (pkg/device/cambricon/device.go
``GetNodeDevices``: one MLU per 100 ``cambricon.com/mlu.smlu.vcore``, ``Devmem = vmemory × MemoryFactor
(256) × 100 / vcore``, id ``<node>-cambricon-mlu-<i>``, count 100, devcore 100, type MLU); so does our
scheduler, while our own agents keep registering the annotation (read first when present)."""

from __future__ import annotations

import pytest
from kubernetes import client

from hami.fakes.extender import ExtenderHarness
from hami.scheduler.core import Scheduler
from hami.scheduler.state import ClusterState
from hami.sdk import SchedulableDevice
from hami.wire.codec import encode_node_devices
from hami_cambricon.plugin import KIND, CambriconBackend

VCORE, VMEMORY = KIND.resources.cores, KIND.resources.memory


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(CambriconBackend())
    return hami_manager


def hami_node(name="mlu-hami", vcore="400", vmemory="364", annotations=None):
    capacity = {VCORE: vcore, VMEMORY: vmemory, "cambricon.com/mlu": "4"}
    return {"metadata": {"name": name, "annotations": annotations or {}}, "status": {"capacity": capacity, "allocatable": capacity}}


def test_devices_are_read_from_capacity_as_hami_does(manager):
    devices = manager.node_capacity_devices(KIND.vendor, hami_node())
    assert [(d.id, d.index, d.count, d.cores, d.type) for d in devices] == [
        (f"mlu-hami-cambricon-mlu-{i}", i, 100, 100, "MLU") for i in range(4)
    ]
    assert {d.memory for d in devices} == {364 * 256 * 100 // 400}  # 23296 MiB per card, HAMi's integer formula
    assert len(manager.node_capacity_devices(KIND.vendor, hami_node(vcore="250"))) == 3  # for i*100 < cards
    assert manager.node_capacity_devices(KIND.vendor, hami_node(vcore="0")) == ()
    assert manager.node_capacity_devices(KIND.vendor, {"metadata": {"name": "cpu-only"}}) == ()


def test_a_capacity_registered_node_is_schedulable(manager):
    state = ClusterState(manager.kinds, capacity_devices=manager.node_capacity_devices)
    state.apply_node(hami_node())
    assert len(state.node("mlu-hami").devices) == 4
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {KIND.resources.count: "1", VMEMORY: "20", VCORE: "10"}}}]},
    }
    outcome = Scheduler(manager, state, None).filter(pod, ["mlu-hami"])
    assert outcome.node == "mlu-hami", outcome


def test_our_annotation_wins_over_capacity(manager):
    ours = SchedulableDevice(id="MLU-abc", vendor=KIND.vendor, type="MLU370-X8", count=10, memory=23374, cores=100)
    state = ClusterState(manager.kinds, capacity_devices=manager.node_capacity_devices)
    state.apply_node(hami_node(annotations={KIND.annotations.node_register: encode_node_devices([ours], KIND.node_encoding)}))
    assert list(state.node("mlu-hami").devices) == ["MLU-abc"]


def test_bad_capacity_is_the_nodes_problem_naming_the_value(manager):
    state = ClusterState(manager.kinds, capacity_devices=manager.node_capacity_devices)
    state.apply_node(hami_node(vcore="lots"))
    assert state.node("mlu-hami").devices == {}
    assert "lots" in state.node("mlu-hami").problems[KIND.vendor] and VCORE in state.node("mlu-hami").problems[KIND.vendor]


def test_the_scheduler_service_sees_capacity_nodes(manager, core_v1):
    """Through the informer the real scheduler uses (the extender harness wires the same ClusterState)."""
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="mlu-hami")))
    core_v1.patch_node_status(
        "mlu-hami", {"status": {"capacity": {VCORE: "200", VMEMORY: "182"}, "allocatable": {VCORE: "200", VMEMORY: "182"}}}
    )
    harness = ExtenderHarness(manager, core_v1).start()
    try:
        harness.cache.nodes.synced.wait(5)
        import time

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (harness.state.node("mlu-hami") and harness.state.node("mlu-hami").devices):
            time.sleep(0.02)
        assert sorted(harness.state.node("mlu-hami").devices) == ["mlu-hami-cambricon-mlu-0", "mlu-hami-cambricon-mlu-1"]
    finally:
        harness.stop()


def test_capacity_devices_of_another_vendor_break_the_contract(hami_manager, register_backend):
    from hami import hookimpl
    from hami.errors import ContractError

    class Confused(CambriconBackend):
        @hookimpl
        def hami_node_capacity_devices(self, vendor, node, config):
            return [SchedulableDevice(id="GPU-0", vendor="NVIDIA", type="A100", count=1, memory=1000)]

    register_backend(Confused())
    with pytest.raises(ContractError, match="vendor 'NVIDIA' for 'MLU'"):
        hami_manager.node_capacity_devices(KIND.vendor, hami_node())
