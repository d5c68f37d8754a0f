"""Value types shared by every layer: frozen, validated at construction, never loose dicts.

Units: memory in MiB; cores in percent of one device (a device with core scaling 2 offers 200);
``vendor`` is the HAMi vendor key of a device kind (``ACME``, ``ACME-X2`` …: one per chip family).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import attrs

from hami.errors import ValidationError
from hami.k8snames import is_annotation_key, is_extended_resource_name

MAX_REQUEST_CORES = 100
"""A container asks for at most one whole device's compute (every kind's cores resource, as in HAMi)."""

Encoding = Literal["json", "csv"]

ALLOCATING_SUFFIX = "-devices-to-allocate"
ALLOCATED_SUFFIX = "-devices-allocated"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_CDI_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9][-a-zA-Z0-9_.]*=[a-zA-Z0-9_.:-]+$")


def _fail(owner: str, field: str, value: object, why: str) -> ValidationError:
    return ValidationError(f"{owner}.{field}={value!r}: {why}")


def frozen_map(value: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Mapping[str, Any]:
    """A read-only copy, so a value object cannot be changed through a dict it was given."""
    return MappingProxyType(dict(value or {}))


# ``converter=tuple`` with a type. mypy's attrs plugin types ``__init__`` from the converter's parameter and
# cannot solve a generic one (``tuple`` itself, or ``Iterable[T] -> tuple[T, ...]``), so every documented call
# such as ``BackendInfo(kinds=[...])`` failed to type-check; one concrete converter per element type fixes it.


def frozen_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    """A tuple copy of any iterable, for fields whose element type the caller checks."""
    return tuple(value)


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _kinds(value: Iterable[DeviceKind]) -> tuple[DeviceKind, ...]:
    return tuple(value)


def _usages(value: Iterable[DeviceUsage]) -> tuple[DeviceUsage, ...]:
    return tuple(value)


def _mounts(value: Iterable[Mount]) -> tuple[Mount, ...]:
    return tuple(value)


def _device_nodes(value: Iterable[DeviceNode]) -> tuple[DeviceNode, ...]:
    return tuple(value)


def _physical(value: Iterable[PhysicalDevice]) -> tuple[PhysicalDevice, ...]:
    return tuple(value)


def _non_empty(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail(type(instance).__name__, attribute.name, value, "must be a non-empty string")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(type(instance).__name__, attribute.name, value, "must be an integer >= 0")


def _percent(instance: Any, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None and attribute.name == "memory_percentage":
        return
    _non_negative(instance, attribute, value)  # type: ignore[arg-type]
    if value > MAX_REQUEST_CORES:  # type: ignore[operator]
        raise _fail(type(instance).__name__, attribute.name, value, f"must be at most {MAX_REQUEST_CORES} (percent of one device)")


# ---------------------------------------------------------------- identity


@attrs.frozen
class ResourceNames:
    """The container resource names (``resources.limits`` keys) of one device kind."""

    count: str
    memory: str | None = None
    memory_percentage: str | None = None
    cores: str | None = None
    extra: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    """Other names the kind accepts (aliases, priority, …): the webhook routes pods that use them."""

    def __attrs_post_init__(self) -> None:
        for field_name, name in self.items():
            if not is_extended_resource_name(name):
                raise _fail("ResourceNames", field_name, name, "is not a valid extended resource name (vendor.com/name)")

    def items(self) -> list[tuple[str, str]]:
        named = [("count", self.count), ("memory", self.memory), ("memory_percentage", self.memory_percentage), ("cores", self.cores)]
        return [(k, v) for k, v in named if v is not None] + [("extra", v) for v in self.extra]

    def all(self) -> tuple[str, ...]:
        return tuple(v for _, v in self.items())


@attrs.frozen
class AnnotationKeys:
    """The node and pod annotations HAMi uses for one device kind (hami-compat.md)."""

    node_register: str
    handshake: str
    to_allocate: str
    allocated: str

    def __attrs_post_init__(self) -> None:
        for field_name in ("node_register", "handshake", "to_allocate", "allocated"):
            key = getattr(self, field_name)
            if not isinstance(key, str) or not is_annotation_key(key):
                raise _fail("AnnotationKeys", field_name, key, "is not a valid annotation key")
        # The suffixes let every component recognise allocation records without knowing the backend
        # (the signature covers all of them, whichever backends the verifier has installed).
        for field_name, suffix in (("to_allocate", ALLOCATING_SUFFIX), ("allocated", ALLOCATED_SUFFIX)):
            if not getattr(self, field_name).endswith(suffix):
                raise _fail("AnnotationKeys", field_name, getattr(self, field_name), f"must end with {suffix!r} (HAMi's naming)")

    @classmethod
    def hami(cls, node_register: str, handshake: str, allocation_prefix: str) -> AnnotationKeys:
        """HAMi's naming: ``<prefix>-devices-to-allocate`` and ``<prefix>-devices-allocated``."""
        return cls(node_register, handshake, f"{allocation_prefix}-devices-to-allocate", f"{allocation_prefix}-devices-allocated")


