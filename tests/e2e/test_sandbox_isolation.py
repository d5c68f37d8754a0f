"""Issue 28 in the sandbox: simulated nodes are enforced by definition, unless the inventory says a
device's isolation is missing (device attribute ``isolation_missing: <why>``). Such a device is offered
whole only: a share stays Pending with the node and the reason in the scheduler's message, a whole GPU
runs, and the devices table says ``whole-only``; ``advisory_limits: true`` offers the shares anyway."""

from __future__ import annotations

import pytest
import yaml

from hami.plugin.manager import load_backends
from hami.sandbox.cluster import Sandbox

NODES = {
    "nodes": [
        {
            "name": "ready",
            "cpu": 16,
            "memory": "64Gi",
            "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": "40Gi", "count": 1}],
        },
        {
            "name": "bare",
            "cpu": 16,
            "memory": "64Gi",
            "devices": [
                {
                    "vendor": "NVIDIA",
                    "type": "NVIDIA A100",
                    "memory": "40Gi",
                    "count": 1,
                    "attributes": {"isolation_missing": "HAMi-core is not installed"},
                }
            ],
        },
    ]
}


def _pod(name, limits, node=None):
    spec = {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": limits}}]}
    if node:
        spec["affinity"] = _only(node)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def nodes_file(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(NODES))
    return path


def _manager():
    return load_backends(allow=("nvidia",))


def test_a_node_without_enforcement_takes_whole_gpus_only_and_says_why(nodes_file):
    with Sandbox(nodes_file, manager=_manager()) as sandbox:
        by_node = {n["name"]: n["devices"] for n in sandbox.nodes()}
        assert [(d["slots"], d["isolation"]) for d in by_node["ready"]] == [(10, "enforced")]
        assert [(d["slots"], d["isolation"], d["isolation_reason"]) for d in by_node["bare"]] == [
            (1, "whole-only", "HAMi-core is not installed (simulated)")
        ]
        first = sandbox.submit(_pod("share-1", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4000}))
        assert (first.phase, first.node) == ("Running", "ready")
        pinned = sandbox.submit(_pod("share-2", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4000}, node="bare"))
        assert pinned.phase == "Pending"
        assert "IsolationMissing (HAMi-core is not installed (simulated); only whole devices)" in pinned.reason
        whole = sandbox.submit(_pod("whole", {"nvidia.com/gpu": 1}, node="bare"))
        assert (whole.phase, whole.node) == ("Running", "bare")


def _only(node):
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def test_advisory_limits_offer_the_shares_and_say_advisory(nodes_file):
    with Sandbox(nodes_file, manager=_manager(), settings={"backends": {"nvidia": {"advisory_limits": True}}}) as sandbox:
        by_node = {n["name"]: n["devices"] for n in sandbox.nodes()}
        assert [(d["slots"], d["isolation"]) for d in by_node["bare"]] == [(10, "advisory")]
