"""Huawei Ascend NPUs: one device kind per chip, with HAMi's per-chip resource and annotation names.

Hard split (default): a memory request rounds up to the smallest vNPU template of the chip (a data
table, ``templates.yaml``, overridable with ``templates_file``); larger than every template, or more
than one chip, means whole chips. ``hami_prepare`` creates the vNPU with npu-smi and
``hami_release`` destroys it. Soft split (pod annotation ``huawei.com/vnpu-mode: hami-core``): any
memory and a core share, enforced in the container by HAMi's vNPU core library. With an allocation
the scheduler writes HAMi's ``huawei.com/<chip>`` runtime info and ``predicate-time`` pod annotations,
which the ascend-device-plugin reads.
"""

from __future__ import annotations

import json
import logging
import shutil
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
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    Grant,
    GrantedDevice,
    HealthEvent,
    NodeAnnotations,
    NodeContext,
    PhysicalDevice,
    RequestError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
    container_resources,
    hookimpl,
    parse_count,
    simulated_enforcement,
)
from hami_ascend import aliases, discovery, edits, topology, vnpu
from hami_ascend.chips import chip_for
from hami_ascend.npusmi import HEALTHY, ChipRow, NpuSmi

log = logging.getLogger(__name__)

ALIAS_HOLDER = "Ascend910B3"
CHIPS = ("Ascend910A", "Ascend910B2", "Ascend910B3", "Ascend910B4", "Ascend910B4-1", "Ascend910C", "Ascend310P")
VNPU_MODE = "huawei.com/vnpu-mode"
SOFT = "hami-core"
TEMPLATE = "template"
"""Request attribute: the vNPU template a hard-split request was rounded to ("" = whole chip)."""


def chip_kind(chip: str) -> DeviceKind:
    """``huawei.com/<Chip>``, ``-memory``, ``-core``; ``hami.io/node-register-<Chip>``; ``hami.io/<Chip>-devices-…``.
    The 910B3 kind also declares HAMi's older names (hami_ascend.aliases) so that the webhook routes
    pods using them here, to be rewritten to the per-chip names."""
    extra = aliases.NAMES if chip == ALIAS_HOLDER else ()
    return DeviceKind(
        vendor=chip,
        resources=ResourceNames(
            count=f"huawei.com/{chip}", memory=f"huawei.com/{chip}-memory", cores=f"huawei.com/{chip}-core", extra=extra
        ),
        annotations=AnnotationKeys.hami(f"hami.io/node-register-{chip}", f"hami.io/node-handshake-{chip}", f"hami.io/{chip}"),
    )


INFO = BackendInfo(
    name="ascend",
    kinds=[chip_kind(chip) for chip in CHIPS],
    description="Huawei Ascend NPUs split into vNPU templates (hard) or by HAMi's vNPU library (soft)",
    default_config={
        "split_count": 7,
        "memory_scaling": 1,
        "core_scaling": 1,
        "default_memory": 0,
        "default_cores": 0,
        "resource_aliases": aliases.DEFAULT_ALIASES,
        "cluster_chips": [],
        "templates_file": "",
        "npu_smi": "npu-smi",
        "npu_smi_timeout": 10,
        "vnpu_create": "npu-smi",
        "host_root": "/",
    },
    host_paths=edits.HOST_PATHS,
    pod_annotations=(*(f"huawei.com/{chip}" for chip in CHIPS), "predicate-time"),  # hami_allocation_annotations
)


def use_uuid_key(vendor: str) -> str:
    return f"hami.io/use-{vendor}-uuid"


def no_use_uuid_key(vendor: str) -> str:
    return f"hami.io/no-use-{vendor}-uuid"


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def is_soft(pod: Mapping[str, Any]) -> bool:
    return _annotations(pod).get(VNPU_MODE) == SOFT


def _ids(value: str) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()}


