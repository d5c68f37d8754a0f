"""MetaX GPUs: mx-smi discovery, whole GPUs and sGPU shares as HAMi v2.10 models them.

Read from upstream pkg/device/metax/{device.go,sdevice.go,protocol.go,config.go} (v2.10.0):
- whole GPUs (vendor key ``Metax-GPU``): ``metax-tech.com/gpu`` counts them, each used whole;
  allocation ``hami.io/metax-gpu-devices-to-allocate`` / ``-allocated``;
- sGPUs (vendor key ``Metax-SGPU``): ``metax-tech.com/sgpu`` counts them, ``metax-tech.com/vcore`` is a
  percentage (omitted: 100, the GPU exclusively), ``metax-tech.com/vmemory`` is GiB when written as a
  plain number and bytes with a unit (``2048Mi``); allocation ``hami.io/metax-sgpu-devices-…`` plus
  MetaX's own ``metax-tech.com/gpu-devices-allocated`` (JSON per container: uuid, compute, vRam) and
  ``metax-tech.com/predicate-time``; ``metax-tech.com/sgpu-qos-policy`` and ``sgpu-app-class`` are checked
  at admission; ``metax-tech.com/use-gpuuuid`` / ``nouse-gpuuuid`` select GPUs; exclusive multi-GPU
  requests prefer GPUs of one MetaLink zone (upstream prioritizeExclusiveDevices);
- the node's sGPU list is published as MetaX's ``metax-tech.com/node-gpu-devices`` JSON.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.sdk import (
    AnnotationKeys,
    BackendError,
    BackendInfo,
    ContainerEdits,
    DeviceKind,
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    Grant,
    GrantedDevice,
    NodeAnnotations,
    NodeContext,
    PhysicalDevice,
    QuantityError,
    RequestError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
    container_resources,
    hookimpl,
    paired_rows,
    parse_count,
    parse_quantity,
    run_tool,
    selectors,
    tool_devices,
    vendor_stack_enforcement,
    whole_device_enforcement,
)

log = logging.getLogger(__name__)

GPU = DeviceKind(
    vendor="Metax-GPU",
    resources=ResourceNames(count="metax-tech.com/gpu"),
    annotations=AnnotationKeys.hami("hami.io/node-metax-gpu-register", "hami.io/node-handshake-metax-gpu", "hami.io/metax-gpu"),
)
SGPU = DeviceKind(
    vendor="Metax-SGPU",
    resources=ResourceNames(count="metax-tech.com/sgpu", cores="metax-tech.com/vcore", extra=("metax-tech.com/vmemory",)),
    annotations=AnnotationKeys.hami("hami.io/node-metax-sgpu-register", "hami.io/node-handshake-metax-sgpu", "hami.io/metax-sgpu"),
)
VMEMORY = "metax-tech.com/vmemory"
NODE_DEVICES = "metax-tech.com/node-gpu-devices"
ALLOCATED = "metax-tech.com/gpu-devices-allocated"
PREDICATE_TIME = "metax-tech.com/predicate-time"
USE_UUID, NOUSE_UUID = "metax-tech.com/use-gpuuuid", "metax-tech.com/nouse-gpuuuid"
QOS, APP_CLASS = "metax-tech.com/sgpu-qos-policy", "metax-tech.com/sgpu-app-class"
QOS_POLICIES, APP_CLASSES = ("best-effort", "fixed-share", "burst-share"), ("online", "offline")

INFO = BackendInfo(
    name="metax",
    kinds=[GPU, SGPU],
    description="MetaX GPUs, whole or shared as sGPUs (compute percentage, memory) by MetaX's sGPU stack",
    default_config={"mode": "sgpu", "split_count": 16, "mx_smi": "mx-smi", "mx_smi_timeout": 10.0},
    host_paths=("/dev",),
    pod_annotations=(ALLOCATED, PREDICATE_TIME),  # hami_allocation_annotations
)

_ROW = re.compile(
    r"^\|\s*(\d+)\s+([^|]+?)(?:\s+(?:On|Off))?\s*\|"  # index (board, from 2.2.9) and name, Persistence-M (2.2.8)
    r"(?:\s*(\d+)\s+(?:On|Off|N/A)\s*\|)?"  # 2.2.9+: the GPU index and Persist-M in a cell of their own
    r"\s*([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s*\|"
)
_MEMORY = re.compile(r"\|\s*(?:\d+|N/A)\s*/\s*(?:(\d+)\s*MiB|N/A(?:\s*MiB)?)\s*\|")
UNKNOWN_MEMORY = "memory unknown: mx-smi printed N/A for the memory total"
_ATTACHED = re.compile(r"^Attached GPUs\s*:\s*(\d+)", re.MULTILINE)
_LIST = re.compile(r"^GPU#(\d+)\s+\S+.*\(UUID:\s*([^)\s]+)\)")


def parse_mx_smi(text: str) -> list[tuple[int, str, str, int | None, str]]:
    """``mx-smi``'s table as (index, name, bus id, memory MiB, reason): a name/bus line, then ``<used>/<total>
    MiB``; a total printed as ``N/A``, or a GPU line without its memory line, is None with the reason (that
    GPU is listed, not advertised; the others are kept). Three layouts: up to 2.2.4
    (``GPU NAME | Bus-id``), 2.2.8 (``GPU NAME Persistence-M | Bus-id``) and 2.2.9+ (``Board Name | GPU
    Persist-M | Bus-id``, where the index is the GPU cell's)."""
    rows = [
        (
            int(r.head[3] or r.head[1]),
            r.head[2],
            r.head[4].lower(),
            int(r.memory[1]) if r.memory and r.memory[1] else None,
            "" if r.memory and r.memory[1] else r.reason or UNKNOWN_MEMORY,
        )
        for r in paired_rows(text, _ROW, _MEMORY, tool="mx-smi")
    ]
    attached = _ATTACHED.search(text)
    if not rows and attached and int(attached[1]) > 0:  # a layout this parser does not know: say so, not "no GPUs"
        raise BackendError(f"mx-smi reports {attached[1]} attached GPUs but no GPU row could be read (an unknown table layout)")
    return rows


def parse_uuids(text: str) -> dict[int, str]:
    """``mx-smi -L``: ``GPU#<i>  <model>  <bus>  <state> (UUID: <uuid>)`` per GPU."""
    return {int(m[1]): m[2] for m in map(_LIST.match, text.splitlines()) if m}


def vmemory_mib(value: Any, where: str, name: str = VMEMORY) -> int:
    """Upstream: a plain number is GiB, a quantity with a unit is bytes (``2048Mi`` → 2048 MiB).
    ``name``: the vmemory resource under the operator's ``resource_names``."""
    text = str(value).strip()
    try:
        if re.fullmatch(r"\d+", text):
            return parse_count(text, name) * 1024
        return int(parse_quantity(text)) // (1 << 20)
    except QuantityError as exc:
        raise RequestError(f"{where}: {name}={text!r}: {exc}") from None


class MetaxBackend(StandardBackend):
    """Stateless; the sGPUs themselves are made by MetaX's stack from the allocation annotations."""

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """Whole GPUs need nothing; sGPU compute and memory are enforced by MetaX's sGPU driver
        stack: ready when its mx-smi is on the node, else sGPU shares are offered whole."""
        return [
            *whole_device_enforcement(devices, [GPU.vendor], node),
            *vendor_stack_enforcement(
                devices,
                SGPU.vendor,
                node,
                mechanism="MetaX's sGPU driver stack",
                tool=str(config.get("mx_smi", "mx-smi")),
                install="install MetaX's driver (mx-smi) with its sGPU device plugin",
            ),
        ]

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        tool, timeout = str(config.get("mx_smi", "mx-smi")), float(config.get("mx_smi_timeout", 10.0))
        vendor = GPU.vendor if config.get("mode") == "gpu" else SGPU.vendor

        def read() -> list[PhysicalDevice]:
            rows, uuids = parse_mx_smi(run_tool([tool], timeout)), parse_uuids(run_tool([tool, "-L"], timeout))
            return [
                PhysicalDevice(
                    id=uuids.get(i, "metax-" + bus.replace(":", "-")),
                    vendor=vendor,
                    memory=memory or 0,
                    index=i,
                    type=name if "MetaX" in name else f"MetaX {name}",
                    attributes={"pci_bus_id": bus},
                    advertised=memory is not None,
                    reason=reason,
                )
                for i, name, bus, memory, reason in rows
            ]

        return tool_devices(node, config, self.info.vendors, read, tool="mx-smi", log=log)

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        split = super().hami_split_device(device, config)
        return attrs.evolve(split, count=1) if device.vendor == GPU.vendor else split

    @hookimpl
    def hami_node_annotations(self, devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice]) -> NodeAnnotations | None:
        zones = {d.id: d.attributes for d in physical}
        listed = [
            {
                k: v
                for k, v in {
                    "uuid": d.id,
                    "bdf": zones.get(d.id, {}).get("pci_bus_id"),
                    "model": d.type,
                    "totalDevCount": d.count,
                    "totalCompute": d.cores,
                    "totalVRam": d.memory,
                    "numa": d.numa,
                    "healthy": d.healthy,
                    "linkZone": zones.get(d.id, {}).get("link_zone"),
                }.items()
                if v
            }  # upstream's omitempty
            for d in devices
            if d.vendor == SGPU.vendor
        ]
        return NodeAnnotations({NODE_DEVICES: json.dumps(listed, separators=(",", ":"))}) if listed else None

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        out = []
        where = f"container {container.get('name')!r}"
        sgpu = next(k for k in self.kinds(config) if k.vendor == SGPU.vendor).resources  # under resource_names
        vmemory = sgpu.extra[SGPU.resources.extra.index(VMEMORY)]
        for r in super().hami_container_requests(container, pod, {**config, "default_memory": 0, "default_cores": 0}):
            if r.vendor == GPU.vendor:
                out.append(attrs.evolve(r, memory=0, memory_percentage=100, cores=100))
                continue
            annos = selectors.pod_annotations(pod)
            if annos.get(APP_CLASS) not in (None, *APP_CLASSES):
                raise RequestError(f"{where}: {APP_CLASS}={annos[APP_CLASS]!r} must be one of {', '.join(APP_CLASSES)}")
            if annos.get(APP_CLASS) and r.count != 1:
                raise RequestError(f"{where}: a pod with {APP_CLASS} must request a single sGPU, not {r.count}")
            if annos.get(APP_CLASS) != "online" and annos.get(QOS) not in (None, *QOS_POLICIES):
                raise RequestError(f"{where}: {QOS}={annos[QOS]!r} must be one of {', '.join(QOS_POLICIES)}")
            raw = container_resources(container).get(vmemory)
            memory = vmemory_mib(raw, where, vmemory) if raw is not None else 0
            cores = r.cores if sgpu.cores in container_resources(container) else 100
            out.append(attrs.evolve(r, memory=memory, memory_percentage=None if memory else 100, cores=cores))
        return out

    @hookimpl
    def hami_device_fits(self, device: DeviceUsage, pod: Mapping[str, Any]) -> str | None:
        return selectors.pod_uuid_reason(pod, device.device.id, (USE_UUID, NOUSE_UUID))

    @hookimpl
    def hami_select_devices(
        self, request: DeviceRequest, candidates: Sequence[DeviceUsage], node_annotations: Mapping[str, str]
    ) -> list[str] | None:
        """Exclusive sGPU requests: the smallest MetaLink zone that holds them all, else zones first."""
        if request.vendor != SGPU.vendor or request.cores != 100:
            return None
        try:
            zone_of = {d.get("uuid"): int(d.get("linkZone") or 0) for d in json.loads(node_annotations.get(NODE_DEVICES, "[]"))}
        except (ValueError, TypeError, AttributeError):
            return None
        zones: dict[int, list[str]] = {}
        for c in candidates:
            zones.setdefault(zone_of.get(c.device.id, 0), []).append(c.device.id)
        linked = sorted((ids for zone, ids in zones.items() if zone > 0), key=len)
        fitting = [ids for ids in linked if len(ids) >= request.count]
        if fitting:
            return fitting[0][: request.count]
        ordered = [i for ids in linked for i in ids] + [i for zone, ids in zones.items() if zone <= 0 for i in ids]
        return ordered[: request.count]

    @hookimpl
    def hami_allocation_annotations(self, vendor: str, containers: Sequence[Sequence[Grant]]) -> dict[str, str] | None:
        if vendor != SGPU.vendor or not any(containers):
            return None

        def entry(g: Grant) -> dict[str, Any]:  # upstream's omitempty
            return {"uuid": g.id, **({"compute": g.cores} if g.cores else {}), **({"vRam": g.memory} if g.memory else {})}

        metax = [[entry(g) for g in c] for c in containers]
        return {ALLOCATED: json.dumps(metax, separators=(",", ":")), PREDICATE_TIME: str(time.time_ns())}

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice]) -> ContainerEdits:
        nodes = [DeviceNode("/dev/mxcd", "/dev/mxcd")]
        for d in devices:
            for name in (f"card{d.device.index}", f"renderD{128 + d.device.index}"):
                nodes.append(DeviceNode(f"/dev/dri/{name}", f"/dev/dri/{name}"))
        return ContainerEdits(devices=nodes)


plugin = MetaxBackend(INFO)
