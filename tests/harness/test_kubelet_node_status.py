"""Fake kubelet mirrors device plugin resources into the Node on the in-memory API server.

``core_v1`` is the in-memory API server's fixture (real ``kubernetes`` client over HTTP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from hami.fakes.kubelet import FakeKubelet, SamplePlugin
from hami.node.deviceplugin import UNHEALTHY

RESOURCE = "example.com/dev"


def node_counts(api: client.CoreV1Api, resource: str = RESOURCE) -> tuple[Any, Any]:
    status = api.read_node("node-1").status or client.V1NodeStatus()
    return (status.capacity or {}).get(resource), (status.allocatable or {}).get(resource)


def wait_counts(kubelet: FakeKubelet, api: client.CoreV1Api, want: tuple[Any, Any]) -> None:
    try:
        kubelet.wait_for(lambda: node_counts(api) == want, 5, f"node counts {want}")
    except TimeoutError:
        assert node_counts(api) == want  # show the last state


def test_capacity_and_allocatable_follow_plugin(core_v1: client.CoreV1Api, kubelet_dir: Path) -> None:
    with FakeKubelet(kubelet_dir, "node-1", core_v1=core_v1, stream_grace_period=0) as kubelet:
        node = core_v1.read_node("node-1")  # kubelet registered its node
        assert node.metadata.labels["kubernetes.io/hostname"] == "node-1"
        assert node.status.capacity["pods"] == "110"

        with SamplePlugin(kubelet_dir / "p.sock", ["d0", "d1", "d2"]) as plugin:
            plugin.register(kubelet.socket_path, RESOURCE)
            wait_counts(kubelet, core_v1, ("3", "3"))

            plugin.set_health("d2", UNHEALTHY)
            # As kubelet reports it: capacity counts every device, allocatable only healthy ones.
            wait_counts(kubelet, core_v1, ("3", "2"))

            plugin.set_devices(["d0"])
            wait_counts(kubelet, core_v1, ("1", "1"))
            assert core_v1.read_node("node-1").status.capacity["cpu"] == "16", "other resources untouched"

        # The plugin went away: with grace period 0 the resource disappears from the node.
        wait_counts(kubelet, core_v1, (None, None))


def test_existing_node_is_patched_not_recreated(core_v1: client.CoreV1Api, kubelet_dir: Path) -> None:
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="node-1", labels={"zone": "a"})))
    with FakeKubelet(kubelet_dir, "node-1", core_v1=core_v1) as kubelet, SamplePlugin(kubelet_dir / "p.sock", ["d0", "d1"]) as plugin:
        plugin.register(kubelet.socket_path, RESOURCE)
        wait_counts(kubelet, core_v1, ("2", "2"))
    assert core_v1.read_node("node-1").metadata.labels == {"zone": "a"}
