"""The scheduler's cache of the cluster: devices from node annotations, usage from pod annotations.

Fed by the informers (list + watch) and by the filter's own assumptions; every change costs work
proportional to what changed: a pod event touches only the devices it holds, a node event re-reads
only that node. All access goes through one lock; readers get immutable snapshots of what they need.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from hami.errors import AnnotationError, HamiError
from hami.plugin.model import DeviceKind, DeviceUsage, NodeUsage, SchedulableDevice
from hami.scheduler.handshake import handshake_problem
from hami.scheduler.noderesources import NodeResources, node_allocatable, pod_host_requests
from hami.scheduler.usage import Holding, pod_holdings
from hami.wire.allocation import allocation_records, read_allocated
from hami.wire.annotations import ASSIGNED_NODE, BIND_PHASE, DEVICE_CORDON, SCHEDULE_TIME, SIGNATURE, BindPhase
from hami.wire.codec import PodDevices, check_node_device, decode_node_devices
from hami.wire.signing import SignatureError, SigningKeys, verify

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 60.0
_TERMINATED = {"Succeeded", "Failed"}
_VERDICTS = 16384
"""Signature verdicts remembered (then forgotten all at once): a few per pending or recent pod."""


@attrs.frozen
class VendorSummary:
    """Upper bounds over a node's usable devices of one vendor: a cheap necessary condition for fit."""

    usable: int
    """Healthy, uncordoned devices with a free slot."""
    max_free_memory: int
    max_free_cores: int


