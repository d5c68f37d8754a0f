"""What the agent writes on its Node: HAMi's device annotations (JSON and legacy CSV) and the
handshake; a broken backend does not stop the others; the API server being away is retried."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from hami import hookimpl
from hami.backendkit.standard import StandardBackend
from hami.errors import BackendError
from hami.fakes.kubelet import FakeKubelet
from hami.plugin.model import (
    AnnotationKeys,
    BackendInfo,
    DeviceKind,
    NodeAnnotations,
    ResourceNames,
)
from hami.wire.codec import decode_node_devices
from hami_hygon.plugin import plugin as hygon_plugin
from hami_nvidia.plugin import plugin as nvidia_plugin

NODE = "node-1"


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
                            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": "40Gi", "count": 2, "numa": 1},
                            {"vendor": "DCU", "type": "DCU Z100", "memory": 32768, "count": 1},
                        ],
                    }
                ]
            }
        )
    )
    return path


@pytest.fixture
def kubelet(kubelet_dir, core_v1):
    with FakeKubelet(kubelet_dir, NODE, core_v1=core_v1) as k:
        yield k


def node_annotations(core_v1):
    return core_v1.read_node(NODE).metadata.annotations or {}


class BrokenBackend(StandardBackend):
    @hookimpl
    def hami_discover_devices(self, config, node_name):
        raise BackendError("driver library libacme.so not found")


def test_node_annotations_and_handshake(start_agent, hami_manager, register_backend, inventory, kubelet, core_v1):
    register_backend(nvidia_plugin, config={"inventory": str(inventory), "memory_scaling": 1.5})
    register_backend(hygon_plugin, config={"inventory": str(inventory)})
    agent = start_agent(hami_manager, NODE, insecure=True)
    assert agent.node_registered.wait(5)
    ann = node_annotations(core_v1)
    gpus = decode_node_devices(ann["hami.io/node-nvidia-register"], "NVIDIA", "json")
    assert [(d.id, d.count, d.memory, d.cores, d.numa, d.healthy) for d in gpus] == [
        ("NVIDIA-node-1-0", 10, 61440, 100, 1, True),
        ("NVIDIA-node-1-1", 10, 61440, 100, 1, True),
    ]
    assert json.loads(ann["hami.io/node-nvidia-register"])[1]["index"] == 1
    dcus = ann["hami.io/node-dcu-register"]
    assert dcus == "DCU-node-1-0,4,32768,100,DCU Z100,0,true,0,:"  # legacy CSV, as HAMi's Hygon plugin writes
    for key in ("hami.io/node-handshake", "hami.io/node-handshake-dcu"):
        assert re.fullmatch(r"Reported_\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", ann[key])
    assert not any(k.startswith("hami.io/node-register-Ascend") for k in ann)  # no devices, no annotation


def test_a_broken_backend_is_reported_and_the_others_serve(start_agent, hami_manager, register_backend, inventory, kubelet):
    kind = DeviceKind(
        "ACME",
        ResourceNames(count="acme.com/npu"),
        AnnotationKeys.hami("hami.io/node-acme-register", "hami.io/node-handshake-acme", "hami.io/acme"),
    )
    register_backend(BrokenBackend(BackendInfo(name="acme", kinds=[kind])))
    register_backend(nvidia_plugin, config={"inventory": str(inventory)})
    agent = start_agent(hami_manager, NODE, insecure=True)
    kubelet.wait_devices("nvidia.com/gpu", 20)
    assert "driver library libacme.so not found" in agent.discovery.errors["acme"]
    assert "acme.com/npu" not in agent.servers


def test_registration_is_retried_while_the_api_server_fails(
    start_agent, hami_manager, register_backend, inventory, kubelet, kube_apiserver, core_v1
):
    register_backend(nvidia_plugin, config={"inventory": str(inventory)})
    kube_apiserver.faults.fail(503, count=3, path=f"^/api/v1/nodes/{NODE}$")
    agent = start_agent(hami_manager, NODE, insecure=True)
    assert agent.node_registered.wait(5)
    assert kube_apiserver.faults.injected >= 3
    assert "hami.io/node-nvidia-register" in node_annotations(core_v1)


def test_devices_that_vanish_are_written_as_an_empty_list(start_agent, hami_manager, register_backend, inventory, kubelet, core_v1):
    register_backend(nvidia_plugin, config={"inventory": str(inventory)})
    agent = start_agent(hami_manager, NODE, insecure=True)
    assert agent.node_registered.wait(5)
    inventory.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": []}]}))
    agent.refresh()
    kubelet.wait_devices("nvidia.com/gpu", 0)
    agent.registrar.write(agent.discovery, agent.health)
    assert node_annotations(core_v1)["hami.io/node-nvidia-register"] == "[]"


class Ringed(StandardBackend):
    """Publishes which devices share a ring, for the scheduler's hami_select_devices."""

    @hookimpl
    def hami_node_annotations(self, devices, physical, config):
        return NodeAnnotations({"hami.io/node-acme-rings": json.dumps({d.id: d.index // 2 for d in devices})})


def test_backend_topology_annotations_are_published(start_agent, hami_manager, register_backend, tmp_path, kubelet, core_v1):
    kind = DeviceKind(
        "ACME",
        ResourceNames(count="acme.com/npu"),
        AnnotationKeys.hami("hami.io/node-acme-register", "hami.io/node-handshake-acme", "hami.io/acme"),
    )
    path = tmp_path / "acme.yaml"
    path.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": [{"vendor": "ACME", "type": "X1", "memory": 1024, "count": 4}]}]}))
    register_backend(Ringed(BackendInfo(name="acme", kinds=[kind])), config={"inventory": str(path)})
    agent = start_agent(hami_manager, NODE, insecure=True)
    assert agent.node_registered.wait(5)
    rings = json.loads(node_annotations(core_v1)["hami.io/node-acme-rings"])
    assert rings == {"ACME-node-1-0": 0, "ACME-node-1-1": 0, "ACME-node-1-2": 1, "ACME-node-1-3": 1}