@attrs.frozen
class DeviceKind:
    """One schedulable kind of device: a vendor key with its resources, annotations and encoding."""

    vendor: str = attrs.field(validator=_non_empty)
    resources: ResourceNames
    annotations: AnnotationKeys
    node_encoding: Encoding = "json"
    type_selector: str | None = None
    """The pod annotation whose comma list restricts this kind's device types (HAMi's
    ``use-<device>type``): lets generic tools such as the simulator express a type constraint."""
    models: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    """Short model names this kind's devices go by in cluster traces (``A10``, ``T4`` …): how the
    simulator tells which installed kind a trace's devices are, without the core naming a vendor."""

    def __attrs_post_init__(self) -> None:
        if self.node_encoding not in ("json", "csv"):
            raise _fail("DeviceKind", "node_encoding", self.node_encoding, "must be 'json' or 'csv'")
        if self.type_selector is not None and not is_annotation_key(self.type_selector):
            raise _fail("DeviceKind", "type_selector", self.type_selector, "is not a valid annotation key")
        for model in self.models:
            if not isinstance(model, str) or not model.strip():
                raise _fail("DeviceKind", "models", model, "must be non-empty strings")
        if any(c in self.vendor for c in ",:;"):
            raise _fail("DeviceKind", "vendor", self.vendor, "must not contain ',', ':' or ';' (it is written into allocation annotations)")


@attrs.frozen
class BackendInfo:
    """What a backend tells the core about itself (``hami_backend``)."""

    name: str = attrs.field(validator=_non_empty)
    kinds: tuple[DeviceKind, ...] = attrs.field(converter=_kinds)
    description: str = ""
    default_config: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    host_paths: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    """Host path prefixes its container edits may mount or expose; anything else is a contract breach."""
    pod_annotations: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    """Pod annotation keys its ``hami_allocation_annotations`` writes (a trailing ``*`` matches any
    rest of the key): the admission webhook lets only hami's components set or change them (they say
    what the pod holds), and writing an undeclared key is a contract breach."""

    def __attrs_post_init__(self) -> None:
        if not self.kinds:
            raise _fail("BackendInfo", "kinds", self.kinds, "a backend must declare at least one device kind")
        for key in self.pod_annotations:
            if not is_annotation_key(key[:-1] + "x" if key.endswith("*") else key):  # a prefix: valid once completed
                raise _fail("BackendInfo", "pod_annotations", key, "must be an annotation key, or a key prefix ending in '*'")
        vendors = [k.vendor for k in self.kinds]
        if len(set(vendors)) != len(vendors):
            raise _fail("BackendInfo", "kinds", vendors, "vendor keys must be unique")
        for path in self.host_paths:
            if not path.startswith("/"):
                raise _fail("BackendInfo", "host_paths", path, "must be an absolute path")

    @property
    def vendors(self) -> tuple[str, ...]:
        return tuple(k.vendor for k in self.kinds)

    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(name for k in self.kinds for name in k.resources.all())

    def writes_pod_annotation(self, key: str) -> bool:
        """Whether ``key`` is one of :attr:`pod_annotations` (or under one of its ``*`` prefixes)."""
        return annotation_declared(key, self.pod_annotations)


