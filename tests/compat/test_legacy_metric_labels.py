"""``--legacy-metrics``: every pre-2.8 name HAMi v2.10 still exports, with exactly its label names, from
our scheduler and node agent (issue 18, metrics), and the monitor's current usage names beside them. The label sets are copied from upstream's descriptors:
cmd/scheduler/metrics.go (``legacy…Desc`` behind ``--legacy-metrics``) and cmd/vGPUmonitor/metrics.go
(``initLegacyDescriptors``); ``zone="vGPU"`` is the const label HAMi's collectors carry."""

from __future__ import annotations

import time
import types
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hami.node.devices import discover_node
from hami.node.metrics import AgentMetrics
from hami.node.registration import node_annotations
from hami.node.usage import UsageSampler
from hami.plugin.manager import load_backends
from hami.plugin.model import Grant
from hami.scheduler.metrics import SchedulerMetrics
from hami.scheduler.state import ClusterState
from hami.wire.allocation import Allocation

NODE = "gpu-1"
GPU1 = f"NVIDIA-{NODE}-1"

# cmd/scheduler/metrics.go (v2.10.0)
SCHEDULER_LEGACY = {
    "GPUDeviceMemoryLimit": {"nodeid", "deviceuuid", "deviceidx", "devicetype"},
    "GPUDeviceCoreLimit": {"nodeid", "deviceuuid", "deviceidx", "devicetype"},
    "GPUDeviceMemoryAllocated": {"nodeid", "deviceuuid", "deviceidx", "devicecores", "devicetype"},
    "GPUDeviceSharedNum": {"nodeid", "deviceuuid", "deviceidx", "devicetype"},
    "GPUDeviceCoreAllocated": {"nodeid", "deviceuuid", "deviceidx", "devicetype"},
    "nodeGPUOverview": {"nodeid", "deviceuuid", "deviceidx", "devicecores", "devicememorylimit", "devicetype"},
    "nodeGPUMemoryPercentage": {"nodeid", "deviceuuid", "deviceidx"},
    "QuotaUsed": {"quotanamespace", "quotaName", "limit"},
    "vGPUMemoryAllocated": {"podnamespace", "nodename", "podname", "containeridx", "deviceuuid"},
    "vGPUCoreAllocated": {"podnamespace", "nodename", "podname", "containeridx", "deviceuuid"},
}
# cmd/vGPUmonitor/metrics.go (v2.10.0); MigInfo is checked on a MIG node by tests/deploy/test_partition_metrics.py
MONITOR_LEGACY = {
    "HostGPUMemoryUsage": {"nodeid", "deviceidx", "deviceuuid", "devicetype"},
    "HostCoreUtilization": {"nodeid", "deviceidx", "deviceuuid", "devicetype"},
    "vGPU_device_memory_usage_in_bytes": {"podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid"},
    "vGPU_device_memory_limit_in_bytes": {"podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid"},
    "Device_memory_desc_of_container": {
        "podnamespace",
        "podname",
        "ctrname",
        "vdeviceid",
        "deviceuuid",
        "context",
        "module",
        "data",
        "offset",
    },
    "Device_utilization_desc_of_container": {"podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid"},
    "Device_last_kernel_of_container": {"podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid"},
}


# cmd/vGPUmonitor/metrics.go (v2.10.0), today's names; HAMi-WebUI (server/internal/exporter/exporter.go) asks
# hami_container_device_utilization_ratio and hami_vgpu_memory_used_bytes by device_uuid/namespace/pod/container
CTR = {"namespace", "pod", "container", "vdevice_index", "device_uuid"}
MONITOR = {
    "hami_host_gpu_memory_used_bytes": {"node", "device_index", "device_uuid", "device_type"},
    "hami_host_gpu_utilization_ratio": {"node", "device_index", "device_uuid", "device_type"},
    "hami_vgpu_memory_used_bytes": CTR,
    "hami_vgpu_memory_limit_bytes": CTR,
    "hami_container_device_memory_bytes": CTR,
    "hami_container_device_utilization_ratio": CTR,
    "hami_container_last_kernel_elapsed_seconds": CTR,
}


@pytest.fixture
def manager(tmp_path: Path):
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": NODE, "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960, "count": 2}]}]})
    )
    loaded = load_backends(allow=("nvidia",))
    loaded.configure("nvidia", {"inventory": str(inventory)})
    return loaded


def _pod(manager) -> dict:
    annotations = Allocation(NODE, {"NVIDIA": ((Grant(GPU1, "NVIDIA", 4096, 50),),)}).annotations(manager.kinds, "uid-a", time.time(), None)
    return {
        "metadata": {"name": "a", "namespace": "ml", "uid": "uid-a", "annotations": annotations},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/priority": "1"}}}]},
        "status": {"phase": "Running"},
    }


def _label_sets(families) -> dict[str, set[frozenset[str]]]:
    out: dict[str, set[frozenset[str]]] = {}
    for family in families:
        for sample in family.samples:
            out.setdefault(sample.name, set()).add(frozenset(sample.labels))
    return out


def _check(found: dict[str, set[frozenset[str]]], expected: dict[str, set[str]]) -> None:
    missing = sorted(set(expected) - set(found))
    assert not missing, f"legacy names not exported: {missing}"
    wrong = {name: found[name] for name in expected if found[name] != {frozenset(expected[name] | {"zone"})}}
    assert not wrong, wrong


def test_scheduler_legacy_names_carry_upstream_labels(manager):
    state = ClusterState(manager.kinds)
    discovery = discover_node(manager, NODE)
    state.apply_node({"metadata": {"name": NODE, "annotations": node_annotations(manager.kinds, discovery, {}, {}, time.time())}})
    state.apply_pod(_pod(manager))
    _check(_label_sets(SchedulerMetrics(state, legacy=True).registry.collect()), SCHEDULER_LEGACY)


def test_monitor_legacy_names_carry_upstream_labels(manager):
    pods = [_pod(manager)]
    agent = types.SimpleNamespace(node=NODE, manager=manager, discovery=discover_node(manager, NODE), core_v1=None, healthy=lambda d: True)
    agent.usage = UsageSampler(agent, lambda: pods, clock=lambda: 1000.0)
    text = generate_latest(AgentMetrics(agent, pods=lambda: pods, legacy=True).registry).decode()
    families = list(text_string_to_metric_families(text))
    _check(_label_sets(families), MONITOR_LEGACY)
    _check(_label_sets(families), MONITOR)
    # upstream: value = the container's device memory, the labels its context/module/buffer sizes and the rest
    (desc,) = [s for f in families for s in f.samples if s.name == "Device_memory_desc_of_container"]
    (used,) = [s for f in families for s in f.samples if s.name == "vGPU_device_memory_usage_in_bytes"]
    assert desc.value == used.value > 0
    parts = [int(desc.labels[k]) for k in ("context", "module", "data")]
    assert sum(parts) + int(desc.labels["offset"]) == desc.value
