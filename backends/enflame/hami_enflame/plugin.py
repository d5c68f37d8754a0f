"""Enflame GCUs: whole GCUs (``enflame.com/gcu``) and DRS profile shares (``enflame.com/drs-gcu``).

Read from upstream pkg/device/enflame/{gcu.go,device.go,config.go} (v2.10.0):
- ``GCU``: ``enflame.com/gcu: N`` takes N whole, unused GCUs; pod annotations
  ``hami.io/enflame-gcu-devices-to-allocate`` / ``-allocated``.
- ``Enflame`` (DRS, the hard partitions HAMi >= 2.10 schedules instead of the older vGCU percentage):
  ``enflame.com/drs-gcu: S`` asks for the profile of S slices, or ``enflame.com/gcu-memory`` (GB, read
  as MiB when over twice the largest profile's GB) with ``enflame.com/gcu-core`` (1-100) for the
  smallest profile covering both. A profile ``<S>g.<M>gb`` grants M GiB and ceil(S x 100 / max S) % of
  the card. The allocation writes ``hami.io/enflame-vgpu-devices-allocated``, ``enflame.com/gcu-assigned``,
  ``-assigned-time``, ``-assigned-index``/``-id``, ``-assigned-minor``, ``-request-size`` and
  ``assigned-containers`` (HAMi's PatchAnnotations).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.sdk import (
    AnnotationKeys,
    BackendError,
    BackendInfo,
    BackendRefused,
    ContainerEdits,
    DeviceKind,
    DeviceRequest,
    Enforcement,
    Grant,
    GrantedDevice,
    NodeContext,
    PhysicalDevice,
    QuantityError,
    RequestError,
    ResourceNames,
    SchedulableDevice,
    WholeDeviceBackend,
    container_resources,
    hookimpl,
    one_slot,
    parse_count,
    run_tool,
    tool_devices,
    unenforced,
    whole_device_enforcement,
)
from hami_enflame import efsmi

log = logging.getLogger(__name__)

GCU = DeviceKind(
    vendor="GCU",
    resources=ResourceNames(count="enflame.com/gcu"),
    annotations=AnnotationKeys.hami("hami.io/node-enflame-gcu-register", "hami.io/node-handshake-enflame-gcu", "hami.io/enflame-gcu"),
)
DRS = DeviceKind(
    vendor="Enflame",
    resources=ResourceNames(count="enflame.com/drs-gcu", memory="enflame.com/gcu-memory", cores="enflame.com/gcu-core"),
    annotations=AnnotationKeys.hami("hami.io/node-enflame-register", "hami.io/node-handshake-enflame", "hami.io/enflame-vgpu"),
)
USE_UUID, NOUSE_UUID = "enflame.com/use-gpuuuid", "enflame.com/nouse-gpuuuid"
PROFILE, SLICES, SPEC = "profile", "slices", "spec"
"""Request attributes: the chosen profile, the slices asked for directly, or (memory GB, core %) asked by spec."""

INFO = BackendInfo(
    name="enflame",
    kinds=[GCU, DRS],
    description="Enflame GCUs: whole (enflame.com/gcu) or DRS hardware partitions (enflame.com/drs-gcu)",
    default_config={
        "mode": "gcu",
        "node_mode": {},
        "drs_capacity": 6,
        "drs_profiles": {"1g.6gb": "0", "3g.20gb": "1", "6g.40gb": "2"},
        "efsmi": "efsmi",
        "efsmi_timeout": 10.0,
    },
    host_paths=("/dev",),
    pod_annotations=("enflame.com/gcu-assigned*", "enflame.com/gcu-request-size", "assigned-containers"),  # hami_allocation_annotations
)


@attrs.frozen
class Profile:
    name: str
    id: str
    size: int
    memory_gb: int


def profiles(config: Mapping[str, Any]) -> list[Profile]:
    """``drs_profiles`` (name -> profile id, as ``efsmi -i N --drs --list-profile`` names them), smallest first."""
    found = []
    for name, pid in (config.get("drs_profiles") or {}).items():
        size, _, memory = str(name).lower().partition(".")
        if not (size.endswith("g") and size[:-1].isdecimal() and memory.endswith("gb") and memory[:-2].isdecimal()):
            raise BackendError(f"config drs_profiles: {name!r} is not a DRS profile name like '3g.20gb'")
        found.append(Profile(str(name), str(pid), int(size[:-1]), int(memory[:-2])))
    return sorted(found, key=lambda p: (p.size, p.memory_gb))


def choose(request: DeviceRequest, config: Mapping[str, Any]) -> Profile | None:
    """HAMi's selectProfileByRequest: the exact slice count, else the smallest profile covering memory and cores."""
    known = profiles(config)
    if not known:
        return None
    if SLICES in request.attributes:
        return next((p for p in known if p.size == request.attributes[SLICES]), None)
    memory, cores = request.attributes.get(SPEC, (0, 0))
    top = max(p.memory_gb for p in known)
    gb = math.ceil(memory / 1024) if memory > 2 * top else memory
    largest = max(p.size for p in known)
    return next((p for p in known if p.memory_gb >= gb and math.ceil(p.size * 100 / largest) >= cores), None)