def annotation_declared(key: str, declared: Iterable[str]) -> bool:
    """Whether ``key`` is among ``declared`` keys, a trailing ``*`` matching any rest of the key."""
    return any(key == d or (d.endswith("*") and key.startswith(d[:-1])) for d in declared)


@attrs.frozen
class PolicyInfo:
    """What a scoring policy says about itself, validated (:attr:`hami.plugin.policy.Policy.info`):
    the manager checks every policy offered through ``hami_policies`` with it."""

    name: str = attrs.field(validator=_non_empty)
    level: Literal["node", "device"]
    description: str = ""
    per_pod: bool = True
    """False when a node score depends only on the node's usage, not on the pod: the scheduler then
    caches it until the node changes, which keeps filtering large clusters fast."""

    def __attrs_post_init__(self) -> None:
        if self.level not in ("node", "device"):
            raise _fail("PolicyInfo", "level", self.level, "must be 'node' or 'device'")


# ---------------------------------------------------------------- devices


@attrs.frozen
class PhysicalDevice:
    """A device as discovery found it on the node, before any splitting."""

    id: str = attrs.field(validator=_non_empty)
    vendor: str = attrs.field(validator=_non_empty)
    type: str = attrs.field(validator=_non_empty)
    memory: int = attrs.field(validator=_non_negative)
    index: int = attrs.field(default=0, validator=_non_negative)
    cores: int = attrs.field(default=100, validator=_non_negative)
    """Compute in percent of this device (100 = the whole device)."""
    numa: int = attrs.field(default=0, validator=_non_negative)
    healthy: bool = True
    attributes: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    """Vendor facts the core does not interpret: PCI bus id, compute capability, link peers, …"""
    advertised: bool = True
    """False: the vendor tool showed the device but it cannot be offered (``reason`` says why, e.g. its
    memory is unknown). The agent lists and logs it, and never splits, registers or grants it."""
    reason: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.advertised and not self.reason.strip():
            raise _fail("PhysicalDevice", "reason", self.reason, "a device that is not advertised needs the reason")


@attrs.frozen
class SchedulableDevice:
    """The schedulable capacity of one device: one entry of a node's device annotation."""

    id: str = attrs.field(validator=_non_empty)
    vendor: str = attrs.field(validator=_non_empty)
    type: str
    count: int = attrs.field(validator=_non_negative)
    """Share slots: how many containers may use the device at once."""
    memory: int = attrs.field(validator=_non_negative)
    """Schedulable MiB, after memory scaling."""
    cores: int = attrs.field(default=100, validator=_non_negative)
    index: int = attrs.field(default=0, validator=_non_negative)
    numa: int = attrs.field(default=0, validator=_non_negative)
    mode: str = ""
    healthy: bool = True
    partitions: tuple[Any, ...] = attrs.field(default=(), converter=frozen_tuple, hash=False)
    """The hardware partition layouts the device offers, as the backend describes them (JSON
    values): the core only carries them through the node annotation (HAMi's key for them, see
    :mod:`hami.wire.codec`)."""


@attrs.frozen
class Grant:
    """One device given to one container: HAMi's ``<uuid>,<vendor>,<usedmem>,<usedcores>``."""

    id: str = attrs.field(validator=_non_empty)
    vendor: str = attrs.field(validator=_non_empty)
    memory: int = attrs.field(validator=_non_negative)
    cores: int = attrs.field(default=0, validator=_percent)


@attrs.frozen
class GrantedDevice:
    """A grant with the device behind it, as the node agent discovered and split it: what the
    runtime hooks need (the physical index and facts, the split's mode) without a cache of their own."""

    grant: Grant
    device: PhysicalDevice
    split: SchedulableDevice

    def __attrs_post_init__(self) -> None:
        if not (self.grant.id == self.device.id == self.split.id):
            raise _fail("GrantedDevice", "device", self.device.id, f"is not the granted device {self.grant.id!r}")

    @property
    def id(self) -> str:
        return self.grant.id

    @property
    def index(self) -> int:
        return self.device.index

    @property
    def whole(self) -> bool:
        """The grant takes all of the device's compute and memory (no share to enforce)."""
        return self.grant.cores >= 100 and self.grant.memory >= self.device.memory


