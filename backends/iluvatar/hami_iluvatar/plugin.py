"""Iluvatar CoreX GPUs: ixsmi discovery and HAMi v2.10's per-chip vGPU shares.

Read from upstream pkg/device/iluvatar/device.go and charts/hami/templates/scheduler/device-configmap.yaml
(v2.10.0): one device kind per chip (MR-V100, MR-V50, BI-V150, BI-V100), each with
``iluvatar.ai/<chip>-vgpu`` (count), ``iluvatar.ai/<chip>.vMem`` (slices of 256 MiB) and
``iluvatar.ai/<chip>.vCore`` (percent, default 0); registration is HAMi's legacy CSV under
``hami.io/node-<chip>-register``; allocations are ``hami.io/<chip>-devices-to-allocate`` /
``-allocated``; a container asking for several GPUs gets them whole (upstream writes vCore = count x 100,
clamped to 100 in Fit); the container gets ``SOL_CONTINER_NAME`` (HAMi's spelling, kept for the vendor
stack) and the GPUs' device nodes.
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
    DeviceKind,
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    GrantedDevice,
    NodeContext,
    PhysicalDevice,
    ResourceNames,
    StandardBackend,
    hookimpl,
    paired_rows,
    run_tool,
    selectors,
    tool_devices,
    vendor_stack_enforcement,
)

log = logging.getLogger(__name__)

CHIPS = ("MR-V100", "MR-V50", "BI-V150", "BI-V100")
"""HAMi's default ``iluvatars`` list (chipName = commonWord = vendor key)."""
MEMORY_FACTOR = 256
"""MiB per ``vMem`` unit (upstream ``MemoryFactor``)."""
CONTAINER_NAME_ENV = "SOL_CONTINER_NAME"
VISIBLE_ENV = "IX_VISIBLE_DEVICES"


def _kind(chip: str) -> DeviceKind:
    return DeviceKind(
        vendor=chip,
        resources=ResourceNames(count=f"iluvatar.ai/{chip}-vgpu", memory=f"iluvatar.ai/{chip}.vMem", cores=f"iluvatar.ai/{chip}.vCore"),
        annotations=AnnotationKeys.hami(f"hami.io/node-{chip}-register", f"hami.io/node-handshake-{chip}", f"hami.io/{chip}"),
        node_encoding="csv",
        models=(chip,),
    )


KINDS = {chip: _kind(chip) for chip in CHIPS}

INFO = BackendInfo(
    name="iluvatar",
    kinds=list(KINDS.values()),
    description="Iluvatar CoreX GPUs shared by memory and core percentage (HAMi's per-chip vGPU resources)",
    default_config={
        "split_count": 4,
        "memory_scaling": 1,
        "core_scaling": 1,
        "default_memory": 0,
        "default_cores": 0,
        "ixsmi": "ixsmi",
        "ixsmi_timeout": 10.0,
    },
    host_paths=("/dev",),
)


@attrs.frozen
class Gpu:
    """One GPU of ixsmi's default table."""

    index: int
    name: str
    bus_id: str
    memory_mib: int | None
    """None: ixsmi printed ``N/A`` for the total, or no memory line at all (``reason``)."""
    reason: str = ""


_ROW = re.compile(r"^\|\s*(\d+)\s+(.+?)\s*\|\s*([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*\|")
_MEMORY = re.compile(r"\|\s*(\d+MiB|N/A)\s*/\s*(?:(\d+)MiB|N/A)\s*\|")
UNKNOWN_MEMORY = "memory unknown: ixsmi printed N/A for the memory total"


