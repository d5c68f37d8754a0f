"""Kunlunxin XPUs: xpu-smi discovery, whole XPUs and vXPU partitions as HAMi v2.10 models them.

Read from upstream pkg/device/kunlun/{device.go,vdevice.go,topo.go,config.go} (v2.10.0):
- whole XPUs (vendor key ``kunlun``): ``kunlunxin.com/xpu`` counts them; the allocation is also written
  as ``hami.io/kunlun-allocated`` and ``BAIDU_COM_DEVICE_IDX`` (the indexes) for Kunlunxin's plugin;
- vXPUs (vendor key ``XPU``): ``kunlunxin.com/vxpu`` counts them, ``kunlunxin.com/vxpu-memory`` (MiB)
  is rounded up to a partition of 24576, 49152 or 98304 MiB (written back at admission, as upstream),
  cores are that fraction of 98304; a shared XPU only takes partitions of the size it already holds;
  JSON registration ``hami.io/node-register-xpu``, allocation ``hami.io/xpu-devices-to-allocate``;
- both: ``hami.io/use-xpu-uuid`` / ``hami.io/no-use-xpu-uuid`` and ``baidu.com/use-gpuuuid`` /
  ``baidu.com/nouse-gpuuuid``; several XPUs of an 8-XPU node are chosen by the two-wing
  interconnect rules of topo.go (:func:`choose`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.sdk import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceKind,
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    Grant,
    GrantedDevice,
    NodeContext,
    PhysicalDevice,
    QuantityError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
    container_resources,
    encode_pod_devices,
    hookimpl,
    one_slot,
    paired_rows,
    parse_count,
    run_tool,
    selectors,
    tool_devices,
    vendor_stack_enforcement,
    whole_device_enforcement,
)

log = logging.getLogger(__name__)

WHOLE = DeviceKind(
    vendor="kunlun",
    resources=ResourceNames(count="kunlunxin.com/xpu"),
    annotations=AnnotationKeys.hami("hami.io/node-kunlun-register", "hami.io/node-handshake-kunlun", "hami.io/kunlun"),
)
VXPU = DeviceKind(
    vendor="XPU",
    resources=ResourceNames(count="kunlunxin.com/vxpu", memory="kunlunxin.com/vxpu-memory"),
    annotations=AnnotationKeys.hami("hami.io/node-register-xpu", "hami.io/node-handshake-xpu", "hami.io/xpu"),
)
VXPU_MEMORY = "kunlunxin.com/vxpu-memory"
PARTITIONS = (24576, 49152, 98304)
MAX_MEMORY = PARTITIONS[-1]
UUID_SELECTORS = (("hami.io/use-xpu-uuid", "hami.io/no-use-xpu-uuid"), ("baidu.com/use-gpuuuid", "baidu.com/nouse-gpuuuid"))
INDEX_ANNOTATION = "BAIDU_COM_DEVICE_IDX"
WHOLE_ALLOCATED = "hami.io/kunlun-allocated"

INFO = BackendInfo(
    name="kunlunxin",
    kinds=[WHOLE, VXPU],
    description="Kunlunxin XPUs, whole or as vXPU partitions of 1/4, 1/2 or all of a P800's memory",
    default_config={"mode": "vxpu", "vxpu_count": 4, "xpu_smi": "xpu-smi", "xpu_smi_timeout": 10.0},
    host_paths=("/dev",),
    pod_annotations=(WHOLE_ALLOCATED, INDEX_ANNOTATION),  # hami_allocation_annotations
)


def partition(mib: int) -> int:
    """The vXPU partition a memory request gets (upstream ``trimMemory``)."""
    return next((p for p in PARTITIONS if mib <= p), MAX_MEMORY)


_ROW = re.compile(r"^\|\s*(\d+)\s+(.+?)\s{2,}\S*\s*\|\s*([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])")
_MEMORY = re.compile(r"^\|\s*\S[^|]*\|\s*(?:(?:\d+MiB|N/A)\s*/\s*(?:(\d+)MiB|N/A)|N/A)\s*\|")
"""The Memory-Usage cell: the second cell of the line whose first cell (fan, temperature, power) is not
blank, ``<used>MiB / <total>MiB`` or ``N/A``; the L3 line's first cell is blank, so ``0MiB / 96MiB`` is
never read as memory, even when the memory cell is a bare ``N/A``."""
UNKNOWN_MEMORY = "memory unknown: xpu-smi printed N/A for the memory total"


def parse_xpu_smi(text: str, vendor: str = "XPU") -> list[PhysicalDevice]:
    """``xpu-smi``'s table: a name/bus line, then a line with ``<used>MiB / <total>MiB`` (the third line,
    L3 usage, is skipped). A total printed as ``N/A``, or a device line without its memory line, lists
    that XPU unadvertised with the reason; the others are kept."""
    devices = []
    for r in paired_rows(text, _ROW, _MEMORY, tool="xpu-smi", noun="XPU"):
        row, total = r.head, r.memory[1] if r.memory else None
        devices.append(
            PhysicalDevice(
                id="xpu-" + row[3].lower().replace(":", "-"),
                vendor=vendor,
                type=f"Kunlunxin {row[2]}",
                memory=int(total) if total else 0,
                index=int(row[1]),
                attributes={"pci_bus_id": row[3].lower()},
                advertised=bool(total),
                reason="" if total else r.reason or UNKNOWN_MEMORY,
            )
        )
    return devices


def choose(indexes: Sequence[int], count: int) -> list[int]:
    """Upstream ``graghSelect`` for an 8-XPU node (0-3 and 4-7 are the two wings): the XPUs to use among
    the fitting ``indexes``, or [] when no set is acceptable (counts other than 1, 2, 4, 8 included)."""
    fit = sorted(set(indexes))
    left, right = [i for i in fit if i < 4], [i for i in fit if i >= 4]
    if count == 8:
        return fit if len(fit) == 8 else []
    if count not in (1, 2, 4):
        return []
    if len(left) >= count or len(right) >= count:
        for slots in range(count, 5):
            wanted = (1, 3, 2, 4)[slots - 1] if count % 2 else slots
            if len(left) == wanted:
                return fit[:count]
            if len(right) == wanted:
                return right[:count]
    if count == 2:
        return next(([a, b] for a in fit for b in fit if b == a + 4), [])
    groups = ((0, 1, 4, 5), (2, 3, 6, 7), (0, 2, 4, 6), (1, 3, 5, 7), (0, 3, 4, 7), (1, 2, 5, 6))
    pairs = {(a, a + 4) for a in range(4)} | {(a, b) for w in (0, 4) for a in range(w, w + 4) for b in range(a + 1, w + 4)}
    meeting = [list(g) for g in groups if set(g) <= set(fit)]
    if count == 4 and len(fit) in (4, 5) and meeting:
        return meeting[0]
    if count == 4 and len(fit) == 6:
        for group in meeting:
            rest = set(fit) - set(group)
            if any({a, b} <= rest for a, b in pairs):
                return group
        return meeting[-1] if meeting else []
    return []


class KunlunxinBackend(StandardBackend):
    """Stateless: partitions are made by Kunlunxin's stack from the allocation annotations."""

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """Whole XPUs need nothing; vXPU memory and compute are enforced by Kunlunxin's vXPU stack:
        ready when its xpu-smi is on the node, else vXPUs are offered whole."""
        return [
            *whole_device_enforcement(devices, [WHOLE.vendor], node),
            *vendor_stack_enforcement(
                devices,
                VXPU.vendor,
                node,
                mechanism="Kunlunxin's vXPU stack",
                tool=str(config.get("xpu_smi", "xpu-smi")),
                install="install Kunlunxin's driver (xpu-smi) with its vXPU device plugin",
            ),
        ]

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        vendor = WHOLE.vendor if config.get("mode") == "whole" else VXPU.vendor

        def read() -> list[PhysicalDevice]:
            return parse_xpu_smi(run_tool([str(config.get("xpu_smi", "xpu-smi"))], float(config.get("xpu_smi_timeout", 10.0))), vendor)

        return tool_devices(node, config, self.info.vendors, read, tool="xpu-smi", log=log)

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        split = one_slot(device)
        return split if device.vendor == WHOLE.vendor else attrs.evolve(split, count=int(config.get("vxpu_count", 4)))

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        out = []
        for r in super().hami_container_requests(container, pod, {**config, "default_memory": 0, "default_cores": 0}):
            if r.vendor == WHOLE.vendor:
                out.append(attrs.evolve(r, memory=0, memory_percentage=100, cores=0))
            else:
                memory = partition(r.memory) if r.memory else MAX_MEMORY
                out.append(attrs.evolve(r, memory=memory, memory_percentage=None, cores=memory * 100 // MAX_MEMORY))
        return out

    @hookimpl
    def hami_mutate_container(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> ContainerPatch | None:
        """As upstream: the vXPU memory limit becomes the partition it gets."""
        patch = super().hami_mutate_container(container, pod, config)
        limits = dict(patch.limits) if patch else {}
        warnings = list(patch.warnings) if patch else []
        name = str(next(k for k in self.kinds(config) if k.vendor == VXPU.vendor).resources.memory)  # resource_names
        value = container_resources(container).get(name)
        if value is not None:
            try:
                trimmed = str(partition(parse_count(value, name)))
            except QuantityError:
                trimmed = None  # the request itself reports the bad value
            if trimmed and trimmed != str(value):
                limits[name] = trimmed
        return ContainerPatch(limits=limits, warnings=warnings) if limits or warnings else None

    @hookimpl
    def hami_device_fits(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> str | None:
        reason = selectors.pod_uuid_reason(pod, device.device.id, *UUID_SELECTORS)
        if reason:
            return reason
        if request.vendor == VXPU.vendor and device.used and device.memory // device.used != request.memory:
            return "VxpuPartitionMismatch"  # upstream FitVXPU: one partition size per XPU
        return None

    @hookimpl
    def hami_select_devices(self, request: DeviceRequest, candidates: Sequence[DeviceUsage]) -> list[str] | None:
        by_index = {c.device.index: c.device.id for c in candidates}
        if any(i > 7 for i in by_index):
            return None  # not the 8-XPU layout topo.go describes
        return [by_index[i] for i in choose(list(by_index), request.count)]

    @hookimpl
    def hami_allocation_annotations(
        self, vendor: str, containers: Sequence[Sequence[Grant]], devices: Mapping[str, SchedulableDevice]
    ) -> dict[str, str] | None:
        """Whole XPUs: upstream's ``hami.io/kunlun-allocated`` and ``BAIDU_COM_DEVICE_IDX`` (last container's indexes)."""
        if vendor != WHOLE.vendor or not any(containers):
            return None
        values = {WHOLE_ALLOCATED: encode_pod_devices(containers)}
        for grants in containers:
            if grants:
                values[INDEX_ANNOTATION] = ",".join(str(devices[g.id].index) for g in grants if g.id in devices)
        return values

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice]) -> ContainerEdits:
        indexes = [d.device.index for d in devices]
        nodes = [DeviceNode("/dev/xpuctrl", "/dev/xpuctrl")] + [DeviceNode(f"/dev/xpu{i}", f"/dev/xpu{i}") for i in indexes]
        return ContainerEdits(env={"XPU_VISIBLE_DEVICES": ",".join(map(str, indexes))}, devices=nodes)


plugin = KunlunxinBackend(INFO)
