"""A backend, the in-memory API server and the fake kubelet together, over real HTTP and gRPC.

The path a device takes before the scheduler and node agent exist: discovered and split by a backend,
registered as a node annotation through the real ``kubernetes`` client, advertised to kubelet over a
unix socket, granted to a bound pod through Allocate, with the backend's container edits.
"""

from __future__ import annotations

import os

import pytest
import yaml
from kubernetes import client

from hami import hookimpl
from hami.backendkit.standard import StandardBackend
from hami.fakes.kubelet import FakeKubelet
from hami.fakes.kubelet.sample_plugin import SamplePlugin
from hami.node.deviceplugin.v1beta1 import api_pb2
from hami.plugin.model import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    DeviceKind,
    DeviceNode,
    Grant,
    ResourceNames,
)
from hami.wire.codec import decode_node_devices, encode_node_devices

NODE = "npu-node"
KIND = DeviceKind(
    "ACME",
    ResourceNames(count="acme.com/npu", memory="acme.com/npumem"),
    AnnotationKeys.hami("hami.io/node-acme-register", "hami.io/node-handshake-acme", "hami.io/acme"),
)


class AcmeBackend(StandardBackend):
    @hookimpl
    def hami_container_edits(self, grants, pod, container, config):
        return ContainerEdits(
            env={"ACME_VISIBLE_DEVICES": ",".join(g.id for g in grants)},
            devices=[DeviceNode(f"/dev/acme{g.id[-1]}", f"/dev/acme{g.id[-1]}") for g in grants],
        )


@pytest.fixture
def manager(hami_manager, register_backend, tmp_path):
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": NODE, "devices": [{"vendor": "ACME", "type": "ACME X1", "memory": 16384, "count": 2}]}]})
    )
    backend = AcmeBackend(BackendInfo(name="acme", kinds=[KIND], host_paths=["/dev"]))
    register_backend(backend, config={"inventory": str(inventory), "split_count": 2})
    return hami_manager


def test_device_to_container(manager, core_v1, kubelet_dir):
    # node side: discover, split, register the node annotation through the real client
    devices = [manager.split(d) for d in manager.discover("acme", NODE)]
    assert [(d.id, d.count) for d in devices] == [("ACME-npu-node-0", 2), ("ACME-npu-node-1", 2)]
    slots = [f"{d.id}::{i}" for d in devices for i in range(d.count)]

    with FakeKubelet(kubelet_dir, node_name=NODE, core_v1=core_v1) as kubelet:
        core_v1.patch_node(NODE, {"metadata": {"annotations": {KIND.annotations.node_register: encode_node_devices(devices, "json")}}})
        stored = core_v1.read_node(NODE).metadata.annotations[KIND.annotations.node_register]
        assert decode_node_devices(stored, "ACME", "json") == tuple(devices)

        def allocate(request: api_pb2.ContainerAllocateRequest) -> api_pb2.ContainerAllocateResponse:
            grants = [Grant(slot.split("::")[0], "ACME", 8192, 0) for slot in request.devices_ids]
            edits = manager.container_edits(grants, {}, {"name": "main"})
            return api_pb2.ContainerAllocateResponse(
                envs=dict(edits.env),
                devices=[
                    api_pb2.DeviceSpec(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions)
                    for d in edits.devices
                ],
            )

        plugin = SamplePlugin(os.path.join(kubelet_dir, "acme.sock"), slots, allocate=allocate).start()
        try:
            plugin.register(kubelet.socket_path, KIND.resources.count)
            kubelet.wait_devices(KIND.resources.count, len(slots))
            kubelet.wait_for(
                lambda: core_v1.read_node(NODE).status.allocatable.get(KIND.resources.count) == "4", what="allocatable mirrored"
            )

            # pod side: created and bound through the real client, admitted by kubelet
            pod = client.V1Pod(
                metadata=client.V1ObjectMeta(name="trainer", namespace="default"),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="main", image="busybox", resources=client.V1ResourceRequirements(limits={KIND.resources.count: "2"})
                        )
                    ]
                ),
            )
            core_v1.create_namespaced_pod("default", pod)
            binding = client.V1Binding(
                metadata=client.V1ObjectMeta(name="trainer"), target=client.V1ObjectReference(kind="Node", name=NODE)
            )
            core_v1.create_namespaced_pod_binding("trainer", "default", binding, _preload_content=False)
            bound = core_v1.read_namespaced_pod("trainer", "default")
            assert bound.spec.node_name == NODE

            result = kubelet.admit(bound)
            assert result.admitted, result.error
            main = result.container("main")
            visible = main.envs["ACME_VISIBLE_DEVICES"].split(",")
            assert len(visible) == 2 and set(visible) <= {d.id for d in devices}
            assert {d.host_path for d in main.device_specs} <= {"/dev/acme0", "/dev/acme1"}
            assert len(plugin.allocate_calls) == 1
        finally:
            plugin.stop()
