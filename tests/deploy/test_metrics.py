"""Metrics endpoints expose HAMi's names (and ours) from start-up, before any pod used a device,
and count what they should once pods do.

Upstream: Project-HAMi/HAMi v2.10.0 ``cmd/scheduler/metrics.go`` (names, labels, units, zone, legacy
names) and ``cmd/vGPUmonitor/metrics.go`` (the container memory limit)."""

from __future__ import annotations

import time
import types
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hami.node.devices import discover_node
from hami.node.metrics import AgentMetrics, serve_metrics
from hami.node.registration import node_annotations
from hami.plugin.manager import load_backends
from hami.plugin.model import Grant
from hami.scheduler.core import Scheduler
from hami.scheduler.metrics import bind_failure_reason, failure_reasons
from hami.scheduler.server import Extender, ExtenderHTTPServer
from hami.scheduler.state import ClusterState
from hami.wire.allocation import Allocation

HAMI_SCHEDULER_NAMES = {
    "hami_gpu_memory_limit_bytes",
    "hami_gpu_core_limit_ratio",
    "hami_gpu_memory_allocated_bytes",
    "hami_gpu_shared_count",
    "hami_gpu_core_allocated_ratio",
    "hami_node_gpu_overview",
    "hami_node_gpu_memory_allocated_ratio",
    "hami_vgpu_memory_allocated_bytes",
    "hami_vgpu_core_allocated_ratio",
    "hami_build_info",
}
LEGACY_SCHEDULER_NAMES = {
    "GPUDeviceMemoryLimit",
    "GPUDeviceCoreLimit",
    "GPUDeviceMemoryAllocated",
    "GPUDeviceSharedNum",
    "GPUDeviceCoreAllocated",
    "nodeGPUOverview",
    "nodeGPUMemoryPercentage",
    "vGPUMemoryAllocated",
    "vGPUCoreAllocated",
    "QuotaUsed",
}
OUR_SCHEDULER_NAMES = {
    "hami_extender_request_seconds",
    "hami_extender_requests",
    "hami_filter_node_failures",
    "hami_filter_pods",
    "hami_bind_failures",
}
AGENT_NAMES = {
    "hami_agent_device_health",
    "hami_agent_device_memory_bytes",
    "hami_agent_device_slots",
    "hami_agent_device_memory_allocated_bytes",
    "hami_agent_device_core_allocated_ratio",
    "hami_agent_device_shared_count",
    "hami_vgpu_memory_limit_bytes",
    "hami_vgpu_core_limit_ratio",
    "hami_agent_backend_load_errors",
    "hami_agent_discovery_errors",
    "hami_agent_pod_list_errors",
    "hami_agent_allocate_seconds",
    "hami_agent_allocate",
}
NODE = "gpu-1"


@pytest.fixture
def manager(tmp_path: Path):
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": NODE, "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960, "count": 2}]}]})
    )
    loaded = load_backends(allow=("nvidia",))
    loaded.configure("nvidia", {"inventory": str(inventory)})
    return loaded


def _scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _pod(name: str, grants: list[Grant], manager) -> dict:
    annotations = Allocation(NODE, {"NVIDIA": ((tuple(grants)),)}).annotations(manager.kinds, f"uid-{name}", time.time(), None)
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "annotations": annotations},
        "spec": {"nodeName": NODE, "containers": [{"name": "main"}]},
        "status": {"phase": "Running"},
    }