def _mode(config: Mapping[str, Any], node_name: str) -> str:
    mode = str((config.get("node_mode") or {}).get(node_name, config.get("mode", "gcu")))
    if mode not in ("gcu", "drs"):
        raise BackendError(f"config mode={mode!r} for node {node_name!r}: must be 'gcu' or 'drs'")
    return mode


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    def read() -> list[PhysicalDevice]:
        cards = efsmi.parse(
            run_tool([str(config["efsmi"]), *efsmi.ARGS], float(config["efsmi_timeout"]), missing_hint="is the Enflame driver installed?")
        )
        vendor = DRS.vendor if _mode(config, node.name) == "drs" else GCU.vendor
        return [
            PhysicalDevice(
                id=f"{node.name}-{'enflame-drs' if vendor == DRS.vendor else 'GCU'}-{c.index}",  # HAMi's ids
                vendor=vendor,
                type=c.model,
                memory=c.memory_mib or 0,
                index=c.index,
                advertised=c.memory_mib is not None,
                reason="" if c.memory_mib is not None else "memory unknown: efsmi printed no Mem for this card",
                attributes={"pci_bus": c.bus, "serial": c.serial, "virt": c.virt},
            )
            for c in cards
        ]

    return tool_devices(node, config, INFO.vendors, read, tool="efsmi", log=log)


