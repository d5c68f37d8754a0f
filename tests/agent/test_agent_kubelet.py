"""The agent as kubelet sees it: registration, ListAndWatch, health updates, kubelet restarts."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from hami.fakes.agent import RecordingBackend, pod_manifest, schedule_pod
from hami.fakes.kubelet import FakeKubelet
from hami.node.deviceplugin import API_VERSION, HEALTHY, UNHEALTHY
from hami.node.deviceplugin.v1beta1 import api_pb2
from hami.plugin.model import Grant
from hami.wire.signing import SigningKeys
from hami_hygon.plugin import plugin as hygon_plugin
from hami_nvidia.plugin import INFO as NVIDIA_INFO

NODE = "node-1"
GPU, DCU = "nvidia.com/gpu", "hygon.com/dcunum"
DEV0, DEV1 = "NVIDIA-node-1-0", "NVIDIA-node-1-1"
KEYS = SigningKeys.from_seed(b"k" * 32)


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nodes": [
                    {
                        "name": NODE,
                        "devices": [
                            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 16384, "id": DEV0, "numa": 0},
                            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 16384, "id": DEV1, "index": 1, "numa": 1},
                            {"vendor": "DCU", "type": "DCU Z100", "memory": 32768, "count": 2},
                        ],
                    }
                ]
            }
        )
    )
    return path


@pytest.fixture
def backend(hami_manager, register_backend, inventory):
    plugin = RecordingBackend(NVIDIA_INFO)
    register_backend(plugin, config={"inventory": str(inventory), "split_count": 4})
    register_backend(hygon_plugin, config={"inventory": str(inventory)})
    return plugin


@pytest.fixture
def kubelet(kubelet_dir, core_v1):
    with FakeKubelet(kubelet_dir, NODE, core_v1=core_v1) as k:
        yield k


def test_one_registered_plugin_per_resource_with_slots_and_numa(start_agent, hami_manager, backend, kubelet, kubelet_dir, core_v1):
    agent = start_agent(hami_manager, NODE, keys=KEYS)
    gpus = kubelet.wait_devices(GPU, 8)
    dcus = kubelet.wait_devices(DCU, 8)  # hygon's default split_count is 4
    assert sorted(gpus) == sorted(f"{d}::{i}" for d in (DEV0, DEV1) for i in range(4))
    assert set(gpus.values()) == {HEALTHY} and set(dcus.values()) == {HEALTHY}
    topology = kubelet.topology(GPU)
    assert topology[f"{DEV0}::3"] == [0] and topology[f"{DEV1}::0"] == [1]
    assert kubelet.resources() == [DCU, GPU]
    requests = {r.resource_name: r for r in kubelet.registrations}
    assert requests[GPU].version == API_VERSION
    assert requests[GPU].endpoint == agent.servers[GPU].socket_path.name and "/" not in requests[GPU].endpoint
    assert (kubelet_dir / requests[GPU].endpoint).is_socket()
    assert kubelet.options(GPU).get_preferred_allocation_available and not kubelet.options(GPU).pre_start_required
    kubelet.wait_for(lambda: core_v1.read_node(NODE).status.allocatable.get(GPU) == "8", what="allocatable mirrored")


def test_health_flip_updates_list_and_watch_and_the_node_annotation(start_agent, hami_manager, backend, kubelet, core_v1):
    start_agent(hami_manager, NODE, keys=KEYS)
    kubelet.wait_devices(GPU, 8)

    def annotated_health():
        text = core_v1.read_node(NODE).metadata.annotations["hami.io/node-nvidia-register"]
        return {d["id"]: d["health"] for d in json.loads(text)}

    backend.unhealthy[DEV1] = "XID 79: GPU has fallen off the bus"
    devices = kubelet.wait_devices(GPU, 4)
    assert {s for s, h in devices.items() if h == UNHEALTHY} == {f"{DEV1}::{i}" for i in range(4)}
    kubelet.wait_for(lambda: annotated_health() == {DEV0: True, DEV1: False}, what="unhealthy device in the node annotation")

    del backend.unhealthy[DEV1]
    assert set(kubelet.wait_devices(GPU, 8).values()) == {HEALTHY}
    kubelet.wait_for(lambda: annotated_health() == {DEV0: True, DEV1: True}, what="recovered device in the node annotation")


def test_kubelet_restart_is_detected_and_the_agent_re_registers(start_agent, hami_manager, backend, kubelet, core_v1):
    agent = start_agent(hami_manager, NODE, keys=KEYS)
    kubelet.wait_devices(GPU, 8)
    kubelet.restart()
    started = time.monotonic()
    kubelet.wait_registered(GPU, timeout=5)
    kubelet.wait_registered(DCU, timeout=5)
    assert time.monotonic() - started < 5
    kubelet.wait_devices(GPU, 8)
    assert agent.servers[GPU].socket_path.is_socket()
    # and it still allocates after the restart
    core_v1.create_namespaced_pod("default", pod_manifest("after", {"main": {GPU: "1"}}))
    schedule_pod(core_v1, hami_manager, "default", "after", NODE, {"NVIDIA": [[Grant(DEV1, "NVIDIA", 1000, 0)]]}, KEYS)
    result = kubelet.admit(core_v1.read_namespaced_pod("after", "default"))
    assert result.admitted, result.error
    assert result.container("main").envs["HAMI_VISIBLE_DEVICES"] == DEV1


def test_recreated_kubelet_socket_alone_triggers_re_registration(start_agent, hami_manager, backend, kubelet, kubelet_dir):
    """Kubelet came back without deleting our socket: the new kubelet.sock inode is the signal."""
    agent = start_agent(hami_manager, NODE, keys=KEYS)
    kubelet.wait_registered(GPU)
    before = agent.kubelet_registrations
    kubelet._stop_server()  # kubelet.sock goes away; plugin sockets stay
    kubelet._serve()
    kubelet.wait_for(lambda: agent.kubelet_registrations >= before + 2, timeout=5, what="re-registration of both resources")


def test_kubelet_started_after_the_agent(start_agent, hami_manager, backend, kubelet_dir, core_v1):
    agent = start_agent(hami_manager, NODE, keys=KEYS)
    assert not agent.servers[GPU].registered  # nothing to register with yet
    with FakeKubelet(kubelet_dir, NODE, core_v1=core_v1) as kubelet:
        kubelet.wait_devices(GPU, 8)
        # the node did not exist before kubelet registered it: the annotation write was retried
        kubelet.wait_for(
            lambda: "hami.io/node-nvidia-register" in (core_v1.read_node(NODE).metadata.annotations or {}),
            what="node registration after retry",
        )


def test_preferred_allocation_prefers_the_schedulers_devices(start_agent, hami_manager, backend, kubelet, core_v1):
    agent = start_agent(hami_manager, NODE, keys=KEYS)
    kubelet.wait_devices(GPU, 8)
    core_v1.create_namespaced_pod("default", pod_manifest("picky", {"main": {GPU: "2"}}))
    schedule_pod(
        core_v1,
        hami_manager,
        "default",
        "picky",
        NODE,
        {"NVIDIA": [[Grant(DEV1, "NVIDIA", 1000, 0), Grant(DEV0, "NVIDIA", 1000, 0)]]},
        KEYS,
    )
    available = [f"{d}::{i}" for d in (DEV0, DEV1) for i in range(4)]
    request = api_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=available, allocation_size=2)
    chosen = agent.allocator.preferred(GPU, request)
    assert sorted(chosen) == [f"{DEV0}::0", f"{DEV1}::0"]
    # must-include slots count toward the granted devices
    request = api_pb2.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, must_include_deviceIDs=[f"{DEV1}::2"], allocation_size=2
    )
    assert agent.allocator.preferred(GPU, request) == [f"{DEV1}::2", f"{DEV0}::0"]
    # no pending pod for the resource: kubelet's own order
    request = api_pb2.ContainerPreferredAllocationRequest(available_deviceIDs=[f"DCU-node-1-1::{i}" for i in range(3)], allocation_size=2)
    assert agent.allocator.preferred(DCU, request) == ["DCU-node-1-1::0", "DCU-node-1-1::1"]
