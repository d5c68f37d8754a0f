"""HAMi's MIG metrics, end to end in a sandbox cluster with a MIG node (issue 18).

The MIG example (deploy/examples/mig: an A100 in MIG mode, a pod of an init container and two
MIG containers) runs in a sandbox; the agent hands each container an instance and writes HAMi's
``hami.io/vgpu-mig-allocations`` (pkg/device/nvidia/mig_allocations.go, filled as
pkg/device-plugin/nvidiadevice/nvinternal/plugin/server.go annotateMigRuntimeInfo does); the
scheduler's ``/metrics`` shows ``hami_node_gpu_mig_instance_info`` (cmd/scheduler/metrics.go
collectNodeMetrics) and the agent's ``hami_mig_device_info`` (cmd/vGPUmonitor/metrics.go
collectPodAndContainerMigInfo), with upstream's labels, the const label ``zone="vGPU"`` and, with
``--legacy-metrics``, ``nodeGPUMigInstance``/``MigInfo``. Upstream's Grafana dashboard
(dashboards/hami-vgpu-dashboard.json) has no MIG panel, so the queries fed here are the ones HAMi's
documentation gives for these series (the dynamic-MIG user guide's "Monitor realized MIG instances":
the scheduler series, joined to the per-container one by ``device_uuid`` and ``gpu_instance_id``),
read by the PromQL selector reader of test_dashboard_compat.py.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

_spec = importlib.util.spec_from_file_location("_dashboard_compat", Path(__file__).with_name("test_dashboard_compat.py"))
assert _spec is not None and _spec.loader is not None
_compat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_compat)
selectors = _compat.selectors

ANNOTATION = "hami.io/vgpu-mig-allocations"
GPU = "NVIDIA-gpu-mig-0"


EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "mig"
"""The MIG example: ``hami sandbox --nodes deploy/examples/mig/nodes.yaml --pods deploy/examples/mig/nvidia-mig.yaml``."""

# cmd/scheduler/metrics.go nodeGPUMigInstance and cmd/vGPUmonitor/metrics.go ctrDeviceMigInfo, plus zone
NODE_LABELS = {
    "node",
    "device_uuid",
    "device_index",
    "mig_uuid",
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
    "placement_start",
    "placement_size",
    "zone",
}
CONTAINER_LABELS = {
    "namespace",
    "pod",
    "container",
    "vdevice_index",
    "device_uuid",
    "mig_uuid",
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
    "zone",
}
QUERIES = [
    'hami_node_gpu_mig_instance_info{node=~"$node"}',
    'count by (node, profile) (hami_node_gpu_mig_instance_info{profile=~".+"})',
    "hami_mig_device_info * on (device_uuid, gpu_instance_id) group_left (node, placement_start, placement_size) hami_node_gpu_mig_instance_info",
]

Series = list[tuple[str, dict[str, str], float]]


def _scrape(url: str) -> Series:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _collect(collector: Any) -> Series:
    return [(s.name, dict(s.labels), s.value) for family in collector.collect() for s in family.samples]


@pytest.fixture(scope="module")
def cluster():
    from hami.node.metrics import AgentCollector, serve_metrics
    from hami.sandbox.cli import load_pods
    from hami.sandbox.cluster import Sandbox
    from hami.scheduler.metrics import AllocationCollector, api_placed_pods

    with Sandbox(EXAMPLE / "nodes.yaml") as sandbox:
        assert sandbox.core_v1 is not None and sandbox.service is not None
        service = sandbox.service
        (pod,) = load_pods((str(EXAMPLE / "nvidia-mig.yaml"),))
        outcome = sandbox.submit(pod)
        assert outcome.phase == "Running", outcome
        stored = json.loads(sandbox.core_v1.read_namespaced_pod("mig-job", "default", _preload_content=False).data)  # type: ignore[attr-defined]
        annotation = stored["metadata"]["annotations"].get(ANNOTATION)
        (agent,) = sandbox.agents.values()
        server = serve_metrics(agent.metrics.registry, "127.0.0.1", 0)
        try:
            series = _scrape(service.server.url) + _scrape(server.url)
            legacy = _collect(AllocationCollector(service.state, legacy=True, pods=api_placed_pods(sandbox.core_v1)))
            legacy += _collect(AgentCollector(agent, legacy=True))
            sandbox.delete("default", "mig-job")
            after = _scrape(service.server.url) + _scrape(server.url)
        finally:
            server.stop()
    return {"outcome": outcome, "annotation": annotation, "series": series, "legacy": legacy, "after": after}


def test_the_agent_records_each_container_s_instance_as_hami_does(cluster):
    """pkg/device/nvidia/mig_allocations.go: containerIndex counts init containers first."""
    envs = {c.name: c.envs.get("NVIDIA_VISIBLE_DEVICES") for c in cluster["outcome"].containers}
    assert envs == {"setup": None, "small": "MIG-a", "big": "MIG-c"}
    assert json.loads(cluster["annotation"]) == [
        {
            "containerIndex": 1,
            "deviceIndex": 0,
            "gpuUUID": GPU,
            "profile": "1g.10gb",
            "placement": {"start": 6, "size": 1},
            "migUUID": "MIG-a",
            "gpuInstanceID": 9,
            "computeInstanceID": 0,
        },
        {
            "containerIndex": 2,
            "deviceIndex": 0,
            "gpuUUID": GPU,
            "profile": "3g.40gb",
            "placement": {"start": 0, "size": 4},
            "migUUID": "MIG-c",
            "gpuInstanceID": 2,
            "computeInstanceID": 0,
        },
    ]


def test_the_scheduler_exports_each_realized_instance(cluster):
    """cmd/scheduler/metrics.go: one hami_node_gpu_mig_instance_info per RuntimeReady allocation, value 1."""
    found = [(labels, value) for name, labels, value in cluster["series"] if name == "hami_node_gpu_mig_instance_info"]
    assert {frozenset(labels) for labels, _ in found} == {frozenset(NODE_LABELS)}
    assert sorted(
        (lb["mig_uuid"], lb["profile"], lb["gpu_instance_id"], lb["placement_start"], lb["placement_size"], v) for lb, v in found
    ) == [
        ("MIG-a", "1g.10gb", "9", "6", "1", 1.0),
        ("MIG-c", "3g.40gb", "2", "0", "4", 1.0),
    ]
    assert {(lb["node"], lb["device_uuid"], lb["device_index"], lb["compute_instance_id"], lb["zone"]) for lb, _ in found} == {
        ("gpu-mig", GPU, "0", "0", "vGPU")
    }


def test_the_agent_exports_each_container_s_instance(cluster):
    """cmd/vGPUmonitor/metrics.go collectPodAndContainerMigInfo: vdevice_index is the allocation's deviceIndex."""
    found = [labels for name, labels, _ in cluster["series"] if name == "hami_mig_device_info"]
    assert {frozenset(labels) for labels in found} == {frozenset(CONTAINER_LABELS)}
    assert sorted(
        (lb["pod"], lb["container"], lb["vdevice_index"], lb["device_uuid"], lb["mig_uuid"], lb["gpu_instance_id"]) for lb in found
    ) == [
        ("mig-job", "big", "0", GPU, "MIG-c", "2"),
        ("mig-job", "small", "0", GPU, "MIG-a", "9"),
    ]


