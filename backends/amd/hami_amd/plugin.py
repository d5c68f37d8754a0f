"""AMD GPUs: rocm-smi discovery, memory and compute-unit shares as HAMi v2.10 models them.

Read from upstream pkg/device/amd/device.go and docs/develop/amd-vgpu.md (v2.10.0):
- ``amd.com/gpu`` counts GPUs, ``amd.com/gpumem`` is MiB per GPU (omitted: the whole memory),
  ``amd.com/gpucores`` a percentage 1-100 of the compute units (omitted: 100);
- the container gets ``ROCR_VISIBLE_DEVICES`` (container-local order), ``HSA_CU_MASK``
  (``<local index>:<first>-<last>`` per shared GPU, ``;``-separated, ranges disjoint between the
  containers of one GPU: the SDK's ``RangeLedger``) and ``HIP_DEVICE_MEMORY_LIMIT=<MiB>m``.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

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
    RangeLedger,
    RequestError,
    ResourceNames,
    StandardBackend,
    container_resources,
    hookimpl,
    owner_key,
    run_tool,
    selectors,
    tool_devices,
    unenforced,
)
from hami_amd import rocmsmi

log = logging.getLogger(__name__)

KIND = DeviceKind(
    vendor="AMD",
    resources=ResourceNames(count="amd.com/gpu", memory="amd.com/gpumem", cores="amd.com/gpucores"),
    annotations=AnnotationKeys.hami("hami.io/node-amd-register", "hami.io/node-handshake-amd", "hami.io/amd"),
    type_selector="amd.com/use-gputype",
)
USE_TYPE, NOUSE_TYPE = "amd.com/use-gputype", "amd.com/nouse-gputype"
USE_UUID, NOUSE_UUID = "amd.com/use-gpu-uuid", "amd.com/nouse-gpu-uuid"
COMPUTE_UNITS = {"MI300X": 304, "MI300A": 228, "MI250X": 220, "MI250": 208, "MI210": 104, "MI100": 120}
"""Compute units per model (AMD's published specifications), longest name matched first."""

INFO = BackendInfo(
    name="amd",
    kinds=[KIND],
    description="AMD GPUs: whole, or shared by memory and disjoint compute-unit masks (HSA_CU_MASK)",
    default_config={
        "split_count": 1,
        "memory_scaling": 1,
        "core_scaling": 1,
        "default_memory": 0,
        "default_cores": 100,
        "rocm_smi": "rocm-smi",
        "rocm_smi_timeout": 10.0,
        "compute_units": {},
    },
    host_paths=("/dev",),
)


def compute_units(model: str, config: Mapping[str, Any]) -> int:
    table = {**COMPUTE_UNITS, **(config.get("compute_units") or {})}
    return next((int(table[k]) for k in sorted(table, key=len, reverse=True) if k.upper() in model.upper()), 0)


def _render_minor(bus: str, index: int) -> int:
    """The DRM render node of a PCI device (sysfs), else the usual 128 + card index."""
    found = sorted(glob.glob(f"/sys/bus/pci/devices/{bus}/drm/renderD*")) if bus else []
    return int(os.path.basename(found[0])[len("renderD") :]) if found else 128 + index


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    def read() -> list[PhysicalDevice]:
        cards = rocmsmi.parse(
            run_tool([str(config["rocm_smi"]), *rocmsmi.ARGS], float(config["rocm_smi_timeout"]), missing_hint="is ROCm installed?")
        )
        return [
            PhysicalDevice(
                id=card.unique_id or f"{node.name}-amd-gpu-{card.index}",
                vendor=KIND.vendor,
                type=card.model,
                memory=card.memory_mib or 0,
                index=card.index,
                advertised=card.memory_mib is not None,
                reason="" if card.memory_mib is not None else "memory unknown: rocm-smi printed no VRAM Total Memory for this card",
                attributes={
                    "pci_bus": card.bus,
                    "render_minor": _render_minor(card.bus, card.index),
                    "compute_units": compute_units(card.model, config),
                },
            )
            for card in cards
        ]

    return tool_devices(node, config, [KIND.vendor], read, tool="rocm-smi", log=log)


class AmdBackend(StandardBackend):
    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """Nothing in AMD's stack limits a container's GPU memory (README): a share's memory is a
        scheduling quantity only, so shares are offered whole unless the operator opts into advisory limits."""
        why = (
            "nothing in AMD's stack limits a container's GPU memory (HIP_DEVICE_MEMORY_LIMIT is read only by HAMi's "
            "LD_AUDIT layer when the image carries it) and a process may override its HSA_CU_MASK"
        )
        return unenforced(devices, KIND.vendor, node, why=why)

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discover(config, node)

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        (kind,) = self.kinds(config)  # under the operator's resource_names
        cores = container_resources(container).get(str(kind.resources.cores))
        if cores is not None and str(cores).strip() in ("0", "-0"):
            raise RequestError(
                f"container {container.get('name')!r}: {kind.resources.cores}=0: must be an integer percentage between 1 and 100"
            )
        return super().hami_container_requests(container, pod, config)

    @hookimpl
    def hami_device_fits(
        self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> str | None:
        annos = selectors.pod_annotations(pod)
        if not annos:
            return None
        return selectors.type_reason(annos, device.device.type, USE_TYPE, NOUSE_TYPE) or selectors.uuid_reason(
            annos, device.device.id, USE_UUID, NOUSE_UUID
        )

    @hookimpl
    def hami_container_edits(
        self, devices: Sequence[GrantedDevice], pod: Mapping[str, Any], container: Mapping[str, Any], node: NodeContext
    ) -> ContainerEdits:
        env = {"ROCR_VISIBLE_DEVICES": ",".join(str(n) for n in range(len(devices)))}
        masks = []
        ledger = RangeLedger(node.state_dir / "hami-amd" / "cu-ranges.json")
        for local, granted in enumerate(devices):
            units = int(granted.device.attributes.get("compute_units") or 0)
            if granted.grant.cores < 100 and units:
                size = max(units * granted.grant.cores // 100, 1)  # floor(percentage × CUs / 100), at least 1 (HAMi)
                start, size = ledger.claim(granted.id, owner_key(pod, container), size, units)
                masks.append(f"{local}:{start}-{start + size - 1}")
        if masks:
            env["HSA_CU_MASK"] = ";".join(masks)
        if any(d.grant.memory < d.device.memory for d in devices):
            env["HIP_DEVICE_MEMORY_LIMIT"] = f"{min(d.grant.memory for d in devices)}m"
        nodes = [DeviceNode("/dev/kfd", "/dev/kfd")]
        for granted in devices:
            render = f"/dev/dri/renderD{int(granted.device.attributes.get('render_minor', 128 + granted.index))}"
            nodes.append(DeviceNode(render, render))
        return ContainerEdits(env=env, devices=nodes)

    @hookimpl
    def hami_release(self, pod: Mapping[str, Any], container: Mapping[str, Any], node: NodeContext) -> None:
        RangeLedger(node.state_dir / "hami-amd" / "cu-ranges.json").release(owner_key(pod, container))


plugin = AmdBackend(INFO)