class EnflameBackend(WholeDeviceBackend):
    """Whole GCUs as the SDK's whole-device backend; DRS cards split and edited here."""

    uuid_keys = (USE_UUID, NOUSE_UUID)
    visible_env = "ENFLAME_VISIBLE_DEVICES"

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """Whole GCUs need nothing; a DRS share is enforced by its DRS instance, which this backend
        does not create on a real node (README): DRS is not ready there (simulated nodes run it fully)."""
        why = (
            "hami-enflame does not create DRS instances (in HAMi, Enflame's gcushare device plugin runs "
            "efsmi --drs --create-instance) and refuses DRS grants at Allocate"
        )
        return [*whole_device_enforcement(devices, [GCU.vendor], node), *unenforced(devices, DRS.vendor, node, why=why)]

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discover(config, node)

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        """A GCU is one slot; a DRS card offers its slice capacity and the largest profile's memory."""
        if device.vendor == GCU.vendor:
            return super().hami_split_device(device, config)
        top = max((p.memory_gb for p in profiles(config)), default=0) * 1024
        return attrs.evolve(one_slot(device), count=int(config["drs_capacity"]), memory=top or device.memory)

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        resources = container_resources(container)
        where = f"container {container.get('name')!r}"
        kinds = {k.vendor: k.resources for k in self.kinds(config)}  # under the operator's resource_names
        names, whole = kinds[DRS.vendor], kinds[GCU.vendor].count
        try:
            if whole in resources:
                count = parse_count(resources[whole], whole)
                return [DeviceRequest(GCU.vendor, count=count, memory_percentage=100, cores=100)] if count > 0 else []
            if names.count in resources and not (names.memory in resources or names.cores in resources):
                slices = parse_count(resources[names.count], names.count)
                if slices <= 0:
                    raise RequestError(f"{names.count} must be greater than 0")
                return [self._drs(DeviceRequest(DRS.vendor, attributes={SLICES: slices}), config, where)]
            memory = parse_count(resources[names.memory], names.memory) if names.memory in resources else None
            cores = parse_count(resources[names.cores], names.cores) if names.cores in resources else None
        except (RequestError, QuantityError) as exc:
            raise RequestError(f"{where}: {exc}") from None
        if memory is None and cores is None:
            return []
        if memory is not None and memory <= 0:
            raise RequestError(f"{where}: {names.memory}={memory} must be greater than 0")
        if cores is not None and not 0 < cores <= 100:
            raise RequestError(f"{where}: {names.cores}={cores} must be in range (0,100]")
        return [self._drs(DeviceRequest(DRS.vendor, attributes={SPEC: (memory or 0, cores or 0)}), config, where)]

    @staticmethod
    def _drs(request: DeviceRequest, config: Mapping[str, Any], where: str) -> DeviceRequest:
        profile = choose(request, config)
        if profile is None:
            known = ", ".join(p.name for p in profiles(config)) or "none configured"
            raise RequestError(f"{where}: no DRS profile fits {dict(request.attributes)} (profiles: {known})")
        cores = math.ceil(profile.size * 100 / max(p.size for p in profiles(config)))
        return attrs.evolve(request, memory=profile.memory_gb * 1024, cores=cores, attributes={**request.attributes, PROFILE: profile.name})

    @hookimpl
    def hami_allocation_annotations(
        self,
        vendor: str,
        containers: Sequence[Sequence[Grant]],
        devices: Mapping[str, SchedulableDevice],
        pod: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> dict[str, str] | None:
        """HAMi's DRS PatchAnnotations: what Enflame's DRS runtime reads to create each container's instance."""
        spec = pod.get("spec") or {}
        names = [c.get("name", "") for c in (*spec.get("initContainers", []), *spec.get("containers", []))]
        by_memory = {p.memory_gb * 1024: p for p in profiles(config)}
        out: dict[str, str] = {}
        assigned = {}
        for i, grants in enumerate(containers):
            if vendor != DRS.vendor or not grants or grants[0].id not in devices:
                continue
            p = by_memory.get(grants[0].memory, Profile("", "", 1, 0))
            assigned[names[i] if i < len(names) else f"container-{i}"] = {
                "allocated": False,
                "request": p.size,
                "profileID": p.id,
                "profileName": p.name,
            }
            index = str(devices[grants[0].id].index)
            for key in ("enflame.com/gcu-assigned-index", "enflame.com/gcu-assigned-id", "enflame.com/gcu-assigned-minor"):
                out.setdefault(key, index)
            out.setdefault("enflame.com/gcu-request-size", str(p.size))
        if not assigned:
            return None
        out.update({"enflame.com/gcu-assigned": "false", "enflame.com/gcu-assigned-time": str(time.time_ns())})
        out["assigned-containers"] = json.dumps(assigned, separators=(",", ":"))
        return out

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice], node: NodeContext) -> ContainerEdits:  # type: ignore[override]  # pluggy passes hook arguments by name
        if any(d.device.vendor == DRS.vendor for d in devices) and not node.simulated:
            raise BackendRefused(
                "DRS instances are created by Enflame's DRS runtime from the pod's enflame.com/* annotations; "
                "hami-enflame does not create them yet (run efsmi --drs --create-instance through Enflame's tooling)"
            )
        return super().hami_container_edits(devices)


plugin = EnflameBackend(INFO)
