"""The agent's usage sampler and its metrics (issue 20): a cached sample per interval, resampled when
the container set changes, exported under upstream's names and labels (cmd/vGPUmonitor/metrics.go)."""

from __future__ import annotations

import logging
import time
import types
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hami.node.devices import discover_node
from hami.node.metrics import AgentMetrics
from hami.node.usage import UsageSampler, container_shares
from hami.plugin.manager import load_backends
from hami.plugin.model import Grant
from hami.sdk import DeviceLoad, ShareLoad, UsageReport
from hami.wire.allocation import Allocation

NODE = "gpu-1"
GPU0, GPU1 = f"NVIDIA-{NODE}-0", f"NVIDIA-{NODE}-1"


@pytest.fixture
def manager(tmp_path: Path):
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": NODE, "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960, "count": 2}]}]})
    )
    loaded = load_backends(allow=("nvidia",))
    loaded.configure("nvidia", {"inventory": str(inventory)})
    return loaded


def _pod(name: str, grants: list[Grant], manager, phase: str = "Running") -> dict:
    annotations = Allocation(NODE, {"NVIDIA": ((tuple(grants)),)}).annotations(manager.kinds, f"uid-{name}", time.time(), None)
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "annotations": annotations},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/priority": "1"}}}]},
        "status": {"phase": phase},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _agent(manager):
    return types.SimpleNamespace(node=NODE, manager=manager, discovery=discover_node(manager, NODE), core_v1=None, healthy=lambda d: True)


def _scrape(metrics: AgentMetrics) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}


def test_container_shares_come_from_the_allocation_of_live_pods(manager):
    pods = [
        _pod("a", [Grant(GPU0, "NVIDIA", 1000, 20), Grant(GPU1, "NVIDIA", 1000, 20)], manager),
        _pod("done", [Grant(GPU0, "NVIDIA", 5000, 0)], manager, phase="Succeeded"),
        {"metadata": {"name": "plain", "uid": "u"}, "spec": {"containers": [{"name": "c"}]}},
    ]
    (share,) = container_shares(pods, manager.kinds)["NVIDIA"]
    assert (share.namespace, share.pod, share.pod_uid, share.container) == ("ml", "a", "uid-a", "main")
    assert [g.id for g in share.grants] == [GPU0, GPU1]
    assert share.limits == {"nvidia.com/priority": "1"}


def test_the_sample_is_cached_and_taken_again_when_containers_change(manager):
    pods: list[dict] = []
    clock = Clock()
    agent = _agent(manager)
    calls: list[int] = []
    sampler = UsageSampler(agent, lambda: calls.append(1) or pods, interval=5.0, min_gap=1.0, clock=clock)
    first = sampler.latest(set())
    assert sampler.rounds == 1 and first.shares() == [] and len(first.devices()) == 2
    pods.append(_pod("a", [Grant(GPU1, "NVIDIA", 4096, 50)], manager))
    clock.now += 0.5
    assert sampler.latest({("uid-a", "main")}) is first  # changed, but within min_gap of the last round
    clock.now += 1
    second = sampler.latest({("uid-a", "main")})
    clock.now += 4
    assert sampler.latest({("uid-a", "main")}) is second  # cached: nothing changed, younger than two intervals
    assert sampler.rounds == 2 and second.covered == {("uid-a", "main")}
    (share,) = second.shares()
    assert (share.pod, share.device_id, share.memory_limit) == ("a", GPU1, 4096 << 20)
    assert 0.3 * (4096 << 20) <= share.memory_used <= 0.9 * (4096 << 20)  # the simulated node's plausible figures
    clock.now += 7  # the loop died: a reader samples after two intervals
    sampler.latest({("uid-a", "main")})
    assert sampler.rounds == 3 and len(calls) == 3


