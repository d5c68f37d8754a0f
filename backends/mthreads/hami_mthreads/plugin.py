"""Moore Threads GPUs: mthreads-gmi discovery, sGPU memory and core shares as HAMi v2.10 models them.

Read from upstream pkg/device/mthreads/device.go (v2.10.0): ids ``<node>-mthreads-<i>``, 100 slots
and 16 core units per GPU; ``mthreads.com/sgpu-memory`` counts 512 MiB units (2, 4, 8, 16, 32, 64
or 96 per container) and ``mthreads.com/sgpu-core`` sixteenths of a GPU, both divided over the
container's GPUs; several GPUs are whole GPUs; the allocation writes ``mthreads.com/gpu-index``,
``mthreads.com/predicate-time`` and ``mthreads.com/predicate-node``.
"""

from __future__ import annotations

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
    RequestError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
    container_resources,
    hookimpl,
    run_tool,
    selectors,
    tool_devices,
    tool_json,
    vendor_stack_enforcement,
)

log = logging.getLogger(__name__)

VENDOR = "Mthreads"
KIND = DeviceKind(
    vendor=VENDOR,
    resources=ResourceNames(count="mthreads.com/vgpu", memory="mthreads.com/sgpu-memory", cores="mthreads.com/sgpu-core"),
    annotations=AnnotationKeys.hami("hami.io/node-mthreads-register", "hami.io/node-handshake-mthreads", "hami.io/mthreads-vgpu"),
)
MEMORY_UNIT_MIB = 512
CORE_UNITS = 16
LEGAL_MEMORY = (2, 4, 8, 16, 32, 64, 96)
USE_UUID, NOUSE_UUID = "mthreads.ai/use-gpuuuid", "mthreads.ai/nouse-gpuuuid"
ARGS = ("-q", "--json")

INFO = BackendInfo(
    name="mthreads",
    kinds=[KIND],
    description="Moore Threads GPUs shared by sGPU memory (512 MiB units) and core (1/16) shares",
    default_config={"split_count": 100, "mthreads_gmi": "mthreads-gmi", "mthreads_gmi_timeout": 10.0},
    host_paths=("/dev",),
    pod_annotations=("mthreads.com/gpu-index", "mthreads.com/predicate-time", "mthreads.com/predicate-node"),  # hami_allocation_annotations
)


def parse(text: str) -> list[tuple[int, str, int | None, str]]:
    """``(index, model, memory MiB or None, uuid)`` per GPU of ``mthreads-gmi -q --json``."""
    data = tool_json(text, "mthreads-gmi")
    gpus = data.get("GPU") if isinstance(data, dict) else None
    if not isinstance(gpus, list):
        raise BackendError(f"mthreads-gmi JSON has no GPU list: {text[:120]!r}")
    out = []
    for position, entry in enumerate(gpus):
        gpu = entry if isinstance(entry, dict) else {}  # listed, without figures: shown unadvertised
        index = str(gpu.get("Index", position))
        fb = gpu.get("FB Memory Usage")
        total = re.fullmatch(r"\s*(\d+)\s*(MiB|GiB)\s*", str(fb.get("Total", "") if isinstance(fb, dict) else ""))
        memory = int(total.group(1)) * (1024 if total.group(2) == "GiB" else 1) if total else None
        out.append(
            (
                int(index) if index.isdecimal() else position,
                str(gpu.get("Product Name") or "").strip() or "MTT GPU",  # a blank name would fail the whole discovery
                memory,
                str(gpu.get("GPU UUID") or ""),
            )
        )
    return out


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    def read() -> list[PhysicalDevice]:
        gpus = parse(
            run_tool(
                [str(config["mthreads_gmi"]), *ARGS], float(config["mthreads_gmi_timeout"]), missing_hint="is the MUSA driver installed?"
            )
        )
        return [
            PhysicalDevice(
                id=f"{node.name}-mthreads-{index}",
                vendor=VENDOR,
                type=model,
                memory=memory or 0,
                index=index,
                advertised=memory is not None,
                reason="" if memory is not None else "memory unknown: mthreads-gmi printed no FB Memory Usage Total",
                attributes={"uuid": uuid},
            )
            for index, model, memory, uuid in gpus
        ]

    return tool_devices(node, config, [VENDOR], read, tool="mthreads-gmi", log=log)


