"""deploy/examples: every pod is valid Kubernetes, and on the default heterogeneous node set
(deploy/examples/nodes.yaml) it is admitted and scheduled by the real webhook and extender code —
or it is rejected / stays pending exactly when its ``hami.io/expect`` annotation says so."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from hami.backendkit.inventory import load_inventory
from hami.node.devices import discover_node
from hami.node.registration import node_annotations
from hami.plugin.manager import BackendManager, load_backends
from hami.scheduler.core import Scheduler
from hami.scheduler.state import ClusterState
from hami.webhook.admission import admit_pod
from hami.webhook.config import WebhookConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
NODES = EXAMPLES / "nodes.yaml"
ALL_VENDORS = EXAMPLES / "nodes-all-vendors.yaml"  # vendors outside the default node set
POD_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("nodes"))
SEED = {
    "nvidia-gpumem.yaml",
    "nvidia-gpucores.yaml",
    "nvidia-use-gputype.yaml",
    "nvidia-use-gpuuuid.yaml",
    "cambricon-mlu.yaml",
    "ascend-910b.yaml",
}


def _pod(path: Path) -> dict[str, Any]:
    pod = yaml.safe_load(path.read_text())
    pod["metadata"].setdefault("namespace", "default")
    pod["metadata"]["uid"] = f"uid-{path.stem}"
    for container in [*(pod["spec"].get("initContainers") or []), *pod["spec"]["containers"]]:
        limits = (container.get("resources") or {}).get("limits") or {}
        for name, value in limits.items():  # kube-apiserver hands the webhook canonical quantity strings
            limits[name] = str(value)
    return pod


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[BackendManager, ClusterState, list[str]]:
    manager = load_backends(strict=True)
    merged = tmp_path_factory.mktemp("nodes") / "nodes.yaml"
    merged.write_text(yaml.safe_dump({"nodes": [n for f in (NODES, ALL_VENDORS) for n in yaml.safe_load(f.read_text())["nodes"]]}))
    for backend in manager.backends:
        manager.configure(backend, {"inventory": str(merged)})
    state = ClusterState(manager.kinds)
    names = [n.name for n in load_inventory(merged)]
    for name in names:
        annotations = node_annotations(manager.kinds, discover_node(manager, name), {}, {}, time.time())
        state.apply_node({"metadata": {"name": name, "annotations": annotations}})
    return manager, state, names


def test_the_seed_examples_and_one_per_backend_exist() -> None:
    names = {p.name for p in POD_FILES}
    assert names >= SEED
    for prefix in ("nvidia-", "ascend-", "cambricon-", "hygon-"):
        assert any(n.startswith(prefix) for n in names), prefix


def test_the_node_set_registers_every_vendor(cluster) -> None:
    _, state, names = cluster
    vendors = {d.vendor for n in names for d in state.nodes[n].devices.values()}
    assert {"NVIDIA", "Ascend910B3", "MLU", "DCU"} <= vendors
    assert all(state.nodes[n].devices and not state.nodes[n].problems for n in names)


@pytest.mark.parametrize("path", POD_FILES, ids=lambda p: p.stem)
def test_example_is_valid_kubernetes(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    kubernetes_validate.validate(document, "1.31.0", strict=True)
    expect = (document["metadata"].get("annotations") or {}).get("hami.io/expect")
    assert expect in (None, "pending", "rejected")
    if expect:
        assert path.read_text().startswith("#") and "Meant to" in path.read_text(), "an expected failure says why in a comment"


@pytest.mark.parametrize("path", POD_FILES, ids=lambda p: p.stem)
def test_example_meets_its_expectation(path: Path, cluster) -> None:
    manager, state, names = cluster
    pod = _pod(path)
    expect = pod["metadata"].get("annotations", {}).get("hami.io/expect")
    decision = admit_pod(manager, copy.deepcopy(pod), "default", WebhookConfig())
    if expect == "rejected":
        assert not decision.allowed and decision.code == 403, decision
        return
    assert decision.allowed, decision.message
    mutated = jsonpatch.apply_patch(pod, list(decision.patch))
    assert mutated["spec"]["schedulerName"] == "hami-scheduler"
    scheduler = Scheduler(manager, state, None)
    try:
        outcome = scheduler.filter(mutated, names)
    finally:
        scheduler.close()
    assert outcome.managed
    if expect == "pending":
        assert outcome.node is None and not outcome.error, outcome
        return
    assert outcome.node, f"{path.name} fits no node: {outcome.error or dict(outcome.failed)}"
    with state.lock:  # the assumption the filter recorded: forget it, examples are independent
        state.forget_pod(pod["metadata"]["uid"])
    kinds = {d.vendor for d in state.nodes[outcome.node].devices.values()}
    wanted = {
        "nvidia": "NVIDIA",
        "ascend": "Ascend910B3",
        "cambricon": "MLU",
        "hygon": "DCU",
        "amd": "AMD",
        "awsneuron": "AWSNeuron",
        "mthreads": "Mthreads",
        "iluvatar": "BI-V150",
        "metax": "Metax-SGPU",
        "kunlunxin": "XPU",
        "enflame": "Enflame",
        "biren": "Biren",
        "vastai": "Vastai",
    }[path.stem.split("-")[0]]
    assert wanted in kinds
    if path.name == "nvidia-use-gpuuuid.yaml":
        assert outcome.node == "gpu-a100"