class NodeState:
    """One node's devices and their usage; mutated only by :class:`ClusterState` under its lock."""

    def __init__(self, name: str, on_change: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.on_change = on_change
        self.devices: dict[str, SchedulableDevice] = {}
        self.by_vendor: dict[str, tuple[str, ...]] = {}
        self.cordoned: frozenset[str] = frozenset()
        self.problems: dict[str, str] = {}  # vendor -> why its devices were dropped
        self.annotations: Mapping[str, str] = {}  # the node's annotations, for backends choosing devices together
        self.held: dict[str, list[int]] = {}  # device id -> [slots, MiB, cores], all pods together
        self.generation = 0
        self._usages: dict[str, DeviceUsage] = {}
        self._summary: dict[str, VendorSummary] = {}
        self._node_usage: NodeUsage | None = None

    def touch(self, device_ids: Iterable[str] | None = None) -> None:
        self.generation += 1
        if self.on_change is not None:
            self.on_change(self.name)
        if device_ids is None:
            self._usages.clear()
        else:
            for device_id in device_ids:
                self._usages.pop(device_id, None)
        self._summary.clear()
        self._node_usage = None

    def usage(self, device_id: str) -> DeviceUsage:
        cached = self._usages.get(device_id)
        if cached is None:
            slots, memory, cores = self.held.get(device_id, (0, 0, 0))
            cached = self._usages[device_id] = DeviceUsage(self.devices[device_id], slots, memory, cores)
        return cached

    def usages(self, vendor: str) -> list[DeviceUsage]:
        return [self.usage(i) for i in self.by_vendor.get(vendor, ())]

    def usable(self, usage: DeviceUsage) -> bool:
        return usage.device.healthy and usage.device.id not in self.cordoned and usage.free_slots > 0

    def summary(self, vendor: str) -> VendorSummary:
        found = self._summary.get(vendor)
        if found is None:
            usable = [u for u in self.usages(vendor) if self.usable(u)]
            found = self._summary[vendor] = VendorSummary(
                len(usable), max((u.free_memory for u in usable), default=0), max((u.free_cores for u in usable), default=0)
            )
        return found

    def node_usage(self) -> NodeUsage:
        if self._node_usage is None:
            self._node_usage = NodeUsage(self.name, [self.usage(i) for i in self.devices])
        return self._node_usage


class Trust:
    """Where a :class:`PodRecord` came from (docs/scheduler.md, "Which records count")."""

    ASSUMED = "assumed"
    """The filter's own choice, not yet seen back on the pod."""
    SIGNED = "signed"
    """A ``…-devices-allocated`` record whose signature verifies (or signing is off)."""
    UNSIGNED = "unsigned"
    """A record we cannot verify on a bound pod (upstream HAMi's, during a migration): counted as
    usage, capped at the device counts the pod's containers request, never our grant."""


@attrs.frozen
class PodRecord:
    namespace: str
    name: str
    node: str
    holdings: Mapping[str, Holding] = attrs.field(hash=False)
    devices: Mapping[str, PodDevices] = attrs.field(hash=False)
    trust: str = Trust.ASSUMED
    bound: bool = False
    scheduled: str = ""
    """The ``hami.io/vgpu-time`` the record was (or, assumed, will be) written with."""


def _requested_count(container: Mapping[str, Any], resource: str) -> int:
    """The device count a container asks for (limits, else requests); 0 when absent or unreadable."""
    resources = container.get("resources") or {}
    for section in ("limits", "requests"):
        value = (resources.get(section) or {}).get(resource) if isinstance(resources.get(section), dict) else None
        if value is not None:
            try:
                return max(int(str(value)), 0)
            except ValueError:
                return 0
    return 0


class ClusterState:
    def __init__(
        self,
        kinds: Mapping[str, DeviceKind],
        *,
        clock: Callable[[], float] = time.time,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        keys: SigningKeys | None = None,
        capacity_devices: Callable[[str, Mapping[str, Any]], Sequence[SchedulableDevice]] | None = None,
    ) -> None:
        self.kinds = dict(kinds)
        self.capacity_devices = capacity_devices
        """A vendor's devices on a node without its device-list annotation, read from the node's
        capacity by the owning backend (``BackendManager.node_capacity_devices``); None: such nodes have none."""
        self.keys = keys
        """Verify pod records with these keys; None (signing off) trusts every record as before."""
        self._verdicts: dict[tuple[Any, ...], str | None] = {}
        self._verdicts_keys: SigningKeys | None = None
        self._decoded: dict[tuple[str, str], tuple[str, tuple[SchedulableDevice, ...]]] = {}
        """(node, vendor) -> the register annotation last decoded and its devices: most node events (the
        node lock taken and released per pod, heartbeats) leave the device list as it was."""
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.lock = threading.RLock()
        self.nodes: dict[str, NodeState] = {}
        self.pods: dict[str, PodRecord] = {}
        self._pods_by_node: dict[str, set[str]] = {}
        self._listeners: list[set[str]] = []
        self.handshakes: dict[str, tuple[dict[str, str], Mapping[str, Any]]] = {}
        """Per node: each vendor's handshake value and the node object it came with."""
        self.device_owner: dict[str, str] = {}
        """Device id → the node whose registration of it was accepted first; a later node registering
        the same id has that vendor's devices refused until the owner lets go of it."""
        self._refused: dict[str, Mapping[str, Any]] = {}  # node → its node object, refused for a duplicate id
        self._owned: dict[str, set[str]] = {}  # node → the device ids it owns in device_owner
        self.on_duplicate: Callable[[str, str, str], None] | None = None
        """Called with (node, other node, device id) when a registration is refused for a duplicate id."""
        self.host = NodeResources()
        """Each node's allocatable CPU/memory minus its pods' requests: the packing policies' host view."""
        self._host_assumed: set[str] = set()  # pods counted on a node by the filter's choice, not yet bound

    def changes(self) -> set[str]:
        """A set that collects the names of nodes changed (or removed) from now on; the caller drains it."""
        with self.lock:
            changed = set(self.nodes)
            self._listeners.append(changed)
            return changed

    def _changed(self, name: str) -> None:
        for listener in self._listeners:
            listener.add(name)

    # ------------------------------------------------------------ nodes

    def node(self, name: str) -> NodeState | None:
        return self.nodes.get(name)

    def apply_node(self, node: Mapping[str, Any]) -> None:
        """Re-read one node's device annotations (a node ADDED/MODIFIED event)."""
        meta = node.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        annotations = meta.get("annotations") or {}
        devices: dict[str, SchedulableDevice] = {}
        by_vendor: dict[str, tuple[str, ...]] = {}
        problems: dict[str, str] = {}
        now = self.clock()
        candidates: list[tuple[str, tuple[SchedulableDevice, ...]]] = []
        for vendor, kind in self.kinds.items():
            text = annotations.get(kind.annotations.node_register)
            if not text:
                found = self._capacity_devices(name, vendor, node, problems)
                if found:
                    candidates.append((vendor, found))
                continue
            gone = handshake_problem(
                annotations.get(kind.annotations.handshake, ""), node, kind.resources.count, now, self.handshake_timeout
            )
            if gone:  # HAMi's rule: a stale request and nothing allocatable (pkg/device/devices.go CheckHealth)
                problems[vendor] = f"the {vendor} device plugin {gone}"
                continue
            known = self._decoded.get((name, vendor))
            if known is not None and known[0] == text:
                decoded = known[1]
            else:
                try:
                    decoded = decode_node_devices(text, vendor, kind.node_encoding)
                except AnnotationError as exc:
                    problems[vendor] = f"corrupt {kind.annotations.node_register}: {exc}"
                    log.warning("event=node_annotation_corrupt node=%s vendor=%s error=%r", name, vendor, str(exc))
                    continue
                self._decoded[(name, vendor)] = (text, decoded)
            candidates.append((vendor, decoded))
        cordon = frozenset(u.strip() for u in (annotations.get(DEVICE_CORDON) or "").split(",") if u.strip())
        with self.lock:
            clashes: list[tuple[str, str, str]] = []  # (vendor, device id, the node that registered it first)
            for vendor, decoded in candidates:
                clash = next(((d.id, self.device_owner[d.id]) for d in decoded if self.device_owner.get(d.id, name) != name), None)
                if clash is not None:
                    problems[vendor] = f"device id {clash[0]!r} is already registered by node {clash[1]!r}; {vendor} devices refused here"
                    clashes.append((vendor, *clash))
                    continue
                ids = []
                for device in decoded:
                    if device.id in devices:
                        problems[vendor] = f"device id {device.id!r} is registered twice"
                        continue
                    devices[device.id] = device
                    ids.append(device.id)
                by_vendor[vendor] = tuple(ids)
            previous = self.nodes[name].problems if name in self.nodes else {}
            new_clashes = [(i, other) for vendor, i, other in clashes if previous.get(vendor) != problems[vendor]]  # one event per clash
            freed = self._claim(name, set(devices), node if clashes else None)
            self.host.set_node(name, node_allocatable(node))
            self._apply_node_locked(name, node, annotations, devices, by_vendor, cordon, problems)
        for device_id, other in new_clashes:
            log.warning("event=duplicate_device_id node=%s device=%s registered_by=%s", name, device_id, other)
            if self.on_duplicate is not None:
                self.on_duplicate(name, other, device_id)
        for other_node in freed:
            self.apply_node(other_node)

    def _capacity_devices(self, name: str, vendor: str, node: Mapping[str, Any], problems: dict[str, str]) -> tuple[SchedulableDevice, ...]:
        """Devices registered HAMi's other way, by node capacity (HAMi's pkg/device/<vendor>
        ``GetNodeDevices`` of vendors without a register annotation); a failure is the node's problem."""
        if self.capacity_devices is None:
            return ()
        try:
            return tuple(check_node_device(d, f"{vendor} capacity device") for d in self.capacity_devices(vendor, node))
        except HamiError as exc:
            problems[vendor] = f"devices from node capacity: {exc}"
            log.warning("event=node_capacity_devices_failed node=%s vendor=%s error=%r", name, vendor, str(exc))
            return ()

    def _claim(self, name: str, ids: set[str], refused: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
        """Make ``name`` the owner of ``ids`` (and of nothing else); returns the refused nodes to re-read
        because an id they wanted was let go. Called with the lock held."""
        owned = self._owned.setdefault(name, set())
        released = [i for i in owned if i not in ids]  # this node's ids only: a node event costs its own devices, not the cluster's
        for device_id in released:
            if self.device_owner.get(device_id) == name:
                del self.device_owner[device_id]
            owned.discard(device_id)
        for device_id in ids:
            self.device_owner[device_id] = name
        owned.update(ids)
        if not owned:
            del self._owned[name]
        if refused is not None:
            self._refused[name] = refused
        else:
            self._refused.pop(name, None)
        if not released:
            return []
        return [n for other, n in self._refused.items() if other != name]

    def _apply_node_locked(
        self,
        name: str,
        node: Mapping[str, Any],
        annotations: Mapping[str, str],
        devices: dict[str, SchedulableDevice],
        by_vendor: dict[str, tuple[str, ...]],
        cordon: frozenset[str],
        problems: dict[str, str],
    ) -> None:
        handshakes = {  # every registered vendor is asked, as HAMi asks, also where no plugin wrote a handshake
            vendor: annotations.get(k.annotations.handshake, "")
            for vendor, k in self.kinds.items()
            if annotations.get(k.annotations.handshake) or annotations.get(k.annotations.node_register)
        }
        if name in self.nodes:
            self.nodes[name].annotations = annotations
        if handshakes:
            self.handshakes[name] = (handshakes, node)
        else:
            self.handshakes.pop(name, None)
        state_ = self.nodes.get(name) or NodeState(name, self._changed)
        if (state_.devices, state_.cordoned, state_.problems) == (devices, cordon, problems):
            return  # a heartbeat or an unrelated change: nothing to redo
        state_.devices, state_.by_vendor, state_.cordoned, state_.problems = devices, by_vendor, cordon, problems
        state_.annotations = annotations
        state_.touch()
        self.nodes[name] = state_

    def recheck_handshakes(self) -> None:
        """Apply the 60 s rule again: time passes without node events."""
        with self.lock:
            waiting = [node for values, node in self.handshakes.values() if any("Requesting" in v for v in values.values())]
        for node in waiting:
            self.apply_node(node)

    def delete_node(self, name: str) -> None:
        with self.lock:
            self.handshakes.pop(name, None)
            self._refused.pop(name, None)
            for vendor in self.kinds:
                self._decoded.pop((name, vendor), None)
            freed = self._claim(name, set(), None)
            self.host.set_node(name, None)
            if self.nodes.pop(name, None) is not None:
                self._changed(name)
        for other_node in freed:
            self.apply_node(other_node)

    # ------------------------------------------------------------ pods

    def apply_pod(self, pod: Mapping[str, Any]) -> None:
        """Account one pod's granted devices (a pod ADDED/MODIFIED event); terminated pods free theirs.

        Only what the scheduler signed is believed (docs/scheduler.md, "Which records count"): an
        edited record never replaces a verified one, an unsigned record counts only on a bound pod
        that requests devices of that kind (capped at that count), and an unbound pod's record
        counts only while its bind has not failed. An event older than the filter's current choice
        for the pod (a retried pod) leaves that choice alone."""
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        annotations = meta.get("annotations") or {}
        spec = pod.get("spec") or {}
        bound_to = spec.get("nodeName")
        node = bound_to or annotations.get(ASSIGNED_NODE)
        phase = (pod.get("status") or {}).get("phase")
        self._account_host(uid, pod, bound_to, phase)
        if not node or phase in _TERMINATED:
            self.forget_pod(uid)
            return
        try:
            devices = read_allocated(annotations, self.kinds)
        except AnnotationError as exc:
            log.warning("event=pod_annotation_corrupt pod=%s/%s error=%r", meta.get("namespace"), meta.get("name"), str(exc))
            devices = {}
        who = f"{meta.get('namespace')}/{meta.get('name')}"
        with self.lock:
            held = self.pods.get(uid)
            if not bound_to:
                if (
                    held is not None
                    and held.trust == Trust.ASSUMED
                    and (
                        devices != held.devices
                        or annotations.get(SCHEDULE_TIME) != held.scheduled
                        or annotations.get(BIND_PHASE) == BindPhase.FAILED
                    )
                ):
                    return  # the pod as it was before the filter's latest choice: that choice stands until bind ends it
                if annotations.get(BIND_PHASE) == BindPhase.FAILED or not devices:
                    self.forget_pod(uid)
                    return
            elif not devices:
                if held is not None and held.trust != Trust.UNSIGNED and held.node == node:
                    log.warning("event=pod_record_removed pod=%s node=%s action=kept_signed_grant", who, node)
                    if not held.bound:
                        self.hold(uid, attrs.evolve(held, bound=True))
                    return
                self.forget_pod(uid)
                return
            why = self._unverified(annotations, uid)
            if why is None:
                trust = Trust.SIGNED
            elif held is not None and held.trust != Trust.UNSIGNED and held.node == node:
                log.warning("event=pod_record_unverified pod=%s node=%s action=kept_signed_grant reason=%r", who, node, why)
                if bound_to and not held.bound:
                    self.hold(uid, attrs.evolve(held, bound=True))
                return
            elif not bound_to:
                log.warning("event=pod_record_unverified pod=%s node=%s action=ignored_unbound reason=%r", who, node, why)
                self.forget_pod(uid)
                return
            else:
                devices = self._capped(devices, pod)
                if not devices:
                    log.warning("event=pod_record_unverified pod=%s node=%s action=ignored_no_device_request reason=%r", who, node, why)
                    self.forget_pod(uid)
                    return
                log.info("event=pod_record_unverified pod=%s node=%s action=counted_unsigned reason=%r", who, node, why)
                trust = Trust.UNSIGNED
            init_count = len(spec.get("initContainers") or [])
            holdings = pod_holdings(devices, init_count)
            record = PodRecord(
                meta.get("namespace", ""),
                meta.get("name", ""),
                node,
                holdings,
                devices,
                trust,
                bool(bound_to),
                annotations.get(SCHEDULE_TIME, ""),
            )
            self.hold(uid, record)

    def _account_host(self, uid: str, pod: Mapping[str, Any], bound_to: str | None, phase: str | None) -> None:
        """CPU and memory: a bound pod counts on its node until it terminates (every pod, with devices
        or not, as kube-scheduler counts them); an unbound one keeps what the filter assumed."""
        with self.lock:
            if phase in _TERMINATED:
                self._host_assumed.discard(uid)
                self.host.release(uid)
            elif bound_to:
                self._host_assumed.discard(uid)
                self.host.place(uid, bound_to, *pod_host_requests(pod))

    def assume_host(self, uid: str, node: str, pod: Mapping[str, Any]) -> None:
        """Count the pod's CPU and memory on ``node`` from the filter's choice on (kube-scheduler's assume)."""
        with self.lock:
            if uid in self.host.pods and uid not in self._host_assumed:
                return  # already bound: its bound node stands
            self._host_assumed.add(uid)
            self.host.place(uid, node, *pod_host_requests(pod))

    def delete_pod(self, uid: str) -> None:
        """A pod deleted: its devices, CPU and memory are free."""
        with self.lock:
            self.forget_pod(uid)
            self._host_assumed.discard(uid)
            self.host.release(uid)

    def _unverified(self, annotations: Mapping[str, str], uid: str) -> str | None:
        """None when the pod's records carry the scheduler's signature (or signing is off), else why not."""
        if self.keys is None:
            return None
        # A pod's events repeat the same signed record (allocation written, bound, bind-phase, status):
        # the verdict is a function of the keys and what was signed, so each record is checked once.
        records = allocation_records(annotations)
        node, signature = annotations.get(ASSIGNED_NODE, ""), annotations.get(SIGNATURE)
        if self._verdicts_keys is not self.keys or len(self._verdicts) >= _VERDICTS:
            self._verdicts, self._verdicts_keys = {}, self.keys
        key = (uid, node, signature, tuple(sorted(records.items())))
        if key in self._verdicts:
            return self._verdicts[key]
        why: str | None = None
        try:
            verify(self.keys, signature, uid, node, records)
        except SignatureError as exc:
            why = str(exc)
        self._verdicts[key] = why
        return why

    def _capped(self, devices: Mapping[str, PodDevices], pod: Mapping[str, Any]) -> dict[str, PodDevices]:
        """An unsigned record, cut per container to the device count that container requests of the
        vendor: a record on a pod that requests no devices (a squat) counts for nothing."""
        spec = pod.get("spec") or {}
        containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        capped: dict[str, PodDevices] = {}
        for vendor, per_container in devices.items():
            resource = self.kinds[vendor].resources.count
            entries = tuple(
                grants[: _requested_count(containers[i], resource) if i < len(containers) and isinstance(containers[i], dict) else 0]
                for i, grants in enumerate(per_container)
            )
            if any(entries):
                capped[vendor] = entries
        return capped

    def hold(self, uid: str, record: PodRecord) -> None:
        """Record what a pod holds, replacing what it held before (also the filter's assumption)."""
        with self.lock:
            previous = self.pods.get(uid)
            if previous == record:
                return
            if previous is not None:
                self._adjust(previous, -1)
            self.pods[uid] = record
            self._pods_by_node.setdefault(record.node, set()).add(uid)
            self._adjust(record, +1)

    def forget_unbound(self, uid: str) -> bool:
        """Drop what a pod not yet bound holds (its filter was retried, or its bind failed); a bound
        pod keeps its grant. True when something was dropped."""
        with self.lock:
            if uid in self._host_assumed:
                self._host_assumed.discard(uid)
                self.host.release(uid)
            held = self.pods.get(uid)
            if held is None or held.bound:
                return False
            self.forget_pod(uid)
            return True

    def forget_pod(self, uid: str) -> None:
        with self.lock:
            previous = self.pods.pop(uid, None)
            if previous is not None:
                self._pods_by_node.get(previous.node, set()).discard(uid)
                self._adjust(previous, -1)

    def _adjust(self, record: PodRecord, sign: int) -> None:
        node = self.nodes.get(record.node)
        if node is None:
            node = self.nodes.setdefault(record.node, NodeState(record.node, self._changed))
        held = node.held
        for device_id, (slots, memory, cores) in record.holdings.items():
            acc = held.setdefault(device_id, [0, 0, 0])
            acc[0] += sign * slots
            acc[1] += sign * memory
            acc[2] += sign * cores
            if acc == [0, 0, 0]:
                del held[device_id]
        node.touch(record.holdings.keys())

    def pods_on(self, node: str) -> list[PodRecord]:
        with self.lock:
            return [self.pods[u] for u in self._pods_by_node.get(node, ())]

    # ------------------------------------------------------------ whole-cluster views

    def replace_all(self, nodes: Iterable[Mapping[str, Any]] | None = None, pods: Iterable[Mapping[str, Any]] | None = None) -> None:
        """A relist: what is not listed is gone (pods or nodes deleted while the watch was down)."""
        with self.lock:
            if nodes is not None:
                nodes = list(nodes)
                listed = {(n.get("metadata") or {}).get("name") for n in nodes}
                for name in [n for n in self.nodes if n not in listed]:
                    self.delete_node(name)
                for node in nodes:
                    self.apply_node(node)
            if pods is not None:
                pods = list(pods)
                listed = {(p.get("metadata") or {}).get("uid") for p in pods}
                for uid in [u for u in {*self.pods, *self.host.pods} if u not in listed]:
                    self.delete_pod(uid)
                for pod in pods:
                    self.apply_pod(pod)

    def usage_snapshot(self) -> dict[str, dict[str, tuple[int, int, int]]]:
        """Per node, per device: (slots, MiB, cores) in use; for comparing two states in tests and tools."""
        with self.lock:
            return {
                name: {i: (u.used, u.memory, u.cores) for i in node.devices if (u := node.usage(i)) and (u.used or u.memory or u.cores)}
                for name, node in self.nodes.items()
            }
