"""``hami top`` against the in-memory API server: the JSON view and the table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hami.node.devices import discover_node
from hami.node.registration import node_annotations
from hami.plugin.manager import load_backends
from hami.plugin.model import Grant
from hami.top import render, snapshot, top_command
from hami.wire.allocation import Allocation
from hami.wire.annotations import DEVICE_CORDON

NODES = {
    "gpu-1": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960, "count": 2}],
    "dcu-1": [{"vendor": "DCU", "type": "DCU Z100L", "memory": 32768, "count": 1}],
}


@pytest.fixture
def cluster(kube_apiserver, core_v1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Two registered nodes, a plain node, and three pods (one finished); returns a kubeconfig path."""
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(yaml.safe_dump({"nodes": [{"name": n, "devices": d} for n, d in NODES.items()]}))
    monkeypatch.setenv("HAMI_INVENTORY", str(inventory))
    manager = load_backends(allow=("nvidia", "hygon"))
    for name in NODES:
        annotations = node_annotations(manager.kinds, discover_node(manager, name), {}, {}, time.time())
        if name == "gpu-1":
            annotations[DEVICE_CORDON] = "NVIDIA-gpu-1-0"
        core_v1.create_node({"metadata": {"name": name, "annotations": annotations}})
    core_v1.create_node({"metadata": {"name": "cpu-only"}})

    def pod(name: str, node: str, vendor: str, grants: list[list[Grant]], containers: list[str], phase: str = "Running") -> None:
        core_v1.create_namespaced_pod(
            "ml", {"metadata": {"name": name}, "spec": {"containers": [{"name": c, "image": "x"} for c in containers]}}
        )
        uid = core_v1.read_namespaced_pod(name, "ml").metadata.uid
        annotations = Allocation(node, {vendor: tuple(tuple(g) for g in grants)}).annotations(manager.kinds, uid, time.time(), None)
        core_v1.patch_namespaced_pod(name, "ml", {"metadata": {"annotations": annotations}})
        core_v1.create_namespaced_pod_binding(
            name, "ml", {"metadata": {"name": name}, "target": {"kind": "Node", "name": node}}, _preload_content=False
        )
        core_v1.patch_namespaced_pod_status(name, "ml", {"status": {"phase": phase}})

    pod(
        "train",
        "gpu-1",
        "NVIDIA",
        [[Grant("NVIDIA-gpu-1-1", "NVIDIA", 3000, 30)], [Grant("NVIDIA-gpu-1-1", "NVIDIA", 1000, 0)]],
        ["main", "side"],
    )
    pod("dcu", "dcu-1", "DCU", [[Grant("DCU-dcu-1-0", "DCU", 4000, 25)]], ["main"])
    pod("finished", "gpu-1", "NVIDIA", [[Grant("NVIDIA-gpu-1-0", "NVIDIA", 9000, 0)]], ["main"], phase="Succeeded")
    path = tmp_path / "kubeconfig"
    kube_apiserver.write_kubeconfig(path)
    monkeypatch.setenv("HAMI_BACKENDS", "nvidia,hygon")
    return str(path)


def test_top_json(cluster: str) -> None:
    result = CliRunner().invoke(top_command, ["--json", "--kubeconfig", cluster])
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert [n["name"] for n in view["nodes"]] == ["dcu-1", "gpu-1"]  # cpu-only has no devices
    gpu = {d["id"]: d for d in view["nodes"][1]["devices"]}
    used = gpu["NVIDIA-gpu-1-1"]
    assert used["memory_mib"] == {"used": 4000, "total": 40960} and used["cores"] == {"used": 30, "total": 100}
    assert used["slots"] == {"used": 2, "total": 10}
    assert [(p["pod"], p["container"], p["memory_mib"]) for p in used["pods"]] == [("train", "main", 3000), ("train", "side", 1000)]
    idle = gpu["NVIDIA-gpu-1-0"]
    assert idle["memory_mib"]["used"] == 0 and idle["pods"] == [] and idle["cordoned"]  # the finished pod holds nothing
    (dcu,) = view["nodes"][0]["devices"]
    assert (dcu["vendor"], dcu["memory_mib"]["used"], dcu["cores"]["used"]) == ("DCU", 4000, 25)


def test_top_table(cluster: str) -> None:
    result = CliRunner().invoke(top_command, ["--kubeconfig", cluster, "--node", "gpu-1"])
    assert result.exit_code == 0, result.output
    assert "gpu-1" in result.output and "dcu-1" not in result.output
    assert "ml/train[main] 3000Mi 30%" in result.output and "4000/40960" in result.output and "cordoned" in result.output


def test_top_explains_an_empty_cluster_and_broken_annotations() -> None:
    assert "No node has registered hami devices" in render(snapshot({}, [], []), width=200)
    manager = load_backends(allow=("nvidia",))
    view = snapshot(manager.kinds, [{"metadata": {"name": "n", "annotations": {"hami.io/node-nvidia-register": "not json"}}}], [])
    assert "corrupt" in view["nodes"][0]["problems"]["NVIDIA"]
    assert "corrupt" in render(view, width=200)


def test_top_reports_an_unreachable_api_server(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    result = CliRunner().invoke(top_command, ["--kubeconfig", str(path)])
    assert result.exit_code == 1 and "cannot list nodes and pods" in result.output
