"""The sandbox end to end: every example pod admitted, scheduled, bound and allocated in one process,
with the edits each container gets; deleting the pods frees every device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hami.plugin.manager import load_backends
from hami.sandbox.cli import load_pods
from hami.sandbox.cluster import Sandbox, default_nodes_file
from hami.sandbox.defaults import write_default_cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """The cluster ``hami sandbox`` runs by default: a node of every installed vendor (all of them here)."""
    manager = load_backends()
    with Sandbox(write_default_cluster(tmp_path_factory.mktemp("cluster"), manager.kinds), manager=manager) as running:
        yield running


@pytest.fixture(scope="module")
def outcomes(sandbox):
    return {o.name: o for o in (sandbox.submit(pod) for pod in load_pods(()))}


def container(outcome, name):
    return next(c for c in outcome.containers if c.name == name)


def test_the_packaged_default_nodes_are_the_examples_nodes():
    assert default_nodes_file().read_text() == (ROOT / "deploy" / "examples" / "nodes.yaml").read_text()


def test_every_example_reaches_the_phase_it_expects(outcomes):
    wrong = {name: (o.phase, o.expected, o.reason) for name, o in outcomes.items() if not o.as_expected}
    assert not wrong
    assert len(outcomes) >= 15
    assert sum(o.phase == "Running" for o in outcomes.values()) >= 13


def test_every_vendors_example_pod_runs_on_its_node(outcomes):
    """Issue 22: a sandbox with a node of every vendor runs each vendor's example pod."""
    nodes = {
        "amd-share": "amd-mi300x",
        "neuron-core": "neuron-inf2",
        "mthreads-share": "mthreads-s4000",
        "iluvatar-share": "iluvatar-bi150",
        "metax-share": "metax-c500",
        "kunlunxin-share": "kunlunxin-p800",
        "enflame-drs": "enflame-s60",
        "biren-gpu": "biren-166m",
        "vastai-va": "vastai-va1",
    }
    assert {name: (outcomes[name].phase, outcomes[name].node) for name in nodes} == {
        name: ("Running", node) for name, node in nodes.items()
    }


def test_init_container_app_containers_and_a_sidecar(outcomes):
    pod = outcomes["gpu-multi-container"]
    assert pod.phase == "Running" and pod.node in ("gpu-a100", "gpu-v100")
    assert [(d.memory_mib, d.cores) for d in container(pod, "warmup").devices] == [(1000, 0)]
    trainer = container(pod, "trainer")
    assert [(d.memory_mib, d.cores) for d in trainer.devices] == [(6000, 30)]
    assert trainer.envs["CUDA_DEVICE_MEMORY_LIMIT_0"] == "6000m" and trainer.envs["CUDA_DEVICE_SM_LIMIT"] == "30"
    assert trainer.envs["NVIDIA_VISIBLE_DEVICES"] == trainer.devices[0].uuid
    assert [(d.memory_mib, d.cores) for d in container(pod, "evaluator").devices] == [(2000, 0)]
    logs = container(pod, "logs")
    assert logs.devices == () and logs.envs == {}  # the sidecar asks for nothing and gets nothing


def test_selectors(outcomes):
    assert [d.uuid for d in outcomes["gpu-use-gpuuuid"].containers[0].devices] == ["NVIDIA-gpu-a100-1"]
    assert outcomes["gpu-use-gputype"].containers[0].devices[0].type in ("NVIDIA A100-SXM4-80GB", "Tesla V100-SXM2-32GB")


def test_each_vendor_gets_its_edits(outcomes):
    by_env = {name: {k for c in o.containers for k in c.envs} for name, o in outcomes.items() if o.phase == "Running"}
    assert any("ASCEND_VISIBLE_DEVICES" in envs for envs in by_env.values())
    assert any("CAMBRICON_VISIBLE_DEVICES" in envs for envs in by_env.values())
    dcu = [o for o in outcomes.values() if o.node == "dcu-z100" and o.phase == "Running"]
    assert dcu and any(n["host_path"] == "/dev/kfd" for c in dcu[0].containers for n in c.device_nodes)


def test_impossible_pods_say_why(outcomes):
    too_large = outcomes["gpu-too-large"]
    assert too_large.phase == "Pending" and "CardInsufficientMemory" in too_large.reason
    invalid = [o for o in outcomes.values() if o.expected == "Rejected"]
    assert invalid and all(o.phase == "Rejected" and o.reason.startswith("admission webhook:") for o in invalid)


def test_a_pod_no_device_matches_stays_pending(sandbox, outcomes):
    pod = yaml.safe_load("""
    apiVersion: v1
    kind: Pod
    metadata: {name: wants-h100, annotations: {nvidia.com/use-gputype: H100}}
    spec: {containers: [{name: c, image: cuda, resources: {limits: {nvidia.com/gpumem: 1000}}}]}
    """)
    outcome = sandbox.submit(pod)
    assert outcome.phase == "Pending" and "CardTypeMismatch" in outcome.reason


def test_deleting_every_pod_frees_every_device(sandbox, outcomes):
    assert any(d["used_slots"] for n in sandbox.nodes() for d in n["devices"])
    for o in list(outcomes.values()):
        if o.phase == "Running":
            sandbox.delete(o.namespace, o.name)
    assert sandbox.wait_idle(), sandbox.nodes()


def test_the_command_prints_json_and_fails_on_a_surprise(tmp_path):
    pods = tmp_path / "pods.yaml"
    pods.write_text("""
apiVersion: v1
kind: Pod
metadata: {name: fits}
spec: {containers: [{name: c, image: cuda, resources: {limits: {hygon.com/dcunum: 1, hygon.com/dcumem: 1000}}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: surprise}
spec: {containers: [{name: c, image: cuda, resources: {limits: {nvidia.com/gpumem: 999999}}}]}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    result = subprocess.run(
        [sys.executable, "-m", "hami.cli", "sandbox", "--pods", str(pods), "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1
    assert "error: pod default/surprise is Pending, expected Running" in result.stderr
    report = json.loads(result.stdout)
    fits = next(p for p in report["pods"] if p["name"] == "fits")
    assert {"namespace", "name", "phase", "node", "reason", "containers"} <= set(fits)
    assert fits["phase"] == "Running" and fits["node"] == "dcu-z100"
    (device,) = fits["containers"][0]["devices"]
    assert {"uuid", "type", "memory_mib", "cores"} <= set(device) and device["memory_mib"] == 1000
    assert {"name", "devices", "envs", "mounts", "device_nodes"} <= set(fits["containers"][0])
    node = next(n for n in report["nodes"] if n["name"] == "dcu-z100")
    assert {"id", "type", "memory_mib", "used_memory_mib", "cores", "used_cores", "slots", "used_slots"} <= set(node["devices"][0])
    assert sum(d["used_memory_mib"] for d in node["devices"]) == 1000


def test_every_node_is_simulated_with_its_own_state_dir(sandbox):
    """The agents share the sandbox's process: the inventory alone makes each node simulated (no
    ``simulate`` key), and each node's backends keep their state (MIG and vNPU ledgers, vdev configs)
    in a directory of their own, never under /var/lib/hami."""
    contexts = [(node, c) for node, agent in sandbox.agents.items() for c in agent.discovery.contexts.values()]
    assert len({node for node, _ in contexts}) == len(sandbox.inventory) >= 2
    assert all(c.simulated and c.name == node and "simulate" not in c.config for node, c in contexts)
    dirs = [c.state_dir for _, c in contexts]
    assert len(set(dirs)) == len(dirs) and not any(Path("/var/lib/hami") in d.parents for d in dirs)
