"""AWS Neuron devices: whole devices (``aws.amazon.com/neuron``) or NeuronCores (``aws.amazon.com/neuroncore``).

Read from upstream pkg/device/awsneuron/device.go (v2.10.0): device ids ``<node>-AWSNeuron-<i>``;
a core request up to a device's cores takes one device, a larger one must fill whole devices
(``cores_per_device``, HAMi's 2 by default); several devices must be contiguous indexes (any run
on ``inf*`` instances, else runs of 1/4/8/16 aligned to their size); the allocation writes
``AWS_NEURON_IDS``, ``NEURON_ALLOC_TIME``, ``NEURON_ALLOCATED``, ``NEURON_RESOURCE_TYPE`` and
``aws.amazon.com/predicate-node``. Cores are picked at Allocate, disjoint per device
(the SDK's ``RangeLedger``), and given as ``NEURON_RT_VISIBLE_CORES``.
"""

from __future__ import annotations

import logging
import time
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
    Grant,
    GrantedDevice,
    NodeAnnotations,
    NodeContext,
    PhysicalDevice,
    RangeLedger,
    RequestError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
    container_resources,
    hookimpl,
    owner_key,
    parse_count,
    run_tool,
    selectors,
    tool_devices,
    vendor_stack_enforcement,
)
from hami_awsneuron import neuronls

log = logging.getLogger(__name__)

VENDOR = "AWSNeuron"
CORE = "aws.amazon.com/neuroncore"
KIND = DeviceKind(
    vendor=VENDOR,
    resources=ResourceNames(count="aws.amazon.com/neuron", extra=(CORE,)),
    annotations=AnnotationKeys.hami("hami.io/node-aws-neuron-register", "hami.io/node-handshake-aws-neuron", "hami.io/aws-neuron"),
)
USE_UUID, NOUSE_UUID = "aws.amazon.com/use-neuron-uuid", "aws.amazon.com/nouse-neuron-uuid"
INSTANCE_ANNOTATION = "hami.io/node-aws-neuron-instance-type"
NEURONCORES = "neuroncores"
"""Request attribute: the NeuronCores asked for on one device (absent: whole devices)."""

INFO = BackendInfo(
    name="awsneuron",
    kinds=[KIND],
    description="AWS Neuron devices, whole or by NeuronCore (the Neuron runtime owns each core exclusively)",
    default_config={"cores_per_device": 2, "instance_type": "", "neuron_ls": "neuron-ls", "neuron_ls_timeout": 10.0},
    host_paths=("/dev",),
    pod_annotations=("NEURON_ALLOC_TIME", "NEURON_ALLOCATED", "aws.amazon.com/predicate-node", "AWS_NEURON_IDS", "NEURON_RESOURCE_TYPE"),
)


