"""``hami top`` shows used against granted (issue 20) from the agents' usage summary on each Node,
and ``--watch`` refreshes; the agent's sampler publishes that summary over the API server."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hami.node.devices import discover_node
from hami.node.registration import node_annotations
from hami.node.usage import USAGE_ANNOTATION, UsageSampler
from hami.plugin.manager import load_backends
from hami.plugin.model import Grant
from hami.top import render, snapshot, top_command
from hami.wire.allocation import Allocation

NODE = "gpu-1"
GPU0, GPU1 = f"NVIDIA-{NODE}-0", f"NVIDIA-{NODE}-1"
MIB = 1 << 20


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": NODE, "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960, "count": 2}]}]})
    )
    monkeypatch.setenv("HAMI_INVENTORY", str(inventory))
    monkeypatch.setenv("HAMI_BACKENDS", "nvidia")
    return load_backends(allow=("nvidia",))


@pytest.fixture
def cluster(kube_apiserver, core_v1, manager, tmp_path: Path) -> tuple[str, object]:
    """A registered node with a running pod of two containers on GPU1; returns (kubeconfig, agent view)."""
    core_v1.create_node(
        {"metadata": {"name": NODE, "annotations": node_annotations(manager.kinds, discover_node(manager, NODE), {}, {}, time.time())}}
    )
    core_v1.create_namespaced_pod(
        "ml", {"metadata": {"name": "train"}, "spec": {"containers": [{"name": "main", "image": "x"}, {"name": "side", "image": "x"}]}}
    )
    uid = core_v1.read_namespaced_pod("train", "ml").metadata.uid
    grants = ((Grant(GPU1, "NVIDIA", 3000, 30),), (Grant(GPU1, "NVIDIA", 1000, 0),))
    core_v1.patch_namespaced_pod(
        "train",
        "ml",
        {"metadata": {"annotations": Allocation(NODE, {"NVIDIA": grants}).annotations(manager.kinds, uid, time.time(), None)}},
    )
    core_v1.create_namespaced_pod_binding(
        "train", "ml", {"metadata": {"name": "train"}, "target": {"kind": "Node", "name": NODE}}, _preload_content=False
    )
    core_v1.patch_namespaced_pod_status("train", "ml", {"status": {"phase": "Running"}})
    path = tmp_path / "kubeconfig"
    kube_apiserver.write_kubeconfig(path)
    pods = json.loads(core_v1.list_pod_for_all_namespaces(_preload_content=False).data)["items"]
    agent = types.SimpleNamespace(node=NODE, manager=manager, discovery=discover_node(manager, NODE), core_v1=core_v1)
    return str(path), types.SimpleNamespace(agent=agent, pods=pods)


def test_the_agent_publishes_its_sample_and_top_shows_used_against_granted(cluster, core_v1):
    kubeconfig, world = cluster
    sampler = UsageSampler(world.agent, lambda: world.pods)
    snap = sampler.sample()
    assert sampler.publish() and not sampler.publish()  # then not again before the publish interval
    summary = json.loads(core_v1.read_node(NODE).metadata.annotations[USAGE_ANNOTATION])
    shares = {s.container: s for s in snap.shares()}
    assert summary["shares"]["ml/train/main"][GPU1][0] == shares["main"].memory_used
    assert set(summary["devices"]) == {GPU0, GPU1}

    result = CliRunner().invoke(top_command, ["--json", "--kubeconfig", kubeconfig])
    assert result.exit_code == 0, result.output
    (node,) = json.loads(result.output)["nodes"]
    device = {d["id"]: d for d in node["devices"]}[GPU1]
    assert device["usage"]["memory_mib"] == summary["devices"][GPU1][0] // MIB
    main = next(p for p in device["pods"] if p["container"] == "main")
    assert (main["memory_mib"], main["used_mib"]) == (3000, shares["main"].memory_used // MIB)
    assert main["used_mib"] < main["memory_mib"] and main["throttled"] is False
    assert node["usage_sampled_at"] == summary["t"]

    assert f"ml/train[main] 3000Mi 30% → used {main['used_mib']}Mi" in render(json.loads(result.output), width=300)
    table = CliRunner().invoke(top_command, ["--kubeconfig", kubeconfig])
    assert table.exit_code == 0 and "in use" in table.output and "busy" in table.output


def test_a_new_container_is_published_before_the_interval(cluster):
    _, world = cluster
    pods = []
    sampler = UsageSampler(world.agent, lambda: pods, interval=0.0)
    sampler.sample()
    assert sampler.publish()
    pods.extend(world.pods)
    sampler.sample()
    assert sampler.publish()  # the container set changed


def test_top_watch_refreshes(cluster):
    kubeconfig, _ = cluster
    result = CliRunner().invoke(top_command, ["--kubeconfig", kubeconfig, "--watch", "--interval", "0.1", "--iterations", "3", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["nodes"][0]["name"] == NODE for line in lines)
    table = CliRunner().invoke(top_command, ["--kubeconfig", kubeconfig, "-w", "-n", "0.1", "--iterations", "2"])
    assert table.output.count("Every 0.1s: hami top") == 2


@pytest.mark.parametrize(
    "text", ["not json", json.dumps({"devices": []}), json.dumps({"devices": {GPU1: "x"}, "shares": {"ml/a/main": 3}})]
)
def test_a_broken_summary_shows_no_usage_and_no_error(manager, text):
    annotations = node_annotations(manager.kinds, discover_node(manager, NODE), {}, {}, time.time())
    view = snapshot(manager.kinds, [{"metadata": {"name": NODE, "annotations": {**annotations, USAGE_ANNOTATION: text}}}], [])
    assert all("usage" not in d for d in view["nodes"][0]["devices"])
    assert "gpu-1" in render(view, width=200)


def test_over_its_grant_is_red_and_throttled_is_said(manager):
    annotations = node_annotations(manager.kinds, discover_node(manager, NODE), {}, {}, time.time())
    summary = {"t": 1, "devices": {GPU1: [5000 * MIB, 90.0]}, "shares": {"ml/p/main": {GPU1: [4000 * MIB, 60.0, 1]}}}
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "ml",
            "uid": "u1",
            "annotations": Allocation(NODE, {"NVIDIA": ((Grant(GPU1, "NVIDIA", 3000, 30),),)}).annotations(
                manager.kinds, "u1", time.time(), None
            ),
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "main"}]},
        "status": {"phase": "Running"},
    }
    view = snapshot(
        manager.kinds, [{"metadata": {"name": NODE, "annotations": {**annotations, USAGE_ANNOTATION: json.dumps(summary)}}}], [pod]
    )
    holder = {d["id"]: d for d in view["nodes"][0]["devices"]}[GPU1]["pods"][0]
    assert (holder["used_mib"], holder["utilization"], holder["throttled"]) == (4000, 60.0, True)
    text = render(view, width=240)
    assert "used 4000Mi (133%) 60%" in text and "throttled" in text and "90% busy" in text
