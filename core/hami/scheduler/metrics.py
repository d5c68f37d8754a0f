"""Prometheus metrics of the scheduler: request counters and latencies, filter and bind failure
reasons, and device allocation read from the cache at scrape time (so a device shows up before
anything uses it). Names follow HAMi's (hami-compat.md) so existing dashboards keep working."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

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
        yield from self._overview()
        yield from self._containers()

    def _overview(self) -> Iterator[GaugeMetricFamily]:
        """HAMi's per-device overview (static facts as labels) and each node's memory allocation ratio."""
        labels = ["nodeid", "deviceuuid", "deviceidx", "devicetype", "vendor", "devicecores", "devicememorylimit", "sharedcontainers"]
        overview = GaugeMetricFamily("hami_node_gpu_overview", "Device memory granted to pods, with the device's facts as labels", labels=labels)
        ratio = GaugeMetricFamily("hami_node_gpu_memory_allocated_ratio", "Granted over schedulable device memory, per node and vendor",
                                  labels=["node", "vendor"])
        with self.state.lock:
            for node in self.state.nodes.values():
                totals: dict[str, list[int]] = {}
                for device_id, device in node.devices.items():
                    usage = node.usage(device_id)
                    overview.add_metric([node.name, device_id, str(device.index), device.type, device.vendor, str(device.cores),
                                         str(device.memory * MIB), str(usage.used)], usage.memory * MIB)
                    acc = totals.setdefault(device.vendor, [0, 0])
                    acc[0] += usage.memory
                    acc[1] += device.memory
                for vendor, (used, total) in sorted(totals.items()):
                    ratio.add_metric([node.name, vendor], used / total if total else 0.0)
        yield from (overview, ratio)

    def _containers(self) -> Iterator[GaugeMetricFamily]:
        """What each container was granted on each device (HAMi's vGPU metrics, for every vendor)."""
        labels = ["podnamespace", "podname", "containeridx", "deviceuuid", "node", "vendor"]
        memory = GaugeMetricFamily("hami_vgpu_memory_allocated_bytes", "Device memory granted to a container", labels=labels)
        cores = GaugeMetricFamily("hami_vgpu_core_allocated_ratio", "Device compute granted to a container (1 = a whole device)", labels=labels)
        with self.state.lock:
            for record in self.state.pods.values():
                for vendor, per_container in record.devices.items():
                    for index, grants in enumerate(per_container):
                        for grant in grants:
                            values = [record.namespace, record.name, str(index), grant.id, record.node, vendor]
                            memory.add_metric(values, grant.memory * MIB)
                            cores.add_metric(values, grant.cores / 100)
        yield from (memory, cores)


_COUNTED_REASON = re.compile(r"\b\d+/\d+ ([A-Z][A-Za-z]+)")
_LEADING_REASON = re.compile(r"^([A-Z][A-Za-z]+):")


def failure_reasons(message: str) -> set[str]:
    """The reason codes in one node's filter failure (``2/4 CardInsufficientMemory, 1/4 CardTypeMismatch``
    or ``NodeInsufficientDevice: …``); ``Other`` when the message carries none."""
    found = set(_COUNTED_REASON.findall(message))
    if not found:
        leading = _LEADING_REASON.match(message)
        found = {leading.group(1)} if leading else {"Other"}
    return found


def bind_failure_reason(message: str) -> str:
    lowered = message.lower()
    if "lock" in lowered:
        return "NodeLock"
    if "binding to node" in lowered:
        return "Binding"
    if "allocation" in lowered:
        return "AllocationWrite"
    return "Other"


class SchedulerMetrics:
    def __init__(self, state: ClusterState) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hami_extender_requests", "Extender requests by verb and result", ["verb", "result"], registry=self.registry)
        self.latency = Histogram("hami_extender_request_seconds", "Extender request latency", ["verb"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.filter_failures = Counter("hami_filter_node_failures", "Nodes rejected by filter, by reason code (one pod, one node, each reason)",
                                       ["reason"], registry=self.registry)
        self.filter_outcomes = Counter("hami_filter_pods", "Filter calls for pods that ask for devices, by outcome (scheduled, unschedulable, error)",
                                       ["outcome"], registry=self.registry)
        self.bind_failures = Counter("hami_bind_failures", "Failed binds by reason (NodeLock, Binding, AllocationWrite, Other)",
                                     ["reason"], registry=self.registry)
        self.registry.register(AllocationCollector(state))

    def record_filter(self, answer: Mapping[str, Any]) -> None:
        """Count one filter answer (the extender's JSON): its outcome and each failed node's reasons."""
        if answer.get("Error"):
            self.filter_outcomes.labels("error").inc()
            return
        if "FailedAndUnresolvableNodes" not in answer:
            return  # the pod asks nothing of hami: every node passed, nothing to count
        for message in (answer.get("FailedNodes") or {}).values():
            for reason in failure_reasons(str(message)):
                self.filter_failures.labels(reason).inc()
        chosen = answer.get("NodeNames") or ((answer.get("Nodes") or {}).get("items"))
        self.filter_outcomes.labels("scheduled" if chosen else "unschedulable").inc()

    def record_bind(self, answer: Mapping[str, Any]) -> None:
        error = answer.get("Error")
        if error:
            self.bind_failures.labels(bind_failure_reason(str(error))).inc()
