"""Prometheus metrics of the scheduler: request counters and latencies, filter and bind failure
reasons (ours), and HAMi v2.10's allocation and quota gauges read from the cache at scrape time (so a
device shows up before anything uses it).

The HAMi gauges follow Project-HAMi/HAMi ``cmd/scheduler/metrics.go`` (v2.10.0) exactly, so its
Grafana dashboard (``dashboards/hami-vgpu-dashboard.json``) and HAMi-WebUI work unchanged: the same
names, label names and units (bytes; cores in percent of a device, 100 = whole; memory ratio per
device, 0-1), the const label ``zone="vGPU"``, and with ``legacy=True`` (``--legacy-metrics``) also
the pre-2.8 names (``GPUDeviceMemoryLimit``, ``nodeGPUOverview``, ``vGPUMemoryAllocated``, …) with
their old label names (``nodeid``, ``deviceuuid``, …).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hami.errors import AnnotationError, QuantityError
from hami.metrics import (
    PARTITION_LEGACY_NAME_LABEL,
    PARTITION_NODE_LABELS,
    PARTITION_NODE_LEGACY,
    PARTITION_NODE_METRIC,
    ZONE,
    Families,
    build_info,
)
from hami.scheduler.state import ClusterState
from hami.wire import partitions
from hami.wire.annotations import ASSIGNED_NODE
from hami.wire.quantity import parse_quantity

log = logging.getLogger(__name__)

MIB = 1024 * 1024
QUOTA_PREFIX = "limits."

QuotaLister = Callable[[], Iterable[Mapping[str, Any]]]
"""Every ResourceQuota of the cluster as JSON-shaped dicts, read at each scrape."""
PodLister = Callable[[], Iterable[Mapping[str, Any]]]
"""The pods hami placed (label ``hami.io/vgpu-node``) as JSON-shaped dicts, read at each scrape."""
_TERMINATED = ("Succeeded", "Failed")


def api_resource_quotas(core_v1: Any, timeout: float = 5.0) -> QuotaLister:
    """The cluster's ResourceQuotas, listed from the API server as raw JSON at each scrape."""

    def source() -> list[Mapping[str, Any]]:
        resp = core_v1.list_resource_quota_for_all_namespaces(_preload_content=False, _request_timeout=timeout)
        return json.loads(resp.data).get("items") or []

    return source


def api_placed_pods(core_v1: Any, timeout: float = 5.0) -> PodLister:
    """The pods hami placed (every pod it binds carries the label ``hami.io/vgpu-node``), listed from
    the API server as raw JSON at each scrape: their partition-instance annotations are written by
    the node agents after binding, so the scheduler's cache does not hold them."""

    def source() -> list[Mapping[str, Any]]:
        resp = core_v1.list_pod_for_all_namespaces(label_selector=ASSIGNED_NODE, _preload_content=False, _request_timeout=timeout)
        return json.loads(resp.data).get("items") or []

    return source