@attrs.frozen
class NodeContext:
    """Where a node-side hook runs: this node, whether its devices are simulated (an inventory,
    not hardware: no vendor tools, no host files), the backend's config, and a directory the
    backend may keep per-node state in (``<state root>/<backend>``; create it when first needed)."""

    name: str = attrs.field(validator=_non_empty)
    simulated: bool = False
    config: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    state_dir: Path = attrs.field(default=Path("/var/lib/hami"), converter=Path)


@attrs.frozen
class DeviceUsage:
    """A device with what is already granted on it; derived state, so over-commit is representable."""

    device: SchedulableDevice
    used: int = attrs.field(default=0, validator=_non_negative)
    memory: int = attrs.field(default=0, validator=_non_negative)
    cores: int = attrs.field(default=0, validator=_non_negative)

    @property
    def free_slots(self) -> int:
        return max(self.device.count - self.used, 0)

    @property
    def free_memory(self) -> int:
        return max(self.device.memory - self.memory, 0)

    @property
    def free_cores(self) -> int:
        return max(self.device.cores - self.cores, 0)

    def add(self, grant: Grant) -> DeviceUsage:
        """The usage after ``grant`` lands on this device."""
        if grant.id != self.device.id:
            raise ValidationError(f"Grant.id={grant.id!r} does not match device {self.device.id!r}")
        return attrs.evolve(self, used=self.used + 1, memory=self.memory + grant.memory, cores=self.cores + grant.cores)

    def remove(self, grant: Grant) -> DeviceUsage:
        """The usage after ``grant`` is released (clamped at zero: derived state must not go negative)."""
        if grant.id != self.device.id:
            raise ValidationError(f"Grant.id={grant.id!r} does not match device {self.device.id!r}")
        return attrs.evolve(
            self,
            used=max(self.used - 1, 0),
            memory=max(self.memory - grant.memory, 0),
            cores=max(self.cores - grant.cores, 0),
        )


@attrs.frozen
class NodeUsage:
    """A node's devices of every kind with their usage: what node scoring looks at."""

    name: str = attrs.field(validator=_non_empty)
    devices: tuple[DeviceUsage, ...] = attrs.field(default=(), converter=_usages)


@attrs.frozen
class NodeAnnotations:
    """Extra node annotations a backend publishes beside its device list (link pair scores, rings)."""

    values: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)

    def __attrs_post_init__(self) -> None:
        for key, value in self.values.items():
            if not isinstance(key, str) or not is_annotation_key(key) or not isinstance(value, str):
                raise _fail("NodeAnnotations", "values", key, "must map valid annotation keys to strings")


@attrs.frozen
class HealthEvent:
    """A device became healthy or unhealthy (``hami_device_health``)."""

    device_id: str = attrs.field(validator=_non_empty)
    healthy: bool
    reason: str = ""


@attrs.frozen
class Enforcement:
    """Whether the mechanism that enforces a share's limits is really there (``hami_enforcement``).

    One per vendor key and share mode (``mode`` as the split writes it; ``""``: every mode of the
    vendor), optionally narrowed to some devices (``device_ids``; empty: all of them). A device whose
    mechanism is not ``ready`` is offered whole only, unless the operator opted into advisory limits."""

    vendor: str = attrs.field(validator=_non_empty)
    mode: str = ""
    ready: bool = True
    mechanism: str = ""
    """What enforces the limits, as an operator would look for it (a library and its version, a daemon's pipe)."""
    reason: str = ""
    """Why it is not ready, naming what to install or switch on (required when not ``ready``)."""
    device_ids: tuple[str, ...] = attrs.field(default=(), converter=_strs)

    def __attrs_post_init__(self) -> None:
        if not self.ready and not self.reason.strip():
            raise _fail("Enforcement", "reason", self.reason, "a mechanism that is not ready needs the reason")
        if any(c in self.mode for c in ",;:") or self.mode != self.mode.strip():
            raise _fail("Enforcement", "mode", self.mode, "must be a plain mode name")

    def covers(self, device: SchedulableDevice) -> bool:
        """Whether this report is about ``device`` (its vendor, its mode, its id when narrowed)."""
        return device.vendor == self.vendor and self.mode in ("", device.mode) and (not self.device_ids or device.id in self.device_ids)