def test_scheduler_metrics_from_start_up_and_after_use(manager) -> None:
    state = ClusterState(manager.kinds)
    state.apply_node(
        {"metadata": {"name": NODE, "annotations": node_annotations(manager.kinds, discover_node(manager, NODE), {}, {}, time.time())}}
    )
    extender = Extender(Scheduler(manager, state, None))
    with ExtenderHTTPServer(extender) as server:
        before = _scrape(server.url)
        assert set(before) >= HAMI_SCHEDULER_NAMES | OUR_SCHEDULER_NAMES
        assert {s.labels["device_uuid"] for s in before["hami_gpu_memory_limit_bytes"]} == {f"NVIDIA-{NODE}-0", f"NVIDIA-{NODE}-1"}
        # upstream: cores in percent of a device (Totalcore, 100 for a whole GPU), zone="vGPU" on every gauge
        assert {s.value for s in before["hami_gpu_core_limit_ratio"]} == {100}
        assert {s.labels["zone"] for s in before["hami_gpu_memory_limit_bytes"]} == {"vGPU"}
        assert not LEGACY_SCHEDULER_NAMES & set(before)  # only with --legacy-metrics
        assert all(s.value == 0 for s in before["hami_gpu_memory_allocated_bytes"])

        state.apply_pod(_pod("p", [Grant(f"NVIDIA-{NODE}-1", "NVIDIA", 3000, 30)], manager))
        fail = extender.filter(
            {
                "Pod": {
                    "metadata": {"name": "big", "namespace": "ml", "uid": "u2"},
                    "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "900000"}}}]},
                },
                "NodeNames": [NODE, "nowhere"],
            }
        )
        extender.metrics.record_filter(fail)
        extender.metrics.record_bind({"Error": "pod ml/x: node 'gpu-1' is locked by pod ml/y since …"})
        after = _scrape(server.url)
    extender.scheduler.close()
    granted = {s.labels["device_uuid"]: s.value for s in after["hami_gpu_memory_allocated_bytes"]}
    assert granted == {f"NVIDIA-{NODE}-0": 0, f"NVIDIA-{NODE}-1": 3000 * 2**20}
    (container,) = after["hami_vgpu_core_allocated_ratio"]
    assert (container.labels["pod"], container.labels["namespace"], container.labels["container_index"], container.value) == (
        "p",
        "ml",
        "0",
        30,
    )
    assert {s.labels["device_uuid"]: s.value for s in after["hami_gpu_core_allocated_ratio"]} == {
        f"NVIDIA-{NODE}-0": 0,
        f"NVIDIA-{NODE}-1": 30,
    }
    ratios = {s.labels["device_uuid"]: s.value for s in after["hami_node_gpu_memory_allocated_ratio"]}  # per device, 0-1
    assert ratios == {f"NVIDIA-{NODE}-0": 0, f"NVIDIA-{NODE}-1": pytest.approx(3000 / 40960)}
    overview = {s.labels["device_uuid"]: s.labels for s in after["hami_node_gpu_overview"]}[f"NVIDIA-{NODE}-1"]
    assert (overview["device_cores"], overview["device_memory_limit"]) == ("100", "40960")  # the limit label is in MiB upstream
    reasons = {s.labels["reason"]: s.value for s in after["hami_filter_node_failures"] if s.name.endswith("_total")}
    assert reasons == {"CardInsufficientMemory": 1, "NodeUnregistered": 1}
    assert {s.labels["outcome"]: s.value for s in after["hami_filter_pods"] if s.name.endswith("_total")} == {"unschedulable": 1}
    assert [s.labels["reason"] for s in after["hami_bind_failures"] if s.name.endswith("_total")] == ["NodeLock"]


def test_failure_reason_codes() -> None:
    assert failure_reasons("container #0 needs 1 NVIDIA: 2/4 CardInsufficientMemory, 1/4 CardTypeMismatch") == {
        "CardInsufficientMemory",
        "CardTypeMismatch",
    }
    assert failure_reasons("NodeInsufficientDevice: 0 usable NVIDIA device(s), 1 needed") == {"NodeInsufficientDevice"}
    assert failure_reasons("something unexpected") == {"Other"}
    assert bind_failure_reason("pod a/b: binding to node 'n' failed: HTTP 409") == "Binding"
    assert bind_failure_reason("pod a/b: could not record the allocation: HTTP 500") == "AllocationWrite"


