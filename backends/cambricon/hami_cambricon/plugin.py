"""Cambricon MLUs: cnmon discovery, dynamic sMLU shares, selectors, MLULink rings.

Decisions read from HAMi's source (pkg/device/cambricon/device.go):
- ``cambricon.com/mlu.smlu.vmemory`` is in **slices of 256 MiB** (``MemoryFactor = 256``), not a
  percentage as HAMi's older README said; the slice is configurable (``vmemory_unit_mib``) to match
  the device plugin's ``min-dsmlu-unit``, and ``vmemory_percent: true`` chooses the README's reading
  (a percentage of the card). A request's memory is converted to MiB for the grant; the webhook
  warns how it read the value.
- ``cambricon.com/mlunum`` (HAMi's older count name) is rewritten to ``cambricon.com/vmlu`` at
  admission: kubelet calls the device plugin only for the name it advertises.
- ``vcore`` defaults to 100 (a card asked for without vcore is used whole); ``vmlu > 1`` gets whole
  cards, because sMLU limits only apply to a single card (HAMi's documentation says the same).
- The runtime learns the share from ``CAMBRICON_DSMLU_PROFILE="<index>_<vcore>_<vmemory units>"`` and
  ``CAMBRICON_DSMLU_ASSIGNED="false"``: pod annotations written with the allocation, as HAMi's
  ``PatchAnnotations`` does (first container holding an MLU); each shared container also gets its
  own profile as environment variables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import attrs

from hami.sdk import (
    AnnotationError,
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
    HealthEvent,
    NodeAnnotations,
    NodeContext,
    PhysicalDevice,
    PresenceWatch,
    QuantityError,
    RequestError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
    container_resources,
    hookimpl,
    parse_count,
    selectors,
    simulated_enforcement,
    standard_request,
)
from hami_cambricon import discovery, topology

log = logging.getLogger(__name__)

COUNT_ALIAS = "cambricon.com/mlunum"
VMEMORY = "cambricon.com/mlu.smlu.vmemory"

KIND = DeviceKind(
    vendor="MLU",
    resources=ResourceNames(
        count="cambricon.com/vmlu",
        memory=VMEMORY,
        cores="cambricon.com/mlu.smlu.vcore",
        extra=(COUNT_ALIAS,),
    ),
    annotations=AnnotationKeys.hami("hami.io/node-mlu-register", "hami.io/node-handshake-mlu", "hami.io/cambricon-mlu"),
)

USE_TYPE = "cambricon.com/use-mlutype"
NOUSE_TYPE = "cambricon.com/nouse-mlutype"
USE_UUID = "cambricon.com/use-gpuuuid"
NOUSE_UUID = "cambricon.com/nouse-gpuuuid"
LINK_POLICY = "cambricon.com/mlulink-policy"
MLULINK_ANNOTATION = "hami.io/node-mlu-mlulink"
PROFILE_ENV = "CAMBRICON_DSMLU_PROFILE"
ASSIGNED_ENV = "CAMBRICON_DSMLU_ASSIGNED"
VISIBLE_ENV = "CAMBRICON_VISIBLE_DEVICES"
VMEMORY_UNIT = "vmemory_unit"
"""Request attribute: MiB per vmemory slice, kept so the profile can be written in slices again."""

INFO = BackendInfo(
    name="cambricon",
    kinds=[KIND],
    description="Cambricon MLUs shared through dynamic sMLU (vcore and vmemory slices)",
    default_config={
        "split_count": 100,
        "memory_scaling": 1,
        "core_scaling": 1,
        "default_memory": 0,
        "default_cores": 100,
        "vmemory_unit_mib": 256,
        "vmemory_percent": False,
        "cnmon": "cnmon",
        "cnmon_timeout": 10.0,
        "mlulink_policy": "best-effort",
        "cdi": False,
        "mlulink": {},
    },
    host_paths=("/dev", "/usr/bin/cnmon"),
    pod_annotations=(PROFILE_ENV, ASSIGNED_ENV),  # hami_allocation_annotations
)


class CambriconBackend(StandardBackend):
    def __init__(self, info: BackendInfo = INFO) -> None:
        super().__init__(info)
        self._presence = PresenceWatch()

    # ------------------------------------------------------------ node side

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discovery.discover(config, node)

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """sMLU limits are enforced by the Cambricon driver's dynamic sMLU: ready for the cards cnmon (the
        driver's tool) listed with its version; a card it did not (an inventory or a cnmon without a
        version line) is not vouched for. The driver's sMLU switch itself is not probed (no documented query)."""
        if node.simulated:
            return simulated_enforcement(devices, "MLU", [""], "dynamic sMLU (Cambricon driver)")
        out = [Enforcement("MLU", "", mechanism="dynamic sMLU (Cambricon driver)")]
        for d in devices:
            if not d.attributes.get("cnmon"):
                out.append(
                    Enforcement(
                        "MLU",
                        "",
                        ready=False,
                        mechanism="dynamic sMLU (Cambricon driver)",
                        device_ids=(d.id,),
                        reason=f"MLU {d.index} was not listed by cnmon with a driver version, so its sMLU support is unknown",
                    )
                )
        return out

    @hookimpl
    def hami_device_health(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[HealthEvent]:
        """A card that drops out of cnmon's table is unhealthy until it is listed again."""
        if node.simulated:
            return []
        present = discovery.present_indexes(config)
        if present is None:
            return []
        return self._presence.events(devices, present, lambda device: f"MLU {device.index} is no longer listed by cnmon")

    @hookimpl
    def hami_node_annotations(
        self, devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice], config: Mapping[str, Any]
    ) -> NodeAnnotations | None:
        links = discovery.mlulinks(physical, config)
        return NodeAnnotations({MLULINK_ANNOTATION: topology.encode(links)}) if links else None

    # ------------------------------------------------------------ scheduling side

    def memory_unit_mib(self, config: Mapping[str, Any]) -> int:
        return _unit(config)

    def _names(self, config: Mapping[str, Any]) -> tuple[ResourceNames, str]:
        """The MLU's resource names and its older count name under the operator's ``resource_names``."""
        (kind,) = self.kinds(config)
        return kind.resources, kind.resources.extra[KIND.resources.extra.index(COUNT_ALIAS)]

    @hookimpl
    def hami_node_capacity_devices(self, vendor: str, node: Mapping[str, Any], config: Mapping[str, Any]) -> list[SchedulableDevice] | None:
        """HAMi's cambricon-device-plugin writes no device list: HAMi v2.10 reads the MLUs from node
        capacity (pkg/device/cambricon/device.go ``GetNodeDevices``): one MLU per 100 of
        ``mlu.smlu.vcore``, each with count 100, 100 cores and ``vmemory × 256 MiB × 100 / vcore`` MiB,
        id ``<node>-cambricon-mlu-<i>``. Read the same way, so a node of a cluster in migration keeps
        its MLUs in our scheduler."""
        if vendor != KIND.vendor:
            return None
        capacity = (node.get("status") or {}).get("capacity") or {}
        (kind,) = [k for k in self.kinds(config) if k.vendor == KIND.vendor]  # under the configured resource names
        resources = kind.resources
        raw_cores, raw_memory = capacity.get(resources.cores or ""), capacity.get(resources.memory or "")
        if raw_cores is None:
            return None
        try:
            cards, memory = parse_count(str(raw_cores), str(resources.cores)), parse_count(str(raw_memory or 0), str(resources.memory))
        except QuantityError as exc:
            raise AnnotationError(f"node capacity: {exc}") from None
        if cards <= 0:
            return None
        name = str((node.get("metadata") or {}).get("name") or "")
        per_card = memory * _unit(config) * 100 // cards
        return [
            SchedulableDevice(id=f"{name}-cambricon-mlu-{i}", vendor=vendor, type="MLU", count=100, memory=per_card, cores=100, index=i)
            for i in range(-(-cards // 100))
        ]

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        unit = _unit(config)
        names, alias = self._names(config)
        (kind,) = self.kinds(config)
        found = standard_request(
            container,
            kind,
            default_memory=config.get("default_memory", 0),
            default_cores=config.get("default_cores", 0),
            count_aliases=(alias,),
            memory_unit_mib=unit,
        )
        result = []
        for request in [found] if found else []:
            if request.count > 1:
                request = attrs.evolve(request, memory=0, memory_percentage=100, cores=100)
            elif request.memory and _percent(config):  # the older README's reading: % of the card
                if request.memory > 100:
                    raise RequestError(
                        f"container {container.get('name')!r}: {names.memory}={request.memory} is over 100, and this cluster "
                        "reads vmemory as a percentage of the card (vmemory_percent): give 1-100"
                    )
                request = attrs.evolve(request, memory=0, memory_percentage=request.memory)
            elif request.memory:
                request = attrs.evolve(request, memory=request.memory * unit)  # vmemory slices -> MiB
            result.append(attrs.evolve(request, attributes={**request.attributes, VMEMORY_UNIT: unit}))
        return result

    @hookimpl
    def hami_mutate_container(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> ContainerPatch | None:
        """HAMi's count default, ``mlunum`` rewritten to ``vmlu`` (the name the device plugin advertises:
        kubelet would start the container without an MLU otherwise), and a warning that says how
        ``vmemory`` was read, since HAMi's older README and its code disagree."""
        names, alias = self._names(config)
        resources = container_resources(container)
        patch = super().hami_mutate_container(container, pod, config)
        limits = dict(patch.limits) if patch else {}
        warnings = list(patch.warnings) if patch else []
        remove: tuple[str, ...] = ()
        if alias in resources:
            if names.count in resources:
                raise RequestError(
                    f"container {container.get('name')!r}: asks for both {alias} and {names.count}; write only {names.count}"
                )
            limits[names.count] = str(resources[alias])
            remove = (alias,)
            warnings.append(f"{alias} is HAMi's older name of {names.count}, rewritten to it; write {names.count}")
        vmemory = resources.get(str(names.memory))
        if vmemory is not None:
            warnings.append(_vmemory_reading(str(names.memory), str(vmemory), config))
        if not (limits or warnings or remove):
            return None
        return ContainerPatch(limits=limits, warnings=warnings, remove=remove)

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
    def hami_select_devices(
        self,
        request: DeviceRequest,
        candidates: Sequence[DeviceUsage],
        node_annotations: Mapping[str, str],
        pod: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> list[str] | None:
        text = node_annotations.get(MLULINK_ANNOTATION)
        if not text or request.count not in topology.RING_SIZES:
            return None
        policy = selectors.pod_annotations(pod).get(LINK_POLICY) or str(config.get("mlulink_policy", "best-effort"))
        if policy not in topology.POLICIES:
            log.warning("event=mlulink_policy_unknown policy=%r known=%s", policy, ",".join(topology.POLICIES))
            policy = "best-effort"
        try:
            links = _links(text)
        except AnnotationError as exc:
            log.warning("event=mlulink_annotation_corrupt error=%r", str(exc))
            return None
        return topology.choose([c.device.id for c in candidates], request.count, links, policy)

    # ------------------------------------------------------------ runtime side

    @hookimpl
    def hami_allocation_annotations(
        self, containers: Sequence[Sequence[Grant]], devices: Mapping[str, SchedulableDevice], config: Mapping[str, Any]
    ) -> dict[str, str] | None:
        """HAMi's sMLU pod annotations: the profile of the first container holding an MLU."""
        first = next((c[0] for c in containers if c), None)
        if first is None or first.id not in devices:
            return None
        return {PROFILE_ENV: f"{devices[first.id].index}_{first.cores}_{first.memory // _unit(config)}", ASSIGNED_ENV: "false"}

    @hookimpl
    def hami_container_edits(self, devices: Sequence[GrantedDevice], config: Mapping[str, Any]) -> ContainerEdits:
        slots = [d.index for d in devices]
        env: dict[str, str] = {}
        if len(devices) == 1 and not devices[0].whole:
            first = devices[0]
            env.update({PROFILE_ENV: f"{first.index}_{first.grant.cores}_{first.grant.memory // _unit(config)}", ASSIGNED_ENV: "false"})
        if config.get("cdi"):
            return ContainerEdits(env=env, cdi_devices=[f"cambricon.com/mlu=mlu-{s}" for s in slots])
        env[VISIBLE_ENV] = ",".join(str(s) for s in slots)
        nodes = [DeviceNode("/dev/cambricon_ctl", "/dev/cambricon_ctl")]
        for slot in slots:
            for name in (f"cambricon_dev{slot}", f"cambricon_ipcm{slot}", f"commu{slot}"):
                nodes.append(DeviceNode(f"/dev/{name}", f"/dev/{name}"))
        return ContainerEdits(env=env, devices=nodes)


def _percent(config: Mapping[str, Any]) -> bool:
    value = config.get("vmemory_percent", False)
    if not isinstance(value, bool):
        raise BackendError(f"config vmemory_percent={value!r} must be true or false")
    return value


def _vmemory_reading(name: str, value: str, config: Mapping[str, Any]) -> str:
    """How this cluster reads ``vmemory`` (HAMi v2.10's code: 256 MiB slices; HAMi's older README: % of the card)."""
    if _percent(config):
        return f"{name}={value} is read as {value} % of the card's memory (this cluster's vmemory_percent setting; HAMi v2.10 reads slices of {_unit(config)} MiB)"
    try:
        mib = f" = {int(value) * _unit(config)} MiB"
    except ValueError:
        mib = ""
    return (
        f"{name}={value} is {value} slices of {_unit(config)} MiB{mib} (HAMi v2.10's reading), not {value} % of the card "
        "as HAMi's older README said; an operator can choose the percentage reading (vmemory_percent)"
    )


def _unit(config: Mapping[str, Any]) -> int:
    unit = config.get("vmemory_unit_mib", 256)
    if isinstance(unit, bool) or not isinstance(unit, int) or unit < 1:
        raise BackendError(f"config vmemory_unit_mib={unit!r} must be a positive whole number of MiB")
    return unit


@lru_cache(maxsize=64)
def _links(text: str) -> dict[str, tuple[str, ...]]:
    return topology.decode(text)


plugin = CambriconBackend(INFO)
