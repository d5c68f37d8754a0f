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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hami.plugin import hookspec
from hami.plugin.model import (
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceRequest,
    DeviceUsage,
    Grant,
    HealthEvent,
    NodeAnnotations,
    NodeUsage,
    PhysicalDevice,
    PolicyInfo,
    SchedulableDevice,
)

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
                    resources=ResourceNames(count="acme.com/npu", memory="acme.com/npumem"),
                    annotations=AnnotationKeys.hami("hami.io/node-acme-register",
                                                    "hami.io/node-handshake-acme", "hami.io/acme"),
                )],
                default_config={"split_count": 4},
            )
    """


# ---------------------------------------------------------------- discovery (node agent)


@hookspec
def hami_discover_devices(config: Config, node_name: str) -> Sequence[PhysicalDevice]:
    """Probe this node's hardware and return every device of this backend's kinds.

    Called by the node agent at start and on every re-registration (30 s), once per backend
    (backend-dispatched). ``config`` is the backend's ``default_config`` overlaid with the
    operator's. No hardware or no driver is not an error: return ``[]`` and log why. Import
    vendor SDKs here, lazily, so the backend loads on machines without them.

    Example::

        @hookimpl
        def hami_discover_devices(config, node_name):
            return [PhysicalDevice(id=u, vendor="ACME", type="ACME X1", memory=16384, index=i)
                    for i, u in enumerate(acme_sdk.list_uuids())]
    """


@hookspec
def hami_device_health(devices: Sequence[PhysicalDevice], config: Config) -> Sequence[HealthEvent]:
    """Report health changes of ``devices`` since the last call (XIDs, fault codes, vanished cards).

    Called by the node agent every few seconds, once per backend (backend-dispatched) with that
    backend's devices. Return only changes; a device that recovers gets ``healthy=True``.

    Example::

        @hookimpl
        def hami_device_health(devices, config):
            return [HealthEvent(d.id, healthy=False, reason=f"fault code {c}")
                    for d in devices if (c := acme_sdk.fault_code(d.id))]
    """


# ---------------------------------------------------------------- slicing (node agent)


@hookspec(firstresult=True)
def hami_split_device(device: PhysicalDevice, config: Config) -> SchedulableDevice | None:
    """Turn a physical device into schedulable capacity: share slots, scaled memory and cores,
    the isolation mode, MIG profiles or templates.

    Vendor-dispatched, first non-None result wins. Return None to leave the decision to the next
    plugin; when nobody decides, the core offers the device whole (one slot, all its memory).

    Example::

        @hookimpl
        def hami_split_device(device, config):
            return SchedulableDevice(id=device.id, vendor=device.vendor, type=device.type,
                                     count=config["split_count"], memory=device.memory,
                                     cores=100, index=device.index, numa=device.numa,
                                     healthy=device.healthy)
    """


@hookspec
def hami_node_annotations(devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice], config: Config) -> NodeAnnotations | None:
    """Extra node annotations to publish beside the device list: what the scheduler needs to
    choose devices together (NVLink pair scores, HCCS or MLULink rings).

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
            if "acme.com/npu" not in limits:
                return []
            return [DeviceRequest(vendor="ACME", count=parse_count(limits["acme.com/npu"]))]
    """


@hookspec
def hami_mutate_container(container: Container, pod: Pod, config: Config) -> ContainerPatch | None:
    """Admission defaults for one container: limits to set (e.g. ``nvidia.com/gpu: 1`` when only
    ``nvidia.com/gpumem`` is given, or a count the hardware rounds up, as Ascend 910C does from 1 die
    to 2) and warnings to show the user. A limit already present at another value is replaced, and
    a matching request with it.

    Open hook: called on every plugin by the webhook; patches are merged (a limit two plugins
    set differently is an error). Return None when there is nothing to add.

    Example::

        @hookimpl
        def hami_mutate_container(container, pod, config):
            limits = container.get("resources", {}).get("limits", {})
            if "acme.com/npumem" in limits and "acme.com/npu" not in limits:
                return ContainerPatch(limits={"acme.com/npu": "1"})
            return None
    """


@hookspec(firstresult=True)
def hami_normalize_request(request: DeviceRequest, device: DeviceUsage, pod: Pod, config: Config) -> DeviceRequest | None:
    """Adjust a request to what ``device`` can actually give (round memory up to a vNPU template,
    pick a MIG profile) before it is fitted.

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
    score first) when devices must be chosen together: NVLink pairs, HCCS rings, MLULink rings.

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