class AscendBackend(StandardBackend):
    """HAMi's request rules from :class:`StandardBackend`, plus Ascend's templates, modes and topology."""

    # ------------------------------------------------------------ node side

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discovery.discover(config, node, self.info.vendors)

    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """vNPU shares are hardware partitions npu-smi creates (``create-vnpu``): ready where npu-smi runs
        on this node. With ``vnpu_create: runtime`` Ascend's container runtime creates them, which the
        agent cannot see: nothing is reported (unverified)."""
        vendors = sorted({d.vendor for d in devices})
        if node.simulated:
            return [e for v in vendors for e in simulated_enforcement(devices, v, [""], "vNPU partitions (npu-smi create-vnpu)")]
        if config.get("vnpu_create", "npu-smi") == "runtime":
            return []
        smi = NpuSmi.from_config(config)
        if smi.available():
            return [Enforcement(v, "", mechanism=f"vNPU partitions ({smi.executable} create-vnpu)") for v in vendors]
        why = f"{smi.executable} is not on the agent's PATH, so no vNPU can be created (install the Ascend driver tools or set npu_smi)"
        return [Enforcement(v, "", ready=False, mechanism="vNPU partitions (npu-smi create-vnpu)", reason=why) for v in vendors]

    @hookimpl
    def hami_device_health(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[HealthEvent]:
        """Chips whose npu-smi health word changed from what ``devices`` say (simulated ones never do)."""
        real = [] if node.simulated else devices
        smi = NpuSmi.from_config(config)
        if not real or not smi.available():
            return []
        try:
            table = smi.info()
        except BackendError as exc:
            log.warning("event=ascend_health_probe_failed error=%r", str(exc))
            return []
        seen: dict[tuple[object, object], ChipRow] = {(r.npu_id, r.chip_id): r for r in table.chips}
        events = []
        for device in real:
            row = seen.get((device.attributes.get("card"), device.attributes.get("chip")))
            if row is None:
                events.append(HealthEvent(device.id, healthy=False, reason="no longer listed by npu-smi info"))
            elif (row.health in HEALTHY) != device.healthy:
                events.append(HealthEvent(device.id, healthy=row.health in HEALTHY, reason=f"npu-smi health {row.health}"))
        return events

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        split = super().hami_split_device(device, config)
        chip = chip_for(config, device.vendor)
        if chip.max_vnpus and split.count > chip.max_vnpus:
            split = attrs.evolve(split, count=chip.max_vnpus)
        return split

    @hookimpl
    def hami_node_annotations(
        self, devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice], config: Mapping[str, Any]
    ) -> NodeAnnotations | None:
        found = topology.rings_annotation(physical)
        return NodeAnnotations(found) if found else None

    # ------------------------------------------------------------ scheduling side

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        change = aliases.rewrite(container, config, CHIPS, self._renames(config))
        if change is not None:  # what the container asks once the webhook has rewritten the older names
            container = aliases.translated(container, change)
        requests = []
        names = {k.vendor: k.resources.count for k in self.kinds(config)}
        for request in super().hami_container_requests(container, pod, config):
            minimum = chip_for(config, request.vendor).min_count
            if minimum > 1:
                request = self._module_count(request, minimum, container, names[request.vendor])
            requests.append(request)
        return requests

    def _renames(self, config: Mapping[str, Any]) -> dict[str, str]:
        """Declared resource name -> the name the operator's ``resource_names`` gives it (renamed ones only)."""
        return {
            old: new
            for declared, kind in zip(self.info.kinds, self.kinds(config), strict=True)
            for old, new in zip(declared.resources.all(), kind.resources.all(), strict=True)
            if old != new
        }

    @staticmethod
    def _module_count(request: DeviceRequest, minimum: int, container: Mapping[str, Any], name: str) -> DeviceRequest:
        """910C: chips come in modules of ``minimum`` dies; 1 rounds up, other counts must be multiples."""
        if request.count < minimum:
            log.info(
                "event=ascend_count_rounded vendor=%s container=%s from=%d to=%d",
                request.vendor,
                container.get("name"),
                request.count,
                minimum,
            )
            return attrs.evolve(request, count=minimum)
        if request.count % minimum:
            raise RequestError(
                f"container {container.get('name')!r}: {name}={request.count}: must be 1 or a multiple of "
                f"{minimum} (one {request.vendor} module holds {minimum} dies)"
            )
        return request

    @hookimpl
    def hami_mutate_container(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> ContainerPatch | None:
        change = aliases.rewrite(container, config, CHIPS, self._renames(config))
        if change is not None:
            container = aliases.translated(container, change)
        patch = super().hami_mutate_container(container, pod, config)
        limits = dict(patch.limits) if patch else {}
        warnings = list(patch.warnings) if patch else []
        if change is not None:
            limits = {**change.limits, **limits}
            warnings.insert(0, change.why)
        resources = container_resources(container)
        for kind in self.kinds(config):  # under the operator's resource_names
            minimum = chip_for(config, kind.vendor).min_count
            if minimum <= 1:
                continue
            name = kind.resources.count
            if name in limits:
                limits[name] = str(minimum)
            elif name in resources:
                try:
                    asked = parse_count(resources[name], name)
                except Exception:
                    continue  # container_requests reports the bad quantity
                if 0 < asked < minimum:
                    limits[name] = str(minimum)  # takes effect once the webhook may replace limits
                    warnings.append(
                        f"{name}={asked} is rounded up to {minimum}: one {kind.vendor} module holds {minimum} dies; set {name}: {minimum}"
                    )
        if change is not None:
            return ContainerPatch(limits=limits, warnings=warnings, remove=change.removed)
        return ContainerPatch(limits=limits, warnings=warnings) if limits or warnings else None

    @hookimpl
    def hami_normalize_request(
        self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> DeviceRequest | None:
        """Hard split: round up to a template, else the whole chip. Soft split: as asked."""
        if is_soft(pod):
            return None
        chip = chip_for(config, request.vendor)
        whole = device.device.memory
        memory = request.memory_on(device.device)
        template = chip.template_for(memory, request.cores) if request.count == 1 and memory < whole else None
        if template is None:
            return attrs.evolve(request, memory=whole, memory_percentage=None, cores=100, attributes={**request.attributes, TEMPLATE: ""})
        cores = max(request.cores, chip.core_share(template))
        return attrs.evolve(
            request, memory=template.memory, memory_percentage=None, cores=cores, attributes={**request.attributes, TEMPLATE: template.name}
        )

    @hookimpl
    def hami_device_fits(
        self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> str | None:
        annotations = _annotations(pod)
        vendor, device_id = request.vendor, device.device.id
        wanted = annotations.get(use_uuid_key(vendor))
        if wanted and device_id not in _ids(wanted):
            return "CardUuidMismatch"
        unwanted = annotations.get(no_use_uuid_key(vendor))
        if unwanted and device_id in _ids(unwanted):
            return "CardUuidMismatch"
        chip = chip_for(config, vendor)
        if chip.max_vnpus and not is_soft(pod) and device.used >= chip.max_vnpus:
            return "CardVnpuLimitReached"
        return None

    @hookimpl
    def hami_select_devices(
        self,
        request: DeviceRequest,
        candidates: Sequence[DeviceUsage],
        node_annotations: Mapping[str, str],
        pod: Mapping[str, Any],
        config: Mapping[str, Any],
    ) -> list[str] | None:
        chip = chip_for(config, request.vendor)
        if chip.hccs == "none":
            return None
        rings = topology.read_rings(node_annotations, request.vendor)
        return None if rings is None else topology.choose(chip, request.count, candidates, rings)

    # ------------------------------------------------------------ allocation (scheduler)

    @hookimpl
    def hami_allocation_annotations(
        self, vendor: str, containers: Sequence[Sequence[Grant]], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> dict[str, str] | None:
        """HAMi's ``PatchAnnotations`` (pkg/device/ascend/device.go, v2.10.0): ``huawei.com/<chip>`` is
        a JSON list of ``{UUID, temp, memory, core}`` for every granted chip, container by container
        (``temp``: the smallest template holding the memory; like every empty or zero field it is left
        out, as Go's omitempty does: soft split, whole chips), and ``predicate-time`` in Unix seconds."""
        grants = [g for c in containers for g in c]
        if not grants:
            return None
        chip = chip_for(config, vendor)
        info = []
        for grant in grants:
            template = None if is_soft(pod) else chip.template_for(grant.memory)
            entry = {"UUID": grant.id, "temp": template.name if template else "", "memory": grant.memory, "core": grant.cores}
            info.append({k: v for k, v in entry.items() if v})
        return {f"huawei.com/{vendor}": json.dumps(info, separators=(",", ":")), "predicate-time": str(int(time.time()))}

    # ------------------------------------------------------------ runtime side

    @staticmethod
    def _plan(devices: Sequence[GrantedDevice], config: Mapping[str, Any]) -> list[tuple[Grant, Any, Mapping[str, Any], str]]:
        """Per grant: its chip, discovery facts and template ("" = whole chip)."""
        plan = []
        for d in devices:
            chip = chip_for(config, d.grant.vendor)
            template = (
                chip.template_for(d.grant.memory, d.grant.cores)
                if len(devices) == 1 and d.grant.cores < 100 and d.grant.memory < d.device.memory
                else None
            )
            plan.append((d.grant, chip, d.device.attributes, template.name if template else ""))
        return plan

    @hookimpl
    def hami_prepare(
        self,
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        config: Mapping[str, Any],
        node: NodeContext,
    ) -> None:
        if is_soft(pod):
            edits.require_vnpu_core(config, node.simulated)
            if not node.simulated:
                edits.host(config, edits.shmem_dir(pod, container)).mkdir(parents=True, exist_ok=True)
            return
        if config.get("vnpu_create", "npu-smi") == "runtime":
            return
        plan = [p for p in self._plan(devices, config) if p[3]]
        if plan:
            vnpu.create(
                vnpu.container_key(pod, container), plan, vnpu.ledger_for(node), NpuSmi.from_config(config), simulated=node.simulated
            )

    @hookimpl
    def hami_release(self, pod: Mapping[str, Any], container: Mapping[str, Any], config: Mapping[str, Any], node: NodeContext) -> None:
        if is_soft(pod):
            if not node.simulated:
                shutil.rmtree(edits.host(config, edits.shmem_dir(pod, container)), ignore_errors=True)
            return
        vnpu.destroy(vnpu.container_key(pod, container), vnpu.ledger_for(node), NpuSmi.from_config(config))

    @hookimpl
    def hami_container_edits(
        self,
        devices: Sequence[GrantedDevice],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        config: Mapping[str, Any],
        node: NodeContext,
    ) -> ContainerEdits:
        plan = self._plan(devices, config)
        phy_ids = [int(found["phy_id"]) for _, _, found, _ in plan]
        if is_soft(pod):
            return edits.soft([d.grant for d in devices], phy_ids, pod, container, config, node.simulated)
        split = [p for p in plan if p[3]]
        if not split:
            return edits.whole(phy_ids)
        if config.get("vnpu_create", "npu-smi") == "runtime":
            return edits.runtime_vnpu(phy_ids[0], split[0][3])
        made = vnpu.ledger_for(node).get(vnpu.container_key(pod, container))
        if not made:
            raise BackendError(
                f"container {vnpu.container_key(pod, container)} has no vNPU: hami_prepare must create it before the container edits"
            )
        return edits.created_vnpus(made)


plugin = AscendBackend(INFO)