def test_agent_metrics_from_start_up_and_after_use(manager) -> None:
    pods: list[dict] = []
    discovery = discover_node(manager, NODE)
    agent = types.SimpleNamespace(
        node=NODE, manager=manager, discovery=discovery, core_v1=None, healthy=lambda device: device.id != f"NVIDIA-{NODE}-0"
    )
    metrics = AgentMetrics(agent, pods=lambda: pods)
    server = serve_metrics(metrics.registry, "127.0.0.1", 0)
    try:
        before = _scrape(server.url)
        assert set(before) >= AGENT_NAMES
        assert {s.labels["device_uuid"]: s.value for s in before["hami_agent_device_health"]} == {
            f"NVIDIA-{NODE}-0": 0,
            f"NVIDIA-{NODE}-1": 1,
        }
        assert all(s.value == 0 for s in before["hami_agent_device_memory_allocated_bytes"])

        pods.extend(
            [
                _pod("a", [Grant(f"NVIDIA-{NODE}-1", "NVIDIA", 1000, 20)], manager),
                _pod("b", [Grant(f"NVIDIA-{NODE}-1", "NVIDIA", 2000, 0)], manager),
                {**_pod("done", [Grant(f"NVIDIA-{NODE}-0", "NVIDIA", 5000, 0)], manager), "status": {"phase": "Succeeded"}},
            ]
        )
        metrics.observe_allocate("nvidia.com/gpu", 0.02)
        with pytest.raises(RuntimeError), metrics.time_allocate("nvidia.com/gpu"):
            raise RuntimeError("backend exploded")
        after = _scrape(server.url)
    finally:
        server.stop()
    allocated = {s.labels["device_uuid"]: s.value for s in after["hami_agent_device_memory_allocated_bytes"]}
    assert allocated == {f"NVIDIA-{NODE}-0": 0, f"NVIDIA-{NODE}-1": 3000 * 2**20}
    assert {s.labels["device_uuid"]: s.value for s in after["hami_agent_device_shared_count"]}[f"NVIDIA-{NODE}-1"] == 2
    limits = {(s.labels["pod"], s.labels["container"]): s.value for s in after["hami_vgpu_core_limit_ratio"]}
    assert limits == {("a", "main"): 20, ("b", "main"): 0}
    memory = {
        (s.labels["namespace"], s.labels["pod"], s.labels["vdevice_index"], s.labels["zone"]): s.value
        for s in after["hami_vgpu_memory_limit_bytes"]
    }
    assert memory == {("ml", "a", "0", "vGPU"): 1000 * 2**20, ("ml", "b", "0", "vGPU"): 2000 * 2**20}
    assert "vGPU_device_memory_limit_in_bytes" not in after
    codes = {s.labels["code"]: s.value for s in after["hami_agent_allocate"] if s.name.endswith("_total")}
    assert codes == {"OK": 1, "INTERNAL": 1}


def test_agent_metrics_survive_an_unreachable_api_server(manager) -> None:
    def broken() -> list:
        raise ConnectionError("API server away")

    agent = types.SimpleNamespace(node=NODE, manager=manager, discovery=discover_node(manager, NODE), core_v1=None, healthy=lambda d: True)
    metrics = AgentMetrics(agent, pods=broken)
    families = {f.name: f.samples for f in metrics.registry.collect()}
    assert len(families["hami_agent_device_memory_bytes"]) == 2
    assert families["hami_agent_pod_list_errors"][0].value == 1