@hookspec
def hami_scoring_policies() -> Sequence[PolicyInfo]:
    """Name the scoring policies this plugin implements, so unknown names are rejected early and
    ``hami`` can list them.

    Open hook: results are concatenated; a name offered twice at one level is an error.

    Example::

        @hookimpl
        def hami_scoring_policies():
            return [PolicyInfo("fewest-pods", level="node", description="prefer idle nodes")]
    """


@hookspec(firstresult=True)
def hami_score_node(policy: str, node: NodeUsage, requests: Sequence[DeviceRequest], pod: Pod) -> float | None:
    """Score a candidate node under ``policy`` (higher is better), before the pod is placed.

    Open hook, first non-None result wins: return None for policies you do not implement. The
    core's ``binpack`` and ``spread`` are plugins of this hook like any other.

    Example::

        @hookimpl
        def hami_score_node(policy, node, requests, pod):
            if policy != "fewest-pods":
                return None
            return -sum(d.used for d in node.devices)
    """


@hookspec(firstresult=True)
def hami_score_nodes(policy: str, nodes: Sequence[NodeUsage], requests: Sequence[DeviceRequest], pod: Pod) -> Sequence[float] | None:
    """Score many candidate nodes at once under ``policy`` (higher is better), one score per node in
    order: for policies that are cheaper in bulk (vectorised fragmentation, shared memo tables).

    Open hook, first non-None result wins; return None for policies you do not implement, and the
    core falls back to ``hami_score_node`` per node.

    Example::

        @hookimpl
        def hami_score_nodes(policy, nodes, requests, pod):
            if policy != "fewest-pods":
                return None
            return [-sum(d.used for d in node.devices) for node in nodes]
    """


@hookspec(firstresult=True)
def hami_score_device(policy: str, request: DeviceRequest, device: DeviceUsage, pod: Pod) -> float | None:
    """Score one candidate device for ``request`` under ``policy`` (higher is better).

    Open hook, first non-None result wins: return None for policies you do not implement.

    Example::

        @hookimpl
        def hami_score_device(policy, request, device, pod):
            if policy != "coolest":
                return None
            return -device.device.attributes.get("temperature", 0)
    """


# ---------------------------------------------------------------- runtime (node agent, Allocate)


@hookspec
def hami_container_edits(grants: Sequence[Grant], pod: Pod, container: Container, config: Config) -> ContainerEdits | None:
    """What the container needs to use its granted devices under the chosen isolation mode:
    environment, mounts, device nodes, CDI names, annotations.

    Vendor-dispatched (``grants`` are all of one vendor key); the edits of the owner and of any
    cross-cutting plugin are merged. Mount and device host paths must lie under the backend's
    declared ``host_paths``. Raise :class:`hami.errors.BackendError` with a reason a person can act
    on when the mode cannot be served (e.g. the isolation library is missing on the host).

    Example::

        @hookimpl
        def hami_container_edits(grants, pod, container, config):
            return ContainerEdits(
                env={"ACME_VISIBLE_DEVICES": ",".join(g.id for g in grants)},
                devices=[DeviceNode("/dev/acme0", "/dev/acme0")],
            )
    """


@hookspec
def hami_prepare(grants: Sequence[Grant], pod: Pod, container: Container, config: Config) -> None:
    """Create what the grants need on the host before the container starts (a vNPU, a vDCU
    config, a MIG instance). Called before ``hami_container_edits``.

    Vendor-dispatched. Must be idempotent (kubelet retries Allocate) and must roll back what it
    created if it fails; raise :class:`hami.errors.BackendError` with the reason.

    Example::

        @hookimpl
        def hami_prepare(grants, pod, container, config):
            for g in grants:
                acme_sdk.create_partition(g.id, memory=g.memory)
    """


@hookspec
def hami_release(grants: Sequence[Grant], pod: Pod, container: Container, config: Config) -> None:
    """Undo ``hami_prepare`` once the container's pod is gone. Vendor-dispatched; idempotent.

    Example::

        @hookimpl
        def hami_release(grants, pod, container, config):
            for g in grants:
                acme_sdk.destroy_partition(g.id)
    """