def discover(config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:
    def read() -> list[PhysicalDevice]:
        devices, instance = neuronls.parse(
            run_tool([str(config["neuron_ls"])], float(config["neuron_ls_timeout"]), missing_hint="is the Neuron driver installed?")
        )
        return [
            PhysicalDevice(
                id=f"{node.name}-{VENDOR}-{d.index}",
                vendor=VENDOR,
                type=f"{VENDOR} {instance}".strip(),
                memory=d.memory_mib,
                index=d.index,
                advertised=d.cores > 0,
                reason="" if d.cores > 0 else "NeuronCore count unknown: neuron-ls printed no NEURON CORES for this device",
                attributes={
                    "cores": d.cores,
                    "connected_to": list(d.connected),
                    "bdf": d.bdf,
                    "instance_type": instance or str(config.get("instance_type", "")),
                },
            )
            for d in devices
        ]

    return tool_devices(node, config, [VENDOR], read, tool="neuron-ls", log=log)


def contiguous(candidates: Sequence[DeviceUsage], count: int, instance_type: str) -> list[str]:
    """HAMi's graphSelect: ``count`` free devices with consecutive indexes, aligned unless on inf*."""
    free = {c.device.index: c.device.id for c in candidates if c.used == 0 and c.device.healthy}
    inf = "inf" in instance_type.lower()
    if not inf and count not in (1, 4, 8, 16):
        return []
    starts = sorted(free) if inf else range(0, max(free, default=-1) + 1, count)
    for start in starts:
        if all(start + k in free for k in range(count)):
            return [free[start + k] for k in range(count)]
    return []


class NeuronBackend(StandardBackend):
    @hookimpl
    def hami_enforcement(self, devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
        """A NeuronCore is owned by one process (the Neuron runtime), so a core share is whole cores:
        ready when neuron-ls (the Neuron tools discovery reads) is on the node."""
        return vendor_stack_enforcement(
            devices,
            VENDOR,
            node,
            mechanism="the Neuron runtime (one process per NeuronCore)",
            tool=str(config["neuron_ls"]),
            install="install the Neuron driver and tools (aws-neuronx-dkms, aws-neuronx-tools)",
        )

    @hookimpl
    def hami_discover_devices(self, config: Mapping[str, Any], node: NodeContext) -> list[PhysicalDevice]:  # type: ignore[override]  # pluggy passes hook arguments by name
        return discover(config, node)

    @hookimpl
    def hami_split_device(self, device: PhysicalDevice, config: Mapping[str, Any]) -> SchedulableDevice:
        """One slot per NeuronCore; a core share takes the same share of the device's memory."""
        cores = int(device.attributes.get("cores") or config["cores_per_device"])
        return SchedulableDevice(
            id=device.id,
            vendor=VENDOR,
            type=device.type,
            count=cores,
            memory=device.memory,
            cores=100,
            index=device.index,
            healthy=device.healthy,
        )

    @hookimpl
    def hami_node_annotations(self, physical: Sequence[PhysicalDevice], config: Mapping[str, Any]) -> NodeAnnotations | None:
        instance = next(
            (str(d.attributes.get("instance_type")) for d in physical if d.attributes.get("instance_type")),
            str(config.get("instance_type", "")),
        )
        return NodeAnnotations({INSTANCE_ANNOTATION: instance}) if instance else None

    @hookimpl
    def hami_container_requests(
        self, container: Mapping[str, Any], pod: Mapping[str, Any], config: Mapping[str, Any]
    ) -> list[DeviceRequest]:
        resources = container_resources(container)
        where = f"container {container.get('name')!r}"
        (kind,) = self.kinds(config)  # under the operator's resource_names
        count_name, core_name = kind.resources.count, kind.resources.extra[KIND.resources.extra.index(CORE)]
        try:
            if count_name in resources:
                count = parse_count(resources[count_name], count_name)
                return [DeviceRequest(VENDOR, count=count, cores=100)] if count > 0 else []
            if core_name not in resources:
                return []
            cores = parse_count(resources[core_name], core_name)
        except Exception as exc:
            raise RequestError(f"{where}: {exc}") from None
        per_device = int(config["cores_per_device"])
        if cores <= 0:
            raise RequestError(f"{where}: {core_name}={cores} must be greater than 0")
        if cores <= per_device:
            return [DeviceRequest(VENDOR, count=1, attributes={NEURONCORES: cores})]
        if cores % per_device:
            raise RequestError(f"{where}: {core_name} must be 1 or a multiple of {per_device}, got {cores}")
        return [DeviceRequest(VENDOR, count=cores // per_device, cores=100)]

    @hookimpl
    def hami_mutate_container(self) -> None:  # type: ignore[override]  # pluggy passes only the arguments named
        """No admission defaults: each resource stands alone (HAMi's MutateAdmission only validates)."""
        return None

    @hookimpl
    def hami_normalize_request(self, request: DeviceRequest, device: DeviceUsage) -> DeviceRequest | None:
        cores = request.attributes.get(NEURONCORES)
        if not cores:
            return None
        share = min(100, int(cores) * 100 // max(device.device.count, 1))
        return attrs.evolve(request, cores=share, memory_percentage=share)

    @hookimpl
    def hami_device_fits(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> str | None:
        if int(request.attributes.get(NEURONCORES, 0)) > device.device.count:
            return "CardInsufficientCore"
        return selectors.pod_uuid_reason(pod, device.device.id, (USE_UUID, NOUSE_UUID))

    @hookimpl
    def hami_select_devices(
        self, request: DeviceRequest, candidates: Sequence[DeviceUsage], node_annotations: Mapping[str, str]
    ) -> list[str]:
        return contiguous(candidates, request.count, node_annotations.get(INSTANCE_ANNOTATION, ""))

    @hookimpl
    def hami_allocation_annotations(
        self, containers: Sequence[Sequence[Grant]], devices: Mapping[str, SchedulableDevice], config: Mapping[str, Any]
    ) -> dict[str, str] | None:
        """HAMi's PatchAnnotations. ``NEURON_RESOURCE_TYPE`` is the core resource under the operator's
        ``resource_names``: upstream writes ``dev.resourceCoreName``, the configured ``resourceCoreName``."""
        grants = [g for c in containers for g in c if g.id in devices]
        if not grants:
            return None
        node = grants[0].id.rsplit(f"-{VENDOR}-", 1)[0]
        annotations = {"NEURON_ALLOC_TIME": str(time.time_ns()), "NEURON_ALLOCATED": "false", "aws.amazon.com/predicate-node": node}
        whole = [g for g in grants if g.cores >= 100]
        if whole:
            annotations["AWS_NEURON_IDS"] = ",".join(str(devices[g.id].index) for g in whole)
        if len(whole) < len(grants):
            (kind,) = self.kinds(config)  # core ids are chosen by the agent at Allocate
            annotations["NEURON_RESOURCE_TYPE"] = kind.resources.extra[KIND.resources.extra.index(CORE)]
        return annotations

    @hookimpl
    def hami_container_edits(
        self, devices: Sequence[GrantedDevice], pod: Mapping[str, Any], container: Mapping[str, Any], node: NodeContext
    ) -> ContainerEdits:
        nodes = [DeviceNode(f"/dev/neuron{d.index}", f"/dev/neuron{d.index}") for d in devices]
        if all(d.grant.cores >= 100 for d in devices):
            return ContainerEdits(env={"AWS_NEURON_VISIBLE_DEVICES": ",".join(str(d.index) for d in devices)}, devices=nodes)
        ledger = RangeLedger(node.state_dir / "hami-awsneuron" / "cores.json")
        ids = []
        for d in devices:
            per_device = d.split.count
            wanted = -(-d.grant.cores * per_device // 100)  # the cores behind the share, rounded up
            start, size = ledger.claim(d.id, owner_key(pod, container), wanted, per_device)
            ids += [d.index * per_device + start + k for k in range(size)]
        return ContainerEdits(env={"NEURON_RT_VISIBLE_CORES": ",".join(str(i) for i in ids)}, devices=nodes)

    @hookimpl
    def hami_release(self, pod: Mapping[str, Any], container: Mapping[str, Any], node: NodeContext) -> None:
        RangeLedger(node.state_dir / "hami-awsneuron" / "cores.json").release(owner_key(pod, container))


plugin = NeuronBackend(INFO)
