"""Every hook of the backend contract, grouped by the phase that calls it.

A backend is a module or object whose functions are marked with :data:`hami.hookimpl` and named
after these specs. It is installed with pip and found through the ``hami.backends`` entry-point
group; ``hami_backend`` is the only hook it must implement.

Dispatch. *Vendor hooks* (``vendor-dispatched`` below) reach only the backend that owns the device
kind in question, plus cross-cutting plugins that own no device kind (an audit logger, an extra
predicate); a backend never has to ask "is this device mine?". *Open hooks* reach every plugin and
their results are combined as documented. The typed facade in :mod:`hami.plugin.manager` does the
dispatch and checks every returned value against the types named here.

Data only flows one way: node (discover → split → annotation) → scheduler (requests → fit → score →
grants) → node agent (edits, prepare). Hooks receive frozen :mod:`hami.plugin.model` values and Kubernetes
objects as plain JSON-shaped dicts (``pod["metadata"]["annotations"]``); they must not mutate them.

``config`` is always the configuration of the backend the call is for: its ``default_config``
overlaid with what the operator set (``BackendManager.configure``). Open hooks are called once per
backend with that backend's config, then once for the cross-cutting plugins with an empty one.

Node-side hooks also get ``node`` (:class:`~hami.plugin.model.NodeContext`): the node's name,
whether its devices are simulated, the config, a per-node state directory. The runtime hooks get
``devices`` (:class:`~hami.plugin.model.GrantedDevice`): each grant with the physical device and
split the agent discovered, so a backend keeps no discovery cache and guesses no node name.
Arguments are additive: pluggy passes an implementation only the arguments it names.

Errors. The manager names the backend and the hook of every failure: a :class:`hami.errors.BackendError`
a hook raises reaches callers as :class:`~hami.errors.BackendRefused` (the reason is shown to the
user), any other exception as :class:`~hami.errors.BackendCrashed`, a wrong return value as
:class:`~hami.errors.ContractError`; the original is the ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hami.plugin import hookspec
from hami.plugin.model import (
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    ContainerShare,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    Grant,
    GrantedDevice,
    HealthEvent,
    NodeAnnotations,
    NodeContext,
    PhysicalDevice,
    SchedulableDevice,
    UsageReport,
)
from hami.plugin.policy import Policy

Pod = Mapping[str, Any]
Container = Mapping[str, Any]
Config = Mapping[str, Any]

# ---------------------------------------------------------------- identity


@hookspec
def hami_backend() -> BackendInfo:
    """Say who this backend is: its name, the device kinds (vendor keys) it owns, their resource
    names and annotation keys, and its default configuration.

    Called once per plugin when the manager loads it. Required of a backend; a plugin without it
    is a cross-cutting plugin that owns no device kind.

    Example::

        @hookimpl
        def hami_backend():
            return BackendInfo(
                name="acme",
                kinds=[DeviceKind(
                    vendor="ACME",
                    resources=ResourceNames(count="acme.com/xpu", memory="acme.com/xpumem"),
                    annotations=AnnotationKeys.hami("hami.io/node-acme-register",
                                                    "hami.io/node-handshake-acme", "hami.io/acme"),
                )],
                default_config={"split_count": 4},
            )
    """


# ---------------------------------------------------------------- discovery (node agent)


@hookspec
def hami_discover_devices(config: Config, node_name: str, node: NodeContext) -> Sequence[PhysicalDevice]:
    """Probe this node's hardware and return every device of this backend's kinds.

    Called by the node agent at start and on every re-registration (30 s), once per backend
    (backend-dispatched). ``config`` is the backend's ``default_config`` overlaid with the
    operator's. No hardware or no driver is not an error: return ``[]`` and log why. Import
    vendor SDKs here, lazily, so the backend loads on machines without them. When
    ``node.simulated``, read the inventory (``hami.sdk.inventory_devices``) and touch no hardware.
    A device the vendor tool shows but the backend cannot offer (memory unknown, unsupported chip)
    is returned with ``advertised=False`` and a ``reason`` the operator can act on: ``hami devices``
    lists it and the agent logs it once, instead of it silently vanishing.

    Example::

        @hookimpl
        def hami_discover_devices(config, node_name, node):
            if node.simulated:
                return inventory_devices(config, node_name, ["ACME"])
            return [PhysicalDevice(id=u, vendor="ACME", type="ACME X1", memory=16384, index=i)
                    for i, u in enumerate(acme_sdk.list_uuids())]
    """


@hookspec
def hami_device_health(devices: Sequence[PhysicalDevice], config: Config, node: NodeContext) -> Sequence[HealthEvent]:
    """Report health changes of ``devices`` since the last call (XIDs, fault codes, vanished cards).

    Called by the node agent every few seconds, once per backend (backend-dispatched) with that
    backend's devices. Return only changes; a device that recovers gets ``healthy=True``.
    Simulated devices (``node.simulated``) have no hardware to ask: return ``[]``.

    Example::

        @hookimpl
        def hami_device_health(devices, config, node):
            if node.simulated:
                return []
            return [HealthEvent(d.id, healthy=False, reason=f"fault code {c}")
                    for d in devices if (c := acme_sdk.fault_code(d.id))]
    """


@hookspec
def hami_sample_usage(
    devices: Sequence[PhysicalDevice], containers: Sequence[ContainerShare], config: Config, node: NodeContext
) -> UsageReport | None:
    """Measure what ``devices`` and the ``containers`` holding them are doing now: memory in use,
    compute utilization, power and temperature per device, and per container share what it uses
    of its grant (HAMi's device monitor reads the driver and HAMi-core's shared region for this).

    Called by the node agent's usage sampler every ``usage_interval`` (5 s by default), once per backend
    (backend-dispatched) with that backend's devices and the live containers granted them; scrapes
    of ``/metrics``, ``hami top`` and the dashboard only read the cached result, so this hook may
    read files or call a vendor library, but must not block for long. Return None when the vendor
    reports nothing; leave out what you cannot read and name it in ``UsageReport.skipped`` (a
    truncated or foreign file is a skip, never an exception). When ``node.simulated``, return
    plausible figures derived from the grants (the sandbox shows them) and touch no hardware.

    Example::

        @hookimpl
        def hami_sample_usage(devices, containers, config, node):
            loads = [DeviceLoad(d.id, memory_used=acme_sdk.used_bytes(d.index), utilization=acme_sdk.busy(d.index))
                     for d in devices]
            return UsageReport(devices=loads)
    """


@hookspec
def hami_enforcement(devices: Sequence[PhysicalDevice], config: Config, node: NodeContext) -> Sequence[Enforcement]:
    """Say whether what enforces this backend's share limits is really on this node: per vendor key
    and share mode, ready (and by what) or missing (and why, naming what to install or switch on).

    Called by the node agent after every discovery (start and each re-registration), once per backend
    (backend-dispatched) with its advertised devices. A device whose mode is reported not ready is
    offered whole only (one slot; the scheduler refuses partial requests on it naming the node and the
    reason) unless the backend's config sets ``advisory_limits: true``; a mode not reported at all is
    shown as unverified. Check cheaply (a file's header, a directory, a driver flag discovery already
    read); a broken check raises and the agent reports it like a failed discovery. When
    ``node.simulated``, touch no host: devices are enforced unless their inventory ``attributes`` say
    ``isolation_missing: <why>`` (:func:`hami.sdk.simulated_enforcement`).

    Example::

        @hookimpl
        def hami_enforcement(devices, config, node):
            if node.simulated:
                return simulated_enforcement(devices, "ACME", "partition")
            ok = Path("/sys/module/acme_vdev").is_dir()
            return [Enforcement("ACME", "partition", ready=ok, mechanism="acme_vdev kernel module",
                                reason="" if ok else "kernel module acme_vdev is not loaded (modprobe acme_vdev)")]
    """


# ---------------------------------------------------------------- slicing (node agent)


@hookspec(firstresult=True)
def hami_split_device(device: PhysicalDevice, config: Config, node: NodeContext) -> SchedulableDevice | None:
    """Turn a physical device into schedulable capacity: share slots, scaled memory and cores,
    the isolation mode, hardware partitions or templates.

    Vendor-dispatched, first non-None result wins. Return None to leave the decision to the next
    plugin; when nobody decides, the core offers the device whole (one slot, all its memory).
    ``node.name`` selects per-node settings (e.g. a node's own split count).

    Example::

        @hookimpl
        def hami_split_device(device, config, node):
            count = config.get("node_split", {}).get(node.name, config["split_count"])
            return SchedulableDevice(id=device.id, vendor=device.vendor, type=device.type,
                                     count=count, memory=device.memory,
                                     cores=100, index=device.index, numa=device.numa,
                                     healthy=device.healthy)
    """


@hookspec
def hami_node_annotations(
    devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice], config: Config
) -> NodeAnnotations | None:
    """Extra node annotations to publish beside the device list: what the scheduler needs to
    choose devices together (link pair scores, interconnect rings).

    Called by the node agent at every registration, once per backend (backend-dispatched) with that
    backend's split and physical devices. The keys must not be another backend's.

    Example::

        @hookimpl
        def hami_node_annotations(devices, physical, config):
            rings = {d.id: d.attributes.get("ring", "") for d in physical}
            return NodeAnnotations({"hami.io/node-acme-rings": json.dumps(rings)})
    """


# ---------------------------------------------------------------- scheduling (webhook, extender)


@hookspec
def hami_container_requests(container: Container, pod: Pod, config: Config) -> Sequence[DeviceRequest]:
    """Read one container's resource limits into device requests of this backend's kinds, with
    the vendor's defaults applied (HAMi: memory only → one device; count only → 100 % memory).

    Open hook: called on every plugin (each with its own config); the results are concatenated,
    at most one request per vendor key. Return ``[]`` when the container asks nothing of this backend. Raise
    :class:`hami.errors.RequestError` naming the resource and value for an impossible request.

    Example::

        @hookimpl
        def hami_container_requests(container, pod, config):
            limits = container.get("resources", {}).get("limits", {})
            if "acme.com/xpu" not in limits:
                return []
            return [DeviceRequest(vendor="ACME", count=parse_count(limits["acme.com/xpu"]))]
    """


@hookspec
def hami_mutate_container(container: Container, pod: Pod, config: Config) -> ContainerPatch | None:
    """Admission defaults for one container: limits to set (e.g. ``acme.com/xpu: 1`` when only
    ``acme.com/xpumem`` is given, or a count the hardware rounds up, as a two-die chip does from 1 die
    to 2) and warnings to show the user. A limit already present at another value is replaced, and
    a matching request with it.

    Open hook: called on every plugin by the webhook; patches are merged (a limit two plugins
    set differently is an error). Return None when there is nothing to add.

    Example::

        @hookimpl
        def hami_mutate_container(container, pod, config):
            limits = container.get("resources", {}).get("limits", {})
            if "acme.com/xpumem" in limits and "acme.com/xpu" not in limits:
                return ContainerPatch(limits={"acme.com/xpu": "1"})
            return None
    """


@hookspec(firstresult=True)
def hami_normalize_request(request: DeviceRequest, device: DeviceUsage, pod: Pod, config: Config) -> DeviceRequest | None:
    """Adjust a request to what ``device`` can actually give (round memory up to a virtual-device
    template, pick a partition profile) before it is fitted.

    Vendor-dispatched, first non-None result wins; None keeps the request as it is. The result
    must keep the request's vendor.

    Example::

        @hookimpl
        def hami_normalize_request(request, device, pod, config):
            size = next(t for t in TEMPLATES if t >= request.memory)
            return attrs.evolve(request, memory=size)
    """


@hookspec(firstresult=True)
def hami_device_fits(request: DeviceRequest, device: DeviceUsage, pod: Pod, config: Config) -> str | None:
    """Vendor predicates the core cannot know: type and UUID selectors, isolation modes,
    templates. The core itself checks health, slots, memory, cores and exclusivity.

    Vendor-dispatched, first non-None result wins: return a short reason the device does not fit
    (counted per node in the scheduler's failure message, e.g. ``CardTypeMismatch``), or None.

    Example::

        @hookimpl
        def hami_device_fits(request, device, pod, config):
            wanted = pod["metadata"].get("annotations", {}).get("acme.com/use-type")
            if wanted and wanted.lower() not in device.device.type.lower():
                return "CardTypeMismatch"
            return None
    """


@hookspec(firstresult=True)
def hami_select_devices(
    request: DeviceRequest, candidates: Sequence[DeviceUsage], node_annotations: Mapping[str, str], pod: Pod, config: Config
) -> Sequence[str] | None:
    """Choose ``request.count`` devices among ``candidates`` (each fits on its own; best device
    score first) when devices must be chosen together: linked pairs, interconnect rings.

    Vendor-dispatched, first non-None result wins: return the chosen device ids, or None to let the
    core take the best-scored ones (honouring NUMA binding). Return ``[]`` to say that no set of
    these devices is acceptable (e.g. a guaranteed ring cannot be formed). ``node_annotations`` are
    the node's annotations, including what ``hami_node_annotations`` published.

    Example::

        @hookimpl
        def hami_select_devices(request, candidates, node_annotations, pod, config):
            rings = json.loads(node_annotations.get("hami.io/node-acme-rings", "{}"))
            by_ring = {}
            for usage in candidates:
                by_ring.setdefault(rings.get(usage.device.id), []).append(usage.device.id)
            fitting = [ids for ids in by_ring.values() if len(ids) >= request.count]
            return fitting[0][: request.count] if fitting else None
    """


@hookspec(firstresult=True)
def hami_node_capacity_devices(vendor: str, node: Mapping[str, Any], config: Config) -> Sequence[SchedulableDevice] | None:
    """The devices of ``vendor`` on ``node`` (the Node object as the API server returns it) when
    the node carries no device-list annotation for it: some device plugins of a cluster being
    migrated from HAMi publish only node capacity (``status.capacity``), and HAMi's scheduler reads
    the devices from there. Called by the scheduler on every node event of such a node.

    Vendor-dispatched, first non-None result wins: return the devices (each of ``vendor``, held to
    the same bounds as an annotation's), or None / ``[]`` when the node shows none. Must be pure and
    cheap: it runs under the scheduler's cache.

    Example::

        @hookimpl
        def hami_node_capacity_devices(vendor, node, config):
            capacity = (node.get("status") or {}).get("capacity") or {}
            cards = int(capacity.get("acme.com/cards", "0"))
            name = node["metadata"]["name"]
            return [SchedulableDevice(id=f"{name}-acme-{i}", vendor=vendor, type="ACME", count=10, memory=16384) for i in range(cards)]
    """


@hookspec
def hami_policies() -> Sequence[Policy]:
    """The scoring policies this plugin offers: :class:`hami.plugin.policy.NodePolicy` and
    :class:`~hami.plugin.policy.DevicePolicy` objects, each with a name, a level and a description.

    Open hook: asked once per set of loaded plugins (the manager keeps the objects, so a policy may
    keep state); the results are concatenated. A name offered twice at one level is an error naming
    both plugins, and an unknown name (from a pod annotation or the scheduler's flags) is rejected
    with the known list. The scheduler calls ``score_node``/``score_nodes`` or ``score_device`` with
    the candidate and a context (the pod, its requests, a :class:`~hami.plugin.policy.ClusterView`);
    the core's binpack, spread, random, bestfit and fgd are offered through this hook too.

    Example::

        class FewestPods(NodePolicy):
            name = "fewest-pods"
            description = "prefer idle nodes"

            def score_node(self, node, context):
                return -sum(d.used for d in node.devices)

        @hookimpl
        def hami_policies():
            return [FewestPods()]
    """


# ---------------------------------------------------------------- runtime (node agent, Allocate)


@hookspec
def hami_container_edits(
    grants: Sequence[Grant], devices: Sequence[GrantedDevice], pod: Pod, container: Container, config: Config, node: NodeContext
) -> ContainerEdits | None:
    """What the container needs to use its granted devices under the chosen isolation mode:
    environment, mounts, device nodes, CDI names, annotations.

    Vendor-dispatched (``grants`` are all of one vendor key; ``devices`` are the same grants with
    their physical device and split, in the same order); the edits of the owner and of any
    cross-cutting plugin are merged. Mount and device host paths must lie under the backend's
    declared ``host_paths``. Raise :class:`hami.errors.BackendRefused` with a reason a person can act
    on when the mode cannot be served (e.g. the isolation library is missing on the host). A backend
    that hands out hardware partitions lists the instance each grant got in ``partitions``
    (:class:`hami.plugin.model.PartitionInstance`): the agent records them on the pod in HAMi's
    format (:mod:`hami.wire.partitions`) and the scheduler and agent export them.

    Example::

        @hookimpl
        def hami_container_edits(grants, devices, pod, container, config, node):
            return ContainerEdits(
                env={"ACME_VISIBLE_DEVICES": ",".join(str(d.index) for d in devices)},
                devices=[DeviceNode(f"/dev/acme{d.index}", f"/dev/acme{d.index}") for d in devices],
            )
    """


@hookspec
def hami_prepare(
    grants: Sequence[Grant], devices: Sequence[GrantedDevice], pod: Pod, container: Container, config: Config, node: NodeContext
) -> None:
    """Create what the grants need on the host before the container starts (a virtual device,
    a device config, a hardware partition). Called before ``hami_container_edits``.

    Vendor-dispatched. Must be idempotent (kubelet retries Allocate) and must roll back what it
    created if it fails; raise :class:`hami.errors.BackendRefused` with the reason. On a simulated
    node (``node.simulated``) create nothing on the host; keep files under ``node.state_dir``.

    Example::

        @hookimpl
        def hami_prepare(grants, devices, pod, container, config, node):
            if not node.simulated:
                for d in devices:
                    acme_sdk.create_partition(d.index, memory=d.grant.memory)
    """


@hookspec
def hami_release(
    grants: Sequence[Grant], devices: Sequence[GrantedDevice], pod: Pod, container: Container, config: Config, node: NodeContext
) -> None:
    """Undo ``hami_prepare`` once the container's pod is gone. Vendor-dispatched; idempotent.
    ``devices`` holds the grants still found on this node (a vanished device is left out).

    Example::

        @hookimpl
        def hami_release(grants, devices, pod, container, config, node):
            if not node.simulated:
                for d in devices:
                    acme_sdk.destroy_partition(d.index)
    """


# ---------------------------------------------------------------- allocation (scheduler)


@hookspec
def hami_allocation_annotations(
    vendor: str, containers: Sequence[Sequence[Grant]], devices: Mapping[str, SchedulableDevice], pod: Pod, config: Config
) -> Mapping[str, str] | None:
    """Extra pod annotations to write with an allocation of ``vendor``'s devices: what the vendor's
    device plugin or runtime reads from the pod (HAMi's device code writes a
    partition profile or runtime info this way: ``pkg/device/*/device.go`` ``PatchAnnotations``).

    Vendor-dispatched: called by the scheduler when it writes the allocation, once per vendor key
    granted. ``containers`` holds one grant list per container (init containers first,
    ``[]`` for a container without devices of this vendor); ``devices`` are the chosen node's devices
    of this vendor by id. The keys must not be the core's (``…-devices-to-allocate`` etc.) and must be
    declared in ``BackendInfo.pod_annotations`` (the webhook keeps pod owners from forging them); they
    are written, unsigned, beside the allocation. Return None for nothing.

    Example::

        @hookimpl
        def hami_allocation_annotations(vendor, containers, devices, pod, config):
            first = next((c[0] for c in containers if c), None)
            return {"acme.com/partition": f"{devices[first.id].index}_{first.memory}"} if first else None
    """