def test_the_documented_queries_find_series(cluster):
    for query in QUERIES:
        for selector in selectors(query):
            hits = [labels for name, labels, _ in cluster["series"] if selector.matches(name, labels)]
            assert hits, f"{selector.metric} in {query!r}"
    # the join's keys meet: each container's instance is one the scheduler shows
    node_keys = {(lb["device_uuid"], lb["gpu_instance_id"]) for n, lb, _ in cluster["series"] if n == "hami_node_gpu_mig_instance_info"}
    container_keys = {(lb["device_uuid"], lb["gpu_instance_id"]) for n, lb, _ in cluster["series"] if n == "hami_mig_device_info"}
    assert container_keys == node_keys and len(node_keys) == 2


def test_legacy_names_follow_upstream(cluster):
    """--legacy-metrics: nodeGPUMigInstance{migname=<profile>-<GI id>} and MigInfo{instanceid=<GI id>}."""
    legacy = cluster["legacy"]
    node = sorted(lb["migname"] for n, lb, _ in legacy if n == "nodeGPUMigInstance")
    assert node == ["1g.10gb-9", "3g.40gb-2"]
    assert {frozenset(lb) for n, lb, _ in legacy if n == "nodeGPUMigInstance"} == {
        frozenset({"nodeid", "deviceuuid", "deviceidx", "migname", "zone"})
    }
    info = sorted((lb["ctrname"], lb["instanceid"], lb["vdeviceid"], lb["deviceuuid"]) for n, lb, _ in legacy if n == "MigInfo")
    assert info == [("big", "2", "0", GPU), ("small", "9", "0", GPU)]


def test_a_deleted_pod_s_instances_leave_the_metrics(cluster):
    names = {name for name, _, _ in cluster["after"]}
    assert "hami_node_gpu_mig_instance_info" not in names and "hami_mig_device_info" not in names
    assert "hami_gpu_memory_limit_bytes" in names  # the scrape itself worked