class AllocationCollector(Collector):
    """HAMi's ``ClusterManagerCollector``: devices, quotas and containers, from one locked pass over the cache."""

    def __init__(
        self,
        state: ClusterState,
        *,
        legacy: bool = False,
        quotas: QuotaLister | None = None,
        pods: PodLister | None = None,
        zone: str = ZONE,
    ) -> None:
        self.state = state
        self.legacy = legacy
        self.quotas = quotas
        self.pods = pods
        self.zone = zone
        self.quota_errors = 0
        self.pod_errors = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        out = Families(self.zone)
        quotas = self._list_quotas()
        placed = self._list_pods()
        with self.state.lock:
            self._devices(out)
            self._partitions(out, placed)
            self._quotas(out, quotas)
            self._containers(out)
        yield build_info()
        yield from out.families
        errors = GaugeMetricFamily("hami_scheduler_quota_list_errors", "Scrapes that could not list ResourceQuotas (quota limits missing)")
        errors.add_metric([], self.quota_errors)
        yield errors
        pod_errors = GaugeMetricFamily(
            "hami_scheduler_pod_list_errors", "Scrapes that could not list the placed pods (partition instance metrics missing)"
        )
        pod_errors.add_metric([], self.pod_errors)
        yield pod_errors

    def _list_pods(self) -> list[Mapping[str, Any]]:
        if self.pods is None:
            return []
        try:
            return list(self.pods())
        except Exception as exc:  # the API server being away must not break the device metrics
            self.pod_errors += 1
            log.warning("event=metrics_pod_list_failed error=%r", f"{type(exc).__name__}: {exc}")
            return []

    def _partitions(self, out: Families, pods: list[Mapping[str, Any]]) -> None:
        """``collectNodeMetrics``' partition series: one per realized instance a live pod holds
        (HAMi's ``RuntimeReady``: UUID, instance and compute-instance ids known), on a device of the
        pod's node that the cache knows; legacy ``migname`` is ``<profile>-<instance id>``."""
        gauge = out.gauge(PARTITION_NODE_METRIC, "Realized partition instance identity and scheduler placement", PARTITION_NODE_LABELS)
        legacy = (
            out.gauge(
                PARTITION_NODE_LEGACY,
                "Partition instance in use (sharing mode 1 of 0 hami-core, 1 partition, 2 mps)",
                ["nodeid", "deviceuuid", "deviceidx", PARTITION_LEGACY_NAME_LABEL],
            )
            if self.legacy
            else None
        )
        for pod in pods:
            meta = pod.get("metadata") or {}
            if (pod.get("status") or {}).get("phase") in _TERMINATED or meta.get("deletionTimestamp"):
                continue
            annotations = meta.get("annotations") or {}
            node_name = (pod.get("spec") or {}).get("nodeName") or annotations.get(ASSIGNED_NODE) or ""
            try:
                held = partitions.decode(annotations.get(partitions.ANNOTATION))
            except AnnotationError as exc:
                log.warning("event=metrics_partitions_unreadable pod=%s/%s error=%r", meta.get("namespace"), meta.get("name"), str(exc))
                continue
            node = self.state.nodes.get(node_name)
            for entry in held:
                p = entry.instance
                device = node.devices.get(p.device) if node is not None else None
                if not p.realized or device is None:
                    continue
                index = str(device.index)
                gauge(
                    1,
                    node_name,
                    p.device,
                    index,
                    p.uuid,
                    p.profile,
                    str(p.instance_id),
                    str(p.compute_instance_id),
                    str(p.placement_start),
                    str(p.placement_size),
                )
                if legacy is not None:
                    legacy(1, node_name, p.device, index, f"{p.profile}-{p.instance_id}")

    def _devices(self, out: Families) -> None:
        """``collectNodeMetrics``: per device, limits and allocations (cores raw: 100 = a whole device)."""
        dev = ["node", "device_uuid", "device_index", "device_type"]
        mem_limit = out.gauge("hami_gpu_memory_limit_bytes", "Device memory limit for a certain GPU", dev)
        core_limit = out.gauge("hami_gpu_core_limit_ratio", "Device core limit for a certain GPU", dev)
        mem_alloc = out.gauge(
            "hami_gpu_memory_allocated_bytes",
            "Device memory allocated for a certain GPU",
            ["node", "device_uuid", "device_index", "device_cores", "device_type"],
        )
        shared = out.gauge("hami_gpu_shared_count", "Number of containers sharing this GPU", dev)
        core_alloc = out.gauge("hami_gpu_core_allocated_ratio", "Device core allocated for a certain GPU", dev)
        overview = out.gauge(
            "hami_node_gpu_overview",
            "GPU overview on a certain node",
            ["node", "device_uuid", "device_index", "device_cores", "device_memory_limit", "device_type"],
        )
        ratio = out.gauge("hami_node_gpu_memory_allocated_ratio", "GPU Memory Allocated Percentage on a certain GPU", dev)
        if self.legacy:
            old = ["nodeid", "deviceuuid", "deviceidx", "devicetype"]
            l_mem_limit = out.gauge("GPUDeviceMemoryLimit", "Device memory limit for a certain GPU", old)
            l_core_limit = out.gauge("GPUDeviceCoreLimit", "Device memory core limit for a certain GPU", old)
            l_mem_alloc = out.gauge(
                "GPUDeviceMemoryAllocated",
                "Device memory allocated for a certain GPU",
                ["nodeid", "deviceuuid", "deviceidx", "devicecores", "devicetype"],
            )
            l_shared = out.gauge("GPUDeviceSharedNum", "Number of containers sharing this GPU", old)
            l_core_alloc = out.gauge("GPUDeviceCoreAllocated", "Device core allocated for a certain GPU", old)
            l_overview = out.gauge(
                "nodeGPUOverview",
                "GPU overview on a certain node",
                ["nodeid", "deviceuuid", "deviceidx", "devicecores", "devicememorylimit", "devicetype"],
            )
            l_ratio = out.gauge(
                "nodeGPUMemoryPercentage", "GPU Memory Allocated Percentage on a certain GPU", ["nodeid", "deviceuuid", "deviceidx"]
            )
        for node in self.state.nodes.values():
            for device_id, device in node.devices.items():
                usage = node.usage(device_id)
                index, cores, total = str(device.index), str(device.cores), str(device.memory)
                used_bytes = usage.memory * MIB
                mem_limit(device.memory * MIB, node.name, device_id, index, device.type)
                core_limit(device.cores, node.name, device_id, index, device.type)
                mem_alloc(used_bytes, node.name, device_id, index, cores, device.type)
                shared(usage.used, node.name, device_id, index, device.type)
                core_alloc(usage.cores, node.name, device_id, index, device.type)
                # upstream writes the limit label in MiB (fmt.Sprint(Totalmem)) while the value is in bytes
                overview(used_bytes, node.name, device_id, index, cores, total, device.type)
                if device.memory > 0:
                    ratio(usage.memory / device.memory, node.name, device_id, index, device.type)
                if self.legacy:
                    l_mem_limit(device.memory * MIB, node.name, device_id, index, device.type)
                    l_core_limit(device.cores, node.name, device_id, index, device.type)
                    l_mem_alloc(used_bytes, node.name, device_id, index, cores, device.type)
                    l_shared(usage.used, node.name, device_id, index, device.type)
                    l_core_alloc(usage.cores, node.name, device_id, index, device.type)
                    l_overview(used_bytes, node.name, device_id, index, cores, total, device.type)
                    if device.memory > 0:
                        l_ratio(usage.memory / device.memory, node.name, device_id, index)

    def _list_quotas(self) -> list[Mapping[str, Any]]:
        if self.quotas is None:
            return []
        try:
            return list(self.quotas())
        except Exception as exc:  # the API server being away must not break the device metrics
            self.quota_errors += 1
            log.warning("event=metrics_quota_list_failed error=%r", f"{type(exc).__name__}: {exc}")
            return []

    def _quota_names(self) -> dict[str, tuple[str, str]]:
        """vendor -> (memory resource, cores resource): the resources HAMi's QuotaManager tracks (``IsManagedQuota``)."""
        return {vendor: (kind.resources.memory or "", kind.resources.cores or "") for vendor, kind in self.state.kinds.items()}

    def _quotas(self, out: Families, quotas: list[Mapping[str, Any]]) -> None:
        """``collectQuotaMetrics``: per namespace and device resource, what its scheduled pods were granted
        (memory in MiB, cores in percent, per device) and the ``limits.<resource>`` of its ResourceQuotas."""
        names = self._quota_names()
        managed = {n for pair in names.values() for n in pair if n}
        used: dict[tuple[str, str], int] = {}
        for record in self.state.pods.values():
            for vendor, per_container in record.devices.items():
                memory_name, cores_name = names.get(vendor, ("", ""))
                for grants in per_container:
                    for grant in grants:
                        if memory_name:
                            used[record.namespace, memory_name] = used.get((record.namespace, memory_name), 0) + grant.memory
                        if cores_name:
                            used[record.namespace, cores_name] = used.get((record.namespace, cores_name), 0) + grant.cores
        limits: dict[tuple[str, str], int] = {}
        for quota in quotas:
            namespace = (quota.get("metadata") or {}).get("namespace") or ""
            for key, value in ((quota.get("spec") or {}).get("hard") or {}).items():
                resource = key[len(QUOTA_PREFIX) :] if key.startswith(QUOTA_PREFIX) else ""
                if resource not in managed:
                    continue
                try:
                    amount = parse_quantity(value)
                except QuantityError as exc:
                    log.warning("event=metrics_quota_unreadable namespace=%s key=%s error=%r", namespace, key, str(exc))
                    continue
                if amount != amount.to_integral_value():
                    continue  # upstream keeps only quantities AsInt64 accepts
                # several quotas on one key: the tightest is the one admission enforces
                limits[namespace, resource] = min(int(amount), limits.get((namespace, resource), int(amount)))
        used_gauge = out.gauge("hami_resource_quota_used", "resourcequota usage for a certain device", ["namespace", "quota_name", "limit"])
        limit_gauge = out.gauge("hami_resource_quota_limit", "resourcequota limit for a certain device", ["namespace", "quota_name"])
        legacy_used = (
            out.gauge("QuotaUsed", "resourcequota usage for a certain device", ["quotanamespace", "quotaName", "limit"])
            if self.legacy
            else None
        )
        for namespace, resource in sorted(set(used) | set(limits)):
            granted, limit = used.get((namespace, resource), 0), limits.get((namespace, resource))
            used_gauge(granted, namespace, resource, str(limit or 0))
            if limit is not None:
                limit_gauge(limit, namespace, resource)
            if legacy_used is not None:
                legacy_used(granted, namespace, resource, str(limit or 0))

    def _containers(self, out: Families) -> None:
        """``collectContainerMetrics``: what each container was granted on each device (every vendor)."""
        labels = ["namespace", "node", "pod", "container_index", "device_uuid"]
        memory = out.gauge("hami_vgpu_memory_allocated_bytes", "vGPU memory allocated from a container", labels)
        cores = out.gauge("hami_vgpu_core_allocated_ratio", "vGPU core allocated from a container", labels)
        if self.legacy:
            old = ["podnamespace", "nodename", "podname", "containeridx", "deviceuuid"]
            l_memory = out.gauge("vGPUMemoryAllocated", "vGPU memory allocated from a container", old)
            l_cores = out.gauge("vGPUCoreAllocated", "vGPU core allocated from a container", old)
        for record in self.state.pods.values():
            for per_container in record.devices.values():
                for index, grants in enumerate(per_container):
                    for grant in grants:
                        values = (record.namespace, record.node, record.name, str(index), grant.id)
                        memory(grant.memory * MIB, *values)
                        cores(grant.cores, *values)
                        if self.legacy:
                            l_memory(grant.memory * MIB, *values)
                            l_cores(grant.cores, *values)


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
    def __init__(
        self,
        state: ClusterState,
        *,
        legacy: bool = False,
        quotas: QuotaLister | None = None,
        pods: PodLister | None = None,
        zone: str = ZONE,
    ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hami_extender_requests", "Extender requests by verb and result", ["verb", "result"], registry=self.registry
        )
        self.latency = Histogram(
            "hami_extender_request_seconds",
            "Extender request latency",
            ["verb"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.filter_failures = Counter(
            "hami_filter_node_failures",
            "Nodes rejected by filter, by reason code (one pod, one node, each reason)",
            ["reason"],
            registry=self.registry,
        )
        self.filter_outcomes = Counter(
            "hami_filter_pods",
            "Filter calls for pods that ask for devices, by outcome (scheduled, unschedulable, error)",
            ["outcome"],
            registry=self.registry,
        )
        self.bind_failures = Counter(
            "hami_bind_failures", "Failed binds by reason (NodeLock, Binding, AllocationWrite, Other)", ["reason"], registry=self.registry
        )
        self.collector = AllocationCollector(state, legacy=legacy, quotas=quotas, pods=pods, zone=zone)
        self.registry.register(self.collector)

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