class FakeManager:
    """The sampler's view of the manager: its kinds and sample_usage (a report, or an exception)."""

    def __init__(self, kinds, outcome) -> None:
        self.kinds = kinds
        self.outcome = outcome

    def sample_usage(self, backend, devices, containers, node):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_a_failing_backend_is_logged_and_skips_are_logged_once(manager, caplog):
    agent = _agent(manager)
    caplog.set_level(logging.INFO, "hami.node.usage")
    agent.manager = FakeManager(manager.kinds, UsageReport(devices=[DeviceLoad(GPU0, memory_used=5)], skipped=["x: truncated"]))
    sampler = UsageSampler(agent, list, clock=Clock())
    sampler.sample()
    assert sampler.sample().devices()[0].memory_used == 5
    assert caplog.text.count("x: truncated") == 1
    agent.manager = FakeManager(manager.kinds, RuntimeError("not the sampler's problem"))
    snap = sampler.sample()
    assert snap.reports == {} and sampler.errors == 1
    assert "event=usage_sample_failed backend=nvidia" in caplog.text and "not the sampler's problem" in caplog.text


def test_agent_metrics_carry_upstream_names_and_labels(manager):
    pods = [_pod("a", [Grant(GPU1, "NVIDIA", 4096, 50)], manager)]
    agent = _agent(manager)
    clock = Clock()
    agent.usage = UsageSampler(agent, lambda: pods, clock=clock)
    metrics = AgentMetrics(agent, pods=lambda: pods, legacy=True)
    got = _scrape(metrics)
    (used,) = got["hami_vgpu_memory_used_bytes"]
    assert used.labels == {"namespace": "ml", "pod": "a", "container": "main", "vdevice_index": "0", "device_uuid": GPU1, "zone": "vGPU"}
    (util,) = got["hami_container_device_utilization_ratio"]
    assert 0 < util.value <= 50  # percent of the device, within its 50 % compute grant
    host = {s.labels["device_uuid"]: s for s in got["hami_host_gpu_memory_used_bytes"]}
    assert set(host) == {GPU0, GPU1}
    assert host[GPU1].labels == {"node": NODE, "device_index": "1", "device_uuid": GPU1, "device_type": "NVIDIA A100", "zone": "vGPU"}
    assert host[GPU1].value == 300 * 2**20 + used.value
    assert {s.labels["device_uuid"] for s in got["hami_host_gpu_utilization_ratio"]} == {GPU0, GPU1}
    assert {
        "hami_container_last_kernel_elapsed_seconds",
        "hami_agent_device_power_watts",
        "hami_agent_device_temperature_celsius",
        "hami_agent_container_throttled",
        "hami_agent_usage_sample_age_seconds",
    } <= set(got)
    (legacy,) = got["vGPU_device_memory_usage_in_bytes"]
    assert legacy.labels == {"podnamespace": "ml", "podname": "a", "ctrname": "main", "vdeviceid": "0", "deviceuuid": GPU1, "zone": "vGPU"}
    assert {s.labels["nodeid"] for s in got["HostGPUMemoryUsage"]} == {NODE}
    rounds = agent.usage.rounds
    for _ in range(5):
        _scrape(metrics)
    assert agent.usage.rounds == rounds  # scrapes read the cached sample


def test_figures_only_when_reported(manager):
    agent = _agent(manager)
    report = UsageReport(devices=[DeviceLoad(GPU0, memory_used=7)], shares=[ShareLoad(GPU0, "ml", "a", "main", memory_used=3)])
    agent.usage = types.SimpleNamespace(
        latest=lambda live: types.SimpleNamespace(reports={"nvidia": report}, taken_at=0.0), clock=time.monotonic
    )
    got = _scrape(AgentMetrics(agent, pods=list))
    assert [s.value for s in got["hami_host_gpu_memory_used_bytes"]] == [7]
    assert got["hami_host_gpu_utilization_ratio"] == [] and got["hami_container_device_utilization_ratio"] == []
    assert got["hami_container_last_kernel_elapsed_seconds"] == [] and got["hami_agent_usage_sample_age_seconds"] == []