# ---------------------------------------------------------------- usage (what devices really do)


def _ratio(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (0.0 <= value <= 1.0):
        raise _fail(type(instance).__name__, attribute.name, value, "must be a ratio between 0 and 1 (or None: not reported)")


def _optional_non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value >= 0:
        raise _fail(type(instance).__name__, attribute.name, value, "must be >= 0 (or None: not reported)")


@attrs.frozen
class ContainerShare:
    """A running container holding devices on this node, as the agent knows it from the pod's
    allocation: what ``hami_sample_usage`` measures per container (HAMi-core's region, a vendor tool)."""

    namespace: str = attrs.field(validator=_non_empty)
    pod: str = attrs.field(validator=_non_empty)
    pod_uid: str = attrs.field(validator=_non_empty)
    container: str = attrs.field(validator=_non_empty)
    grants: tuple[Grant, ...] = attrs.field(default=(), converter=frozen_tuple)
    """This container's grants of the backend's kinds, in the order the runtime numbers them."""
    limits: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    """The container's resource limits as the pod states them (a backend reads its own, e.g. a priority)."""


@attrs.frozen
class DeviceLoad:
    """What one physical device is doing now, host-wide (the driver's figures). None: not reported."""

    device_id: str = attrs.field(validator=_non_empty)
    memory_used: int = attrs.field(validator=_non_negative)
    """Bytes in use on the device, every process included."""
    memory_total: int | None = attrs.field(default=None, validator=_optional_non_negative)
    utilization: float | None = attrs.field(default=None, validator=_ratio)
    """Compute busy ratio over the driver's last sample period (0..1)."""
    memory_utilization: float | None = attrs.field(default=None, validator=_ratio)
    power_watts: float | None = attrs.field(default=None, validator=_optional_non_negative)
    temperature_celsius: float | None = None


@attrs.frozen
class ShareLoad:
    """What one container does with one of its granted devices (``vdevice_index`` = its position
    in the container's grants, as HAMi-core numbers them). None: the vendor does not report it."""

    device_id: str = attrs.field(validator=_non_empty)
    namespace: str = attrs.field(validator=_non_empty)
    pod: str = attrs.field(validator=_non_empty)
    container: str = attrs.field(validator=_non_empty)
    vdevice_index: int = attrs.field(default=0, validator=_non_negative)
    memory_used: int = attrs.field(default=0, validator=_non_negative)
    """Bytes the container has allocated on the device."""
    memory_limit: int | None = attrs.field(default=None, validator=_optional_non_negative)
    """Bytes the enforcement layer holds it to (None: no limit known)."""
    utilization: float | None = attrs.field(default=None, validator=_ratio)
    last_kernel_seconds: float | None = attrs.field(default=None, validator=_optional_non_negative)
    """Seconds since the container last launched work on the device."""
    memory_context: int | None = attrs.field(default=None, validator=_optional_non_negative)
    memory_module: int | None = attrs.field(default=None, validator=_optional_non_negative)
    memory_buffer: int | None = attrs.field(default=None, validator=_optional_non_negative)
    throttled: bool = False
    """The backend is holding the container back now (priority feedback)."""


def _loads(value: Iterable[DeviceLoad]) -> tuple[DeviceLoad, ...]:
    return tuple(value)


def _share_loads(value: Iterable[ShareLoad]) -> tuple[ShareLoad, ...]:
    return tuple(value)


@attrs.frozen
class UsageReport:
    """One backend's sample (``hami_sample_usage``): host figures per device, and per container share."""

    devices: tuple[DeviceLoad, ...] = attrs.field(default=(), converter=_loads)
    shares: tuple[ShareLoad, ...] = attrs.field(default=(), converter=_share_loads)
    skipped: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    """What could not be read this time and why (a truncated or foreign file): logged by the agent."""


# ---------------------------------------------------------------- requests


@attrs.frozen
class DeviceRequest:
    """What one container asks of one device kind.

    ``memory`` is MiB per device (0 = not given); ``memory_percentage`` is the share of each device's
    memory (None = not given); the two are exclusive, as in HAMi.
    """

    vendor: str = attrs.field(validator=_non_empty)
    count: int = attrs.field(default=1, validator=_non_negative)
    memory: int = attrs.field(default=0, validator=_non_negative)
    memory_percentage: int | None = attrs.field(default=None, validator=_percent)
    cores: int = attrs.field(default=0, validator=_percent)
    attributes: Mapping[str, Any] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    """Vendor detail the core carries but does not interpret (a template name, a partition profile…)."""
    single_numa: bool = False
    """All of this request's devices must come from one NUMA node: the backend sets it (from a pod
    annotation, say), the core's fit honours it."""

    def __attrs_post_init__(self) -> None:
        if self.count < 1:
            raise _fail("DeviceRequest", "count", self.count, "a request needs at least one device")
        if self.memory and self.memory_percentage is not None:
            raise _fail(
                "DeviceRequest",
                "memory_percentage",
                self.memory_percentage,
                f"memory ({self.memory} MiB) and memory percentage are exclusive",
            )

    @property
    def exclusive(self) -> bool:
        """100 % of the cores only lands on an unused device."""
        return self.cores >= MAX_REQUEST_CORES

    def memory_on(self, device: SchedulableDevice) -> int:
        """MiB this request needs on ``device`` (a percentage resolves against its capacity)."""
        if self.memory:
            return self.memory
        percentage = 100 if self.memory_percentage is None else self.memory_percentage
        return device.memory * percentage // 100


# ---------------------------------------------------------------- container edits


def _absolute(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise _fail(type(instance).__name__, attribute.name, value, "must be an absolute path")


@attrs.frozen
class Mount:
    container_path: str = attrs.field(validator=_absolute)
    host_path: str = attrs.field(validator=_absolute)
    read_only: bool = False


@attrs.frozen
class DeviceNode:
    container_path: str = attrs.field(validator=_absolute)
    host_path: str = attrs.field(validator=_absolute)
    permissions: str = "rw"

    def __attrs_post_init__(self) -> None:
        if not self.permissions or set(self.permissions) - set("rwm"):
            raise _fail("DeviceNode", "permissions", self.permissions, "must be a non-empty combination of 'r', 'w', 'm'")


@attrs.frozen
class PartitionInstance:
    """The hardware partition instance one granted device gave the container (a backend that hands
    out partitions says which, so the agent records it on the pod in HAMi's format and the scheduler
    and agent export it: :mod:`hami.wire.partitions`).

    ``device_index`` is the grant's position in the container's grants; ``device`` the parent
    device's id; ``placement_start``/``placement_size`` where the partition sits on the device (in
    the vendor's slices); ``uuid``, ``instance_id`` and ``compute_instance_id`` the realized
    instance's identity (``None`` where the driver cannot tell).
    """

    device_index: int
    device: str
    profile: str
    placement_start: int
    placement_size: int
    uuid: str = ""
    instance_id: int | None = None
    compute_instance_id: int | None = None

    def __attrs_post_init__(self) -> None:
        for name in ("device_index", "placement_start", "placement_size", "instance_id", "compute_instance_id"):
            value = getattr(self, name)
            if value is None and name in ("instance_id", "compute_instance_id"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise _fail("PartitionInstance", name, value, "must be an integer >= 0")
        if self.placement_size == 0:
            raise _fail("PartitionInstance", "placement_size", 0, "must be at least 1 slice")
        for name in ("device", "profile"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise _fail("PartitionInstance", name, getattr(self, name), "must be a non-empty string")
        if not isinstance(self.uuid, str):
            raise _fail("PartitionInstance", "uuid", self.uuid, "must be a string")

    @property
    def realized(self) -> bool:
        """The instance's full identity is known (HAMi's ``RuntimeReady``)."""
        return bool(self.uuid) and self.instance_id is not None and self.compute_instance_id is not None


def _partitions(value: Iterable[PartitionInstance]) -> tuple[PartitionInstance, ...]:
    return tuple(value)


@attrs.frozen
class ContainerEdits:
    """What a container gets beyond its spec: the kubelet ``ContainerAllocateResponse`` in our terms,
    and the partition instances it was handed (recorded on the pod, not sent to kubelet)."""

    env: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    mounts: tuple[Mount, ...] = attrs.field(default=(), converter=_mounts)
    devices: tuple[DeviceNode, ...] = attrs.field(default=(), converter=_device_nodes)
    cdi_devices: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    partitions: tuple[PartitionInstance, ...] = attrs.field(default=(), converter=_partitions)

    def __attrs_post_init__(self) -> None:
        for partition in self.partitions:
            if not isinstance(partition, PartitionInstance):
                raise _fail("ContainerEdits", "partitions", partition, "must hold PartitionInstance values")
        for name, value in self.env.items():
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                raise _fail("ContainerEdits", "env", name, "is not a valid environment variable name")
            if not isinstance(value, str):
                raise _fail("ContainerEdits", f"env[{name}]", value, "values must be strings")
        for name in self.cdi_devices:
            if not isinstance(name, str) or not _CDI_NAME.match(name):
                raise _fail("ContainerEdits", "cdi_devices", name, "is not a fully qualified CDI name (vendor.com/class=name)")
        for key, value in self.annotations.items():
            if not isinstance(key, str) or not is_annotation_key(key) or not isinstance(value, str):
                raise _fail("ContainerEdits", "annotations", key, "must map valid annotation keys to strings")

    def merge(self, other: ContainerEdits) -> ContainerEdits:
        """Both sets of edits; a variable or annotation set to two different values is a conflict."""
        for mine, theirs, what in ((self.env, other.env, "env"), (self.annotations, other.annotations, "annotation")):
            for key in mine.keys() & theirs.keys():
                if mine[key] != theirs[key]:
                    raise ValidationError(f"ContainerEdits {what} {key!r} set twice: {mine[key]!r} and {theirs[key]!r}")

        def union(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
            return a + tuple(x for x in b if x not in a)

        return ContainerEdits(
            env={**self.env, **other.env},
            mounts=union(self.mounts, other.mounts),
            devices=union(self.devices, other.devices),
            cdi_devices=union(self.cdi_devices, other.cdi_devices),
            annotations={**self.annotations, **other.annotations},
            partitions=union(self.partitions, other.partitions),
        )

    def host_paths(self) -> tuple[str, ...]:
        return tuple(m.host_path for m in self.mounts) + tuple(d.host_path for d in self.devices)


@attrs.frozen
class ContainerPatch:
    """Admission defaults for one container (``hami_mutate_container``): limits to set, warnings to show,
    and resource names to remove (an older alias rewritten to the name the device plugin advertises,
    so that kubelet hands the container to that plugin)."""

    limits: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    remove: tuple[str, ...] = attrs.field(default=(), converter=_strs)

    def __attrs_post_init__(self) -> None:
        for name in self.remove:
            if not is_extended_resource_name(name) or name in self.limits:
                raise _fail("ContainerPatch", "remove", name, "must be an extended resource name that limits does not set")
        for name, value in self.limits.items():
            if not is_extended_resource_name(name):
                raise _fail("ContainerPatch", "limits", name, "is not a valid extended resource name")
            if not isinstance(value, str) or not value:
                raise _fail("ContainerPatch", f"limits[{name}]", value, "must be a quantity string")


# ---------------------------------------------------------------- inventory


@attrs.frozen
class NodeInventory:
    """A node's shape for simulated discovery, the sandbox and the simulator."""

    name: str = attrs.field(validator=_non_empty)
    devices: tuple[PhysicalDevice, ...] = attrs.field(default=(), converter=_physical)
    cpu_milli: int = attrs.field(default=0, validator=_non_negative)
    memory: int = attrs.field(default=0, validator=_non_negative)
    labels: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)

    def __attrs_post_init__(self) -> None:
        ids = [d.id for d in self.devices]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise _fail("NodeInventory", "devices", duplicates, f"device ids repeat on node {self.name!r}")
