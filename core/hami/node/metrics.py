"""Prometheus metrics of the node agent, exposed from start-up (HAMi's node monitor shows a device
only after a container used it; operators asked for better — hami-compat.md, complaint 4).

Read at scrape time from the agent's own state — its discovered devices and their health, the
backends that failed to load or discover — and from the pods bound to this node (one list call per
scrape, the allocation annotations the scheduler wrote), so nothing can drift. Allocate latency
and outcomes are pushed by the agent as calls complete.

HAMi's vGPU monitor names (Project-HAMi/HAMi ``cmd/vGPUmonitor/metrics.go``, v2.10.0) come with
its label names and the const label ``zone="vGPU"``: ``hami_vgpu_memory_limit_bytes{namespace, pod,
container, vdevice_index, device_uuid}``, and with ``legacy=True`` (``--legacy-metrics``)
``vGPU_device_memory_limit_in_bytes{podnamespace, podname, ctrname, vdeviceid, deviceuuid}``. What the
monitor measures (``hami_host_gpu_*``, ``hami_vgpu_memory_used_bytes``, ``hami_container_*``) comes from
the agent's usage sampler (:mod:`hami.node.usage`, ``hami_sample_usage`` every ``usage_interval``), read
from its cached sample, never measured per scrape. Our own ``hami_agent_*`` gauges use the same label style
(``device_uuid``, ``device_index``) and unit (cores in percent of a device, 100 = whole).

Wiring (the agent owns it)::

    self.metrics = AgentMetrics(self)                         # in Agent.__init__
    server = serve_metrics(self.metrics.registry, "0.0.0.0", 9394)   # in start(); server.stop() in stop()
    with self.metrics.time_allocate(resource) as call:        # around each Allocate
        ...; call.code = "OK" or the gRPC status code name
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hami.errors import AnnotationError
from hami.metrics import PARTITION_CONTAINER_LABELS, PARTITION_CONTAINER_LEGACY, PARTITION_CONTAINER_METRIC, ZONE, Families, build_info
from hami.serving import ThreadedHTTPServer, end_headers_with
from hami.wire import partitions
from hami.wire.allocation import ordered_containers, read_allocated

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_TERMINATED = ("Succeeded", "Failed")
PodSource = Callable[[], Iterable[Mapping[str, Any]]]


class AgentView(Protocol):
    """What the collector reads from :class:`hami.node.agent.Agent`."""

    node: str
    manager: Any
    discovery: Any
    core_v1: Any

    def healthy(self, device: Any) -> bool: ...


def api_pods(core_v1: Any, node: str, timeout: float = 5.0) -> PodSource:
    """The pods bound to ``node``, listed from the API server as raw JSON at each scrape."""

    def source() -> list[Mapping[str, Any]]:
        resp = core_v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}", _preload_content=False, _request_timeout=timeout)
        return json.loads(resp.data).get("items") or []

    return source


class AgentCollector(Collector):
    def __init__(self, agent: AgentView, pods: PodSource | None = None, *, legacy: bool = False, zone: str = ZONE) -> None:
        self.agent = agent
        self.pods = pods or api_pods(agent.core_v1, agent.node)
        self.legacy = legacy
        self.zone = zone
        self.pod_errors = 0

    def _grants(self, pods: Iterable[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], str, str, int, Any]]:
        """(pod, vendor, container name, index of the device in the container, grant) for every live pod on this node."""
        kinds = self.agent.manager.kinds
        out = []
        for pod in pods:
            if (pod.get("status") or {}).get("phase") in _TERMINATED:
                continue
            try:
                allocated = read_allocated((pod.get("metadata") or {}).get("annotations") or {}, kinds)
            except AnnotationError:
                continue  # the scheduler's cache logs these; a scrape must not fail on one pod
            containers = ordered_containers(pod)
            seen: dict[int, int] = {}  # container -> devices listed so far (HAMi-core numbers them across vendors)
            for vendor, per_container in allocated.items():
                for index, grants in enumerate(per_container):
                    name = containers[index].get("name", f"#{index}") if index < len(containers) else f"#{index}"
                    for grant in grants:
                        out.append((pod, vendor, name, seen.get(index, 0), grant))
                        seen[index] = seen.get(index, 0) + 1
        return out

    def collect(self) -> Iterator[GaugeMetricFamily]:
        node = self.agent.node
        out = Families(self.zone)
        dev_labels = ["node", "device_uuid", "device_index", "device_type", "vendor", "backend", "resource"]
        info = out.gauge("hami_agent_device_health", "1 when the device is healthy (advertised Healthy to kubelet)", dev_labels)
        memory = out.gauge("hami_agent_device_memory_bytes", "Schedulable device memory advertised", dev_labels)
        slots = out.gauge("hami_agent_device_slots", "Share slots advertised to kubelet", dev_labels)
        mem_alloc = out.gauge("hami_agent_device_memory_allocated_bytes", "Device memory granted to live pods on this node", dev_labels)
        core_alloc = out.gauge(
            "hami_agent_device_core_allocated_ratio", "Compute granted to live pods (percent of a device, 100 = whole)", dev_labels
        )
        shared = out.gauge("hami_agent_device_shared_count", "Containers holding the device", dev_labels)
        ctr_labels = ["namespace", "pod", "container", "vdevice_index", "device_uuid"]
        vmem = out.gauge("hami_vgpu_memory_limit_bytes", "vGPU device memory limit in bytes", ctr_labels)
        vcore = out.gauge(
            "hami_vgpu_core_limit_ratio", "Compute limit of a container (percent of a device, 100 = whole; 0 = no limit)", ctr_labels
        )
        legacy_vmem = (
            out.gauge(
                "vGPU_device_memory_limit_in_bytes", "vGPU device limit", ["podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid"]
            )
            if self.legacy
            else None
        )
        broken = out.gauge(
            "hami_agent_backend_load_errors", "1 per backend that failed to load", ["node", "backend", "distribution", "version"]
        )
        undiscovered = out.gauge("hami_agent_discovery_errors", "1 per backend whose discovery failed", ["node", "backend"])
        isolation = out.gauge(
            "hami_isolation_ready",
            "1 when what enforces a share mode's limits is on this node (0: missing, shares whole-only or advisory)",
            ["node", "vendor", "mode"],
        )
        pod_list = out.gauge(
            "hami_agent_pod_list_errors", "Scrapes that could not list this node's pods (allocation metrics missing)", ["node"]
        )

        totals: dict[str, list[float]] = {}
        live_keys: set[tuple[str, str]] = set()
        live: set[tuple[str, str]] | None = live_keys
        pods: list[Mapping[str, Any]] = []
        try:
            pods = list(self.pods())
            for pod, _vendor, name, vindex, grant in self._grants(pods):
                meta = pod.get("metadata") or {}
                live_keys.add((str(meta.get("uid", "")), name))
                values = (meta.get("namespace", ""), meta.get("name", ""), name, str(vindex), grant.id)
                vmem(grant.memory * MIB, *values)
                vcore(grant.cores, *values)
                if legacy_vmem is not None:
                    legacy_vmem(grant.memory * MIB, *values)
                acc = totals.setdefault(grant.id, [0, 0, 0])
                acc[0] += grant.memory
                acc[1] += grant.cores
                acc[2] += 1
        except Exception as exc:  # the API server being away must not break the device metrics
            self.pod_errors += 1
            log.warning("event=metrics_pod_list_failed node=%s error=%r", node, f"{type(exc).__name__}: {exc}")
            live = None  # unknown: the cached usage sample stands
        pod_list(self.pod_errors, node)
        self._partitions(out, pods)

        for device in self.agent.discovery.devices:
            s = device.schedulable
            dev = (node, device.id, str(device.physical.index), device.physical.type, device.vendor, device.backend, device.resource)
            info(1.0 if self.agent.healthy(device) else 0.0, *dev)
            memory(s.memory * MIB, *dev)
            slots(s.count, *dev)
            used_mem, used_cores, holders = totals.get(device.id, (0, 0, 0))
            mem_alloc(used_mem * MIB, *dev)
            core_alloc(used_cores, *dev)
            shared(holders, *dev)
        for record in self.agent.manager.records:
            if record.status == "failed":
                broken(1, node, record.name, record.distribution or "", record.version or "")
        for backend in sorted(self.agent.discovery.errors):
            undiscovered(1, node, backend)
        ready: dict[tuple[str, str], bool] = {}
        for state in getattr(self.agent.discovery, "isolation", ()):
            key = (state.vendor, state.mode or "all")
            ready[key] = ready.get(key, True) and state.state == "enforced"
        for (vendor, mode), ok in sorted(ready.items()):
            isolation(1.0 if ok else 0.0, node, vendor, mode)
        self._usage(out, live)
        yield build_info()
        yield from out.families

    def _partitions(self, out: Families, pods: Iterable[Mapping[str, Any]]) -> None:
        """HAMi's monitor series per realized partition instance a live pod's container holds
        (``cmd/vGPUmonitor/metrics.go``, its per-container partition collector; from the pod annotation
        :mod:`hami.wire.partitions` the agent wrote at Allocate); legacy ``instanceid`` is the
        instance id."""
        gauge = out.gauge(
            PARTITION_CONTAINER_METRIC, "Partition instance runtime identity for a container allocation", PARTITION_CONTAINER_LABELS
        )
        legacy = (
            out.gauge(
                PARTITION_CONTAINER_LEGACY,
                "Partition instance information for container",
                ["podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid", "instanceid"],
            )
            if self.legacy
            else None
        )
        for pod in pods:
            meta = pod.get("metadata") or {}
            if (pod.get("status") or {}).get("phase") in _TERMINATED:
                continue
            try:
                held = partitions.decode((meta.get("annotations") or {}).get(partitions.ANNOTATION))
            except AnnotationError as exc:
                log.warning("event=metrics_partitions_unreadable pod=%s/%s error=%r", meta.get("namespace"), meta.get("name"), str(exc))
                continue
            containers = ordered_containers(pod)
            for entry in held:
                p = entry.instance
                if not p.realized or entry.container_index >= len(containers):
                    continue
                name = str(containers[entry.container_index].get("name", ""))
                ids = (meta.get("namespace", ""), meta.get("name", ""), name, str(p.device_index), p.device)
                gauge(1, *ids, p.uuid, p.profile, str(p.instance_id), str(p.compute_instance_id))
                if legacy is not None:
                    legacy(1, *ids, str(p.instance_id))

    def _usage(self, out: Families, live: set[tuple[str, str]] | None) -> None:
        """What devices and containers really use, from the agent's cached usage sample
        (:mod:`hami.node.usage`) under upstream's names and labels; utilization in percent (0-100)
        as upstream exports it, although the names say ratio."""
        sampler = getattr(self.agent, "usage", None)
        if sampler is None:
            return
        node = self.agent.node
        host = ["node", "device_index", "device_uuid", "device_type"]
        host_mem = out.gauge("hami_host_gpu_memory_used_bytes", "Device memory in use on the host, every process included", host)
        host_util = out.gauge("hami_host_gpu_utilization_ratio", "Device compute utilization (0-100)", host)
        host_mc = out.gauge(
            "hami_host_gpu_memory_controller_utilization_ratio",
            "Device memory controller utilization (0-100)",
            ["device_index", "device_uuid", "device_type"],
        )
        power = out.gauge("hami_agent_device_power_watts", "Device power draw", host)
        temperature = out.gauge("hami_agent_device_temperature_celsius", "Device temperature", host)
        ctr = ["namespace", "pod", "container", "vdevice_index", "device_uuid"]
        used = out.gauge("hami_vgpu_memory_used_bytes", "vGPU device memory usage in bytes", ctr)
        ctr_mem = out.gauge("hami_container_device_memory_bytes", "Container device memory usage in bytes", ctr)
        ctr_util = out.gauge("hami_container_device_utilization_ratio", "Container device SM utilization (0-100)", ctr)
        last = out.gauge("hami_container_last_kernel_elapsed_seconds", "Seconds since last kernel execution in container", ctr)
        parts = {
            name: out.gauge(f"hami_vgpu_memory_{name}_bytes", f"Container device memory {name} size in bytes", ctr)
            for name in ("context", "module", "buffer")
        }
        throttled = out.gauge("hami_agent_container_throttled", "1 while priority feedback holds the container back", ctr)
        age = out.gauge(
            "hami_agent_usage_sample_age_seconds", "Age of the usage sample this scrape shows (sampled every usage_interval)", ["node"]
        )
        skipped = out.gauge(
            "hami_agent_usage_skipped", "What the last usage sample could not read (truncated, foreign or stale files)", ["node", "backend"]
        )
        legacy = self.legacy
        if legacy:
            legacy_host = ["nodeid", "deviceidx", "deviceuuid", "devicetype"]
            legacy_ctr = ["podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid"]
            old_host_mem = out.gauge("HostGPUMemoryUsage", "GPU device memory usage", legacy_host)
            old_host_util = out.gauge("HostCoreUtilization", "GPU core utilization", legacy_host)
            old_used = out.gauge("vGPU_device_memory_usage_in_bytes", "vGPU device usage", legacy_ctr)
            # upstream cmd/vGPUmonitor/metrics.go legacyCtrDeviceMemorydesc: the breakdown rides in labels
            old_desc = out.gauge(
                "Device_memory_desc_of_container",
                "Container device memory description",
                [*legacy_ctr, "context", "module", "data", "offset"],
            )
            old_util = out.gauge("Device_utilization_desc_of_container", "Container device utilization description", legacy_ctr)
            old_last = out.gauge("Device_last_kernel_of_container", "Container device last kernel description", legacy_ctr)
        snap = sampler.latest(live)
        known = {d.id: d for d in self.agent.discovery.devices}
        for backend, report in sorted(snap.reports.items()):
            skipped(len(report.skipped), node, backend)
            for load in report.devices:
                device = known.get(load.device_id)
                labels = (node, str(device.physical.index) if device else "", load.device_id, device.physical.type if device else "")
                host_mem(load.memory_used, *labels)
                if load.utilization is not None:
                    host_util(round(load.utilization * 100, 2), *labels)
                if load.memory_utilization is not None:
                    host_mc(round(load.memory_utilization * 100, 2), *labels[1:])
                if load.power_watts is not None:
                    power(load.power_watts, *labels)
                if load.temperature_celsius is not None:
                    temperature(load.temperature_celsius, *labels)
                if legacy:
                    old_host_mem(load.memory_used, *labels)
                    if load.utilization is not None:
                        old_host_util(round(load.utilization * 100, 2), *labels)
            for share in report.shares:
                ctr_labels = (share.namespace, share.pod, share.container, str(share.vdevice_index), share.device_id)
                used(share.memory_used, *ctr_labels)
                ctr_mem(share.memory_used, *ctr_labels)
                for name, value in (("context", share.memory_context), ("module", share.memory_module), ("buffer", share.memory_buffer)):
                    if value is not None:
                        parts[name](value, *ctr_labels)
                if share.utilization is not None:
                    ctr_util(round(share.utilization * 100, 2), *ctr_labels)
                if share.last_kernel_seconds is not None:
                    last(share.last_kernel_seconds, *ctr_labels)
                throttled(1.0 if share.throttled else 0.0, *ctr_labels)
                if legacy:
                    old_used(share.memory_used, *ctr_labels)
                    breakdown = [int(v or 0) for v in (share.memory_context, share.memory_module, share.memory_buffer)]
                    offset = max(int(share.memory_used) - sum(breakdown), 0)
                    old_desc(share.memory_used, *ctr_labels, *map(str, breakdown), str(offset))
                    if share.utilization is not None:
                        old_util(round(share.utilization * 100, 2), *ctr_labels)
                    if share.last_kernel_seconds is not None:
                        old_last(share.last_kernel_seconds, *ctr_labels)
        if snap.taken_at:
            age(max(sampler.clock() - snap.taken_at, 0.0), node)


class AllocateCall:
    """Filled in by the caller of :meth:`AgentMetrics.time_allocate`: the gRPC code the call ended with."""

    code: str = "OK"


class AgentMetrics:
    def __init__(self, agent: AgentView, pods: PodSource | None = None, *, legacy: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.allocate_seconds = Histogram(
            "hami_agent_allocate_seconds",
            "Allocate latency (kubelet's call, API round trips included)",
            ["resource"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.allocate_calls = Counter(
            "hami_agent_allocate", "Allocate calls by resource and gRPC code", ["resource", "code"], registry=self.registry
        )
        self.registry.register(AgentCollector(agent, pods, legacy=legacy))

    def observe_allocate(self, resource: str, seconds: float, code: str = "OK") -> None:
        self.allocate_seconds.labels(resource).observe(seconds)
        self.allocate_calls.labels(resource, code).inc()

    @contextmanager
    def time_allocate(self, resource: str) -> Iterator[AllocateCall]:
        """Time one Allocate; an exception that escapes counts as ``INTERNAL`` unless ``call.code`` says otherwise."""
        call = AllocateCall()
        started = time.perf_counter()
        try:
            yield call
        except BaseException:
            if call.code == "OK":
                call.code = "INTERNAL"
            raise
        finally:
            self.observe_allocate(resource, time.perf_counter() - started, call.code)


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=metrics_http %s", format % args)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            body, ctype, status = generate_latest(self.server.registry), CONTENT_TYPE_LATEST, 200
        elif self.path in ("/healthz", "/readyz", "/livez"):
            body, ctype, status = b"ok", "text/plain", 200
        else:
            body, ctype, status = b"not found", "text/plain", 404
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        end_headers_with(self, body)


class MetricsServer(ThreadedHTTPServer):
    """Plain HTTP ``/metrics`` (and ``/healthz``) for Prometheus; ``stop()`` to end it."""

    def __init__(self, registry: CollectorRegistry, host: str = "0.0.0.0", port: int = 9394) -> None:
        super().__init__((host, port), _Handler)
        self.registry = registry
        self._thread = threading.Thread(target=self.serve_forever, name="hami-agent-metrics", daemon=True)

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, host: str = "0.0.0.0", port: int = 9394) -> MetricsServer:
    server = MetricsServer(registry, host, port)
    server._thread.start()
    log.info("event=agent_metrics_serving url=%s/metrics", server.url)
    return server
