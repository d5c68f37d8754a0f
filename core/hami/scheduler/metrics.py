"""Prometheus metrics of the scheduler: request counters and latencies, and device allocation read
from the cache at scrape time (so a device shows up before anything uses it)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hami.scheduler.state import ClusterState

MIB = 1024 * 1024


class AllocationCollector(Collector):
    def __init__(self, state: ClusterState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["node", "deviceuuid", "deviceidx", "devicetype", "vendor"]
        limit = GaugeMetricFamily("hami_gpu_memory_limit_bytes", "Schedulable device memory", labels=labels)
        allocated = GaugeMetricFamily("hami_gpu_memory_allocated_bytes", "Device memory granted to pods", labels=labels)
        shared = GaugeMetricFamily("hami_gpu_shared_count", "Containers sharing the device", labels=labels)
        core_limit = GaugeMetricFamily("hami_gpu_core_limit_ratio", "Schedulable compute (1 = one device)", labels=labels)
        core_allocated = GaugeMetricFamily("hami_gpu_core_allocated_ratio", "Compute granted to pods (1 = one device)", labels=labels)
        with self.state.lock:
            for node in self.state.nodes.values():
                for device_id, device in node.devices.items():
                    usage = node.usage(device_id)
                    values = [node.name, device_id, str(device.index), device.type, device.vendor]
                    limit.add_metric(values, device.memory * MIB)
                    allocated.add_metric(values, usage.memory * MIB)
                    shared.add_metric(values, usage.used)
                    core_limit.add_metric(values, device.cores / 100)
                    core_allocated.add_metric(values, usage.cores / 100)
        yield from (limit, allocated, shared, core_limit, core_allocated)


class SchedulerMetrics:
    def __init__(self, state: ClusterState) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hami_extender_requests", "Extender requests by verb and result", ["verb", "result"], registry=self.registry)
        self.latency = Histogram("hami_extender_request_seconds", "Extender request latency", ["verb"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.registry.register(AllocationCollector(state))