def test_legacy_metrics_flag_adds_the_pre_2_8_names(manager) -> None:
    """Upstream: cmd/scheduler/metrics.go (legacy descriptors behind --legacy-metrics, cmd/scheduler/main.go)
    and cmd/vGPUmonitor/metrics.go initLegacyDescriptors: old names, old label names, same values."""
    from hami.scheduler.metrics import SchedulerMetrics

    state = ClusterState(manager.kinds)
    state.apply_node(
        {"metadata": {"name": NODE, "annotations": node_annotations(manager.kinds, discover_node(manager, NODE), {}, {}, time.time())}}
    )
    state.apply_pod(_pod("p", [Grant(f"NVIDIA-{NODE}-1", "NVIDIA", 3000, 30)], manager))
    families = {f.name: f.samples for f in SchedulerMetrics(state, legacy=True).registry.collect()}
    assert LEGACY_SCHEDULER_NAMES - {"QuotaUsed"} <= set(families)
    limit = {s.labels["deviceuuid"]: s for s in families["GPUDeviceMemoryLimit"]}[f"NVIDIA-{NODE}-1"]
    assert (set(limit.labels), limit.value) == ({"nodeid", "deviceuuid", "deviceidx", "devicetype", "zone"}, 40960 * 2**20)
    (ctr,) = families["vGPUCoreAllocated"]
    assert (set(ctr.labels), ctr.value) == ({"podnamespace", "nodename", "podname", "containeridx", "deviceuuid", "zone"}, 30)
    assert {s.labels["deviceuuid"]: s.value for s in families["nodeGPUMemoryPercentage"]}[f"NVIDIA-{NODE}-1"] == pytest.approx(3000 / 40960)
    assert {s.labels["quotaName"]: s.labels["limit"] for s in families["QuotaUsed"]} == {
        "nvidia.com/gpumem": "0",
        "nvidia.com/gpucores": "0",
    }

    agent = types.SimpleNamespace(node=NODE, manager=manager, discovery=discover_node(manager, NODE), core_v1=None, healthy=lambda d: True)
    pods = [_pod("a", [Grant(f"NVIDIA-{NODE}-1", "NVIDIA", 1000, 20)], manager)]
    agent_families = {f.name: f.samples for f in AgentMetrics(agent, pods=lambda: pods, legacy=True).registry.collect()}
    (old,) = agent_families["vGPU_device_memory_limit_in_bytes"]
    assert old.labels == {
        "podnamespace": "ml",
        "podname": "a",
        "ctrname": "main",
        "vdeviceid": "0",
        "deviceuuid": f"NVIDIA-{NODE}-1",
        "zone": "vGPU",
    }
    assert old.value == 1000 * 2**20


def test_quota_metrics_without_a_quota_and_with_an_unreachable_api_server(manager) -> None:
    """Upstream: pkg/device/quota.go tracks usage for every namespace (Limit 0, LimitSet false: no
    hami_resource_quota_limit series); cmd/scheduler/metrics.go collectQuotaMetrics."""
    from hami.scheduler.metrics import SchedulerMetrics

    state = ClusterState(manager.kinds)
    state.apply_pod(_pod("p", [Grant(f"NVIDIA-{NODE}-1", "NVIDIA", 3000, 30), Grant(f"NVIDIA-{NODE}-0", "NVIDIA", 3000, 30)], manager))
    quotas = [
        {"metadata": {"namespace": "ml", "name": "a"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "8000", "limits.cpu": "4"}}},
        {"metadata": {"namespace": "ml", "name": "b"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "7k"}}},
        {"metadata": {"namespace": "idle", "name": "c"}, "spec": {"hard": {"limits.nvidia.com/gpucores": "1.5"}}},
    ]
    families = {f.name: f.samples for f in SchedulerMetrics(state, quotas=lambda: quotas).registry.collect()}
    used = {(s.labels["namespace"], s.labels["quota_name"]): (s.labels["limit"], s.value) for s in families["hami_resource_quota_used"]}
    assert used == {
        ("ml", "nvidia.com/gpumem"): ("7000", 6000),
        ("ml", "nvidia.com/gpucores"): ("0", 60),
    }  # the tighter quota; 1.5 is not an integer
    assert {(s.labels["namespace"], s.labels["quota_name"]): s.value for s in families["hami_resource_quota_limit"]} == {
        ("ml", "nvidia.com/gpumem"): 7000
    }

    def away() -> list:
        raise ConnectionError("API server away")

    metrics = SchedulerMetrics(state, quotas=away)
    families = {f.name: f.samples for f in metrics.registry.collect()}
    assert families["hami_scheduler_quota_list_errors"][0].value == 1
    assert len(families["hami_resource_quota_used"]) == 2 and not families["hami_resource_quota_limit"]