def parse_ixsmi(text: str) -> list[Gpu]:
    """``ixsmi``'s table: a name/bus line, then a line whose second cell is ``<used>MiB / <total>MiB``.
    A total printed as ``N/A``, or a GPU line without its memory line (a truncated or changed layout),
    gives ``memory_mib=None`` with the reason: that GPU is listed, not advertised; the others are kept."""
    return [
        Gpu(
            int(r.head[1]),
            re.sub(r"^Iluvatar\s+", "", r.head[2]),
            r.head[3],
            int(r.memory[2]) if r.memory and r.memory[2] else None,
            "" if r.memory and r.memory[2] else r.reason or UNKNOWN_MEMORY,
        )
        for r in paired_rows(text, _ROW, _MEMORY, tool="ixsmi")
    ]


def chip_of(name: str) -> str | None:
    """The configured chip a model name belongs to, longest match first (``MR-V100 DUO`` → ``MR-V100``,
    ``BI-V150S`` → ``BI-V150``)."""
    upper = name.upper()
    return next((c for c in sorted(CHIPS, key=len, reverse=True) if c in upper), None)


def to_device(gpu: Gpu) -> PhysicalDevice:
    chip = chip_of(gpu.name)
    device_id = "iluvatar-" + gpu.bus_id.lower().replace(":", "-")  # ':' is a separator in HAMi's annotations
    if chip is None:
        return PhysicalDevice(
            id=device_id,
            vendor=CHIPS[0],
            type=gpu.name,
            memory=gpu.memory_mib or 0,
            index=gpu.index,
            advertised=False,
            reason=f"model {gpu.name!r} is none of HAMi's Iluvatar chips {', '.join(CHIPS)}",
        )
    return PhysicalDevice(
        id=device_id,
        vendor=chip,
        type=f"Iluvatar {gpu.name}",
        memory=gpu.memory_mib or 0,
        index=gpu.index,
        attributes={"pci_bus_id": gpu.bus_id},
        advertised=gpu.memory_mib is not None,
        reason="" if gpu.memory_mib is not None else gpu.reason or UNKNOWN_MEMORY,
    )


class IluvatarBackend(StandardBackend):
    """Stateless: everything a hook needs comes with the call."""

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """vMem/vCore are enforced by Iluvatar's vGPU stack only: ready when its ixsmi is on the
        node, else shares are offered whole."""
        tool = str(config.get("ixsmi", "ixsmi"))
        install = "install Iluvatar's driver (ixsmi) with its vGPU device plugin"
        return [
            e
            for chip in CHIPS
            for e in vendor_stack_enforcement(devices, chip, node, mechanism="Iluvatar's vGPU stack", tool=tool, install=install)
        ]

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        def read() -> list[PhysicalDevice]:
            return [
                to_device(gpu)
                for gpu in parse_ixsmi(run_tool([str(config.get("ixsmi", "ixsmi"))], float(config.get("ixsmi_timeout", 10.0))))
            ]

        return tool_devices(node, config, CHIPS, read, tool="ixsmi", log=log)

    def memory_unit_mib(self, config: Mapping[str, Any]) -> int:
        return MEMORY_FACTOR

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        out = []
        for request in super().hami_container_requests(container, pod, config):
            if request.memory:
                request = attrs.evolve(request, memory=request.memory * MEMORY_FACTOR)
            if request.count > 1:
                request = attrs.evolve(request, cores=100)
            out.append(request)
        return out

    @hookimpl
    def hami_device_fits(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> str | None:
        chip = request.vendor
        return selectors.pod_uuid_reason(pod, device.device.id, (f"hami.io/use-{chip}-uuid", f"hami.io/no-use-{chip}-uuid"))

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice], container: Mapping[str, Any]) -> ContainerEdits:
        env = {VISIBLE_ENV: ",".join(str(d.device.index) for d in devices)}
        named = any(e.get("name") == CONTAINER_NAME_ENV for e in container.get("env") or [])
        if container.get("name") and not named:
            env[CONTAINER_NAME_ENV] = str(container["name"])
        nodes = [DeviceNode(f"/dev/iluvatar{d.device.index}", f"/dev/iluvatar{d.device.index}") for d in devices]
        return ContainerEdits(env=env, devices=nodes)


plugin = IluvatarBackend(INFO)