class MthreadsBackend(StandardBackend):
    def memory_unit_mib(self, config: Mapping[str, Any]) -> int:
        return MEMORY_UNIT_MIB

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """sGPU memory and cores are enforced by Moore Threads' stack only: ready when its
        mthreads-gmi is on the node, else shares are offered whole."""
        return vendor_stack_enforcement(
            devices,
            VENDOR,
            node,
            mechanism="Moore Threads' sGPU stack (MUSA driver)",
            tool=str(config["mthreads_gmi"]),
            install="install the MUSA driver with Moore Threads' sGPU device plugin",
        )

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discover(config, node)

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        return SchedulableDevice(
            id=device.id, vendor=VENDOR, type=device.type, count=int(config["split_count"]), memory=device.memory,
            cores=CORE_UNITS, index=device.index, healthy=device.healthy,
        )  # fmt: skip

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        result = []
        (kind,) = self.kinds(config)  # under the operator's resource_names
        for request in super().hami_container_requests(container, pod, {**config, "default_memory": 0, "default_cores": 0}):
            where = f"container {container.get('name')!r}"
            if request.count > 1 or not request.memory:  # several GPUs, or no memory: whole GPUs
                result.append(attrs.evolve(request, memory=0, memory_percentage=100, cores=CORE_UNITS))
                continue
            if request.cores > CORE_UNITS:
                raise RequestError(f"{where}: {kind.resources.cores}={request.cores} is over {CORE_UNITS} (sixteenths of one GPU)")
            result.append(attrs.evolve(request, memory=request.memory * MEMORY_UNIT_MIB))
        return result

    @hookimpl
    def hami_mutate_container(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> ContainerPatch | None:
        """HAMi's count default, and a warning for an sGPU memory the vendor's plugin does not slice
        (HAMi's webhook refuses it; the scheduler here still places it as that many 512 MiB units)."""
        patch = super().hami_mutate_container(container, pod, config)
        (kind,) = self.kinds(config)  # under the operator's resource_names
        memory = str(container_resources(container).get(str(kind.resources.memory), "")).strip()
        if memory and memory not in {str(m) for m in LEGAL_MEMORY}:
            warning = f"{kind.resources.memory}={memory}: Moore Threads sGPU slices memory as one of {list(LEGAL_MEMORY)} units of 512 MiB"
            # the shared request rules' warnings (cores clamped, ...) are kept
            return ContainerPatch(limits=patch.limits if patch else {}, warnings=[*(patch.warnings if patch else ()), warning])
        return patch

    @hookimpl
    def hami_device_fits(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> str | None:
        return selectors.pod_uuid_reason(pod, device.device.id, (USE_UUID, NOUSE_UUID))

    @hookimpl
    def hami_allocation_annotations(
        self, containers: Sequence[Sequence[Grant]], devices: Mapping[str, SchedulableDevice]
    ) -> dict[str, str] | None:
        last = next((c for c in reversed(containers) if any(g.id in devices for g in c)), None)  # HAMi keeps the last container's
        if last is None:
            return None
        return {
            "mthreads.com/gpu-index": ",".join(str(devices[g.id].index) for g in last if g.id in devices),
            "mthreads.com/predicate-time": str(time.time_ns()),
            "mthreads.com/predicate-node": last[0].id.rsplit("-mthreads-", 1)[0],
        }

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice]) -> ContainerEdits:
        nodes = [DeviceNode(f"/dev/mtgpu.{d.index}", f"/dev/mtgpu.{d.index}") for d in devices]
        return ContainerEdits(env={"MTHREADS_VISIBLE_DEVICES": ",".join(str(d.index) for d in devices)}, devices=nodes)


plugin = MthreadsBackend(INFO)
