"""What this node has and what it advertises: discovery + split of every loaded backend.

Shared by the agent (node annotations, ListAndWatch) and ``hami devices`` (the operator's view),
so what the command prints is exactly what the agent would serve. A backend whose discovery or
split fails is reported in :attr:`Discovery.errors`; the others are unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from hami.errors import BackendRefused
from hami.node.deviceplugin import HEALTHY, UNHEALTHY
from hami.plugin.manager import BackendManager
from hami.plugin.model import Enforcement, Grant, GrantedDevice, NodeContext, PhysicalDevice, SchedulableDevice, frozen_map, frozen_tuple
from hami.wire.isolation import ADVISORY, ENFORCED, UNVERIFIED, WHOLE_ONLY, ModeState, state_for

log = logging.getLogger(__name__)

SLOT_SEPARATOR = "::"
MAX_DEVICE_ID = 63
"""kubelet's limit on ``Device.ID``."""


def slot_id(device_id: str, index: int) -> str:
    """The kubelet device ID of share slot ``index`` of a device: ``<uuid>::<i>`` (HAMi's form)."""
    return f"{device_id}{SLOT_SEPARATOR}{index}"


def device_of_slot(slot: str) -> str:
    """The physical device ID a slot ID belongs to (a bare ID is its own device)."""
    device, sep, _ = slot.rpartition(SLOT_SEPARATOR)
    return device if sep else slot


def health_word(healthy: bool) -> str:
    return HEALTHY if healthy else UNHEALTHY


@attrs.frozen
class NodeDevice:
    """One physical device with its schedulable capacity and the resource it is advertised under."""

    backend: str
    resource: str
    physical: PhysicalDevice
    schedulable: SchedulableDevice
    isolation: str = UNVERIFIED
    """``enforced``, ``advisory`` (mechanism missing, shares offered anyway), ``whole-only`` (mechanism
    missing: one slot, partial requests refused) or ``unverified`` (the backend reports nothing)."""
    isolation_reason: str = ""

    @property
    def id(self) -> str:
        return self.physical.id

    @property
    def vendor(self) -> str:
        return self.physical.vendor

    def slot_ids(self) -> list[str]:
        return [slot_id(self.physical.id, i) for i in range(self.schedulable.count)]

    def as_json(self, healthy: bool | None = None) -> dict[str, Any]:
        """The ``hami devices --json`` row; ``healthy`` overrides what discovery said."""
        ok = self.schedulable.healthy if healthy is None else healthy
        return {
            "backend": self.backend,
            "vendor": self.vendor,
            "id": self.id,
            "index": self.physical.index,
            "type": self.physical.type,
            "memory_mib": self.physical.memory,
            "cores": self.physical.cores,
            "numa": self.physical.numa,
            "health": health_word(ok),
            "resource": self.resource,
            "slots": self.schedulable.count,
            "schedulable_memory_mib": self.schedulable.memory,
            "schedulable_cores": self.schedulable.cores,
            "mode": self.schedulable.mode,
            "slot_ids": self.slot_ids(),
            "advertised": True,
            "reason": "",
            "isolation": self.isolation,
            "isolation_reason": self.isolation_reason,
        }


@attrs.frozen
class UnadvertisedDevice:
    """A device the vendor tool showed that the backend cannot offer (``PhysicalDevice.advertised``
    False): listed by ``hami devices`` with the reason, never split, registered or granted."""

    backend: str
    physical: PhysicalDevice

    @property
    def id(self) -> str:
        return self.physical.id

    def as_json(self) -> dict[str, Any]:
        """The ``hami devices --json`` row: the same keys as an advertised device's, nothing offered."""
        p = self.physical
        return {
            "backend": self.backend,
            "vendor": p.vendor,
            "id": p.id,
            "index": p.index,
            "type": p.type,
            "memory_mib": p.memory or None,
            "cores": p.cores,
            "numa": p.numa,
            "health": health_word(p.healthy),
            "resource": None,
            "slots": 0,
            "schedulable_memory_mib": 0,
            "schedulable_cores": 0,
            "mode": "",
            "slot_ids": [],
            "advertised": False,
            "reason": p.reason,
            "isolation": UNVERIFIED,
            "isolation_reason": "",
        }


@attrs.frozen
class Discovery:
    devices: tuple[NodeDevice, ...] = attrs.field(default=(), converter=frozen_tuple)
    errors: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    """Backend name → why its devices are missing."""
    annotations: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    """What the backends publish beside their device lists (``hami_node_annotations``: topology)."""
    contexts: Mapping[str, NodeContext] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    """Backend name → the node context its hooks got (and the runtime hooks get)."""
    unadvertised: tuple[UnadvertisedDevice, ...] = attrs.field(default=(), converter=frozen_tuple)
    """Devices the vendor tools showed that cannot be offered, with the reason."""
    isolation: tuple[ModeState, ...] = attrs.field(default=(), converter=frozen_tuple)
    """What the backends reported about their share modes' enforcement (``hami_enforcement``), as
    the node annotation and ``hami_isolation_ready`` carry it."""

    def granted(self, grants: Sequence[Grant], *, missing_ok: bool = False) -> list[GrantedDevice]:
        """The grants with the devices this discovery found; a device not found is refused
        (naming it), or left out with ``missing_ok`` (releasing a device that vanished)."""
        found = {d.id: d for d in self.devices}
        out = []
        for grant in grants:
            device = found.get(grant.id)
            if device is not None and device.vendor == grant.vendor:
                out.append(GrantedDevice(grant, device.physical, device.schedulable))
            elif not missing_ok:
                known = sorted(d.id for d in self.devices if d.vendor == grant.vendor)
                raise BackendRefused(
                    f"granted {grant.vendor} device {grant.id!r} is not on this node (found: {', '.join(known) or 'none'})"
                )
        return out

    def by_resource(self) -> dict[str, list[NodeDevice]]:
        out: dict[str, list[NodeDevice]] = {}
        for device in self.devices:
            out.setdefault(device.resource, []).append(device)
        return out

    def by_vendor(self) -> dict[str, list[NodeDevice]]:
        out: dict[str, list[NodeDevice]] = {}
        for device in self.devices:
            out.setdefault(device.vendor, []).append(device)
        return out


def discover_node(manager: BackendManager, node_name: str, state_root: Path | str | None = None) -> Discovery:
    """Discover and split the devices of every loaded backend; a failing backend is recorded, not raised.

    Each backend gets its :class:`NodeContext` (decided here once: simulated or not, its state
    directory under ``state_root``); the same contexts go to the runtime hooks later."""
    devices: list[NodeDevice] = []
    errors: dict[str, str] = {}
    annotations: dict[str, str] = {}
    contexts: dict[str, NodeContext] = {}
    unadvertised: list[UnadvertisedDevice] = []
    isolation: list[ModeState] = []
    for backend in sorted(manager.backends):
        try:
            context = contexts[backend] = manager.node_context(backend, node_name, state_root=state_root)
            found = []
            seen = []
            for physical in manager.discover(backend, context, unadvertised=True):
                if not physical.advertised:
                    seen.append(UnadvertisedDevice(backend, physical))
                    continue
                kind = manager.kind(physical.vendor)
                found.append(NodeDevice(backend, kind.resources.count, physical, manager.split(physical, context)))
            if found:
                found, states = enforce(manager, backend, context, found)
                isolation.extend(states)
                annotations.update(manager.node_annotations(backend, [d.schedulable for d in found], [d.physical for d in found]))
        except Exception as exc:  # a broken backend must not hide the others' devices
            errors[backend] = f"{type(exc).__name__}: {exc}"
            log.warning("event=discovery_failed backend=%s node=%s error=%r", backend, node_name, errors[backend])
            continue
        for device in found:
            too_long = [s for s in device.slot_ids() if len(s) > MAX_DEVICE_ID]
            if too_long:
                log.warning("event=device_id_too_long backend=%s id=%s limit=%d", backend, device.id, MAX_DEVICE_ID)
        devices.extend(found)
        unadvertised.extend(seen)
        log.debug("event=discovered backend=%s node=%s devices=%d", backend, node_name, len(found))
    return Discovery(devices, errors, annotations, contexts, unadvertised, isolation)


def advisory_limits(config: Mapping[str, Any]) -> bool:
    """The operator's explicit opt-in (``advisory_limits: true`` in a backend's config) to offer
    shares whose limits nothing enforces; anything but a true boolean keeps them whole-only."""
    return config.get("advisory_limits") is True


def enforce(
    manager: BackendManager, backend: str, context: NodeContext, found: list[NodeDevice]
) -> tuple[list[NodeDevice], list[ModeState]]:
    """Ask ``backend`` what enforces its shares here (``hami_enforcement``) and hold each device to
    it: enforced as split; mechanism missing: one slot (whole devices only) unless the backend's
    config sets ``advisory_limits: true``. A failing check counts as missing (never offer a share
    nobody vouched for)."""
    advisory = advisory_limits(context.config)
    try:
        reports = manager.enforcement(backend, [d.physical for d in found], context)
    except Exception as exc:
        why = f"the enforcement check failed: {type(exc).__name__}: {exc}"
        log.warning("event=enforcement_check_failed backend=%s node=%s error=%r", backend, context.name, why)
        reports = [Enforcement(v, ready=False, reason=why) for v in sorted({d.vendor for d in found})]
    states = [
        ModeState(r.vendor, r.mode, ENFORCED if r.ready else ADVISORY if advisory else WHOLE_ONLY, r.mechanism, r.reason, r.device_ids)
        for r in reports
    ]
    out = []
    for device in found:
        state = state_for(device.schedulable, states)
        if state is None:
            out.append(device)
            continue
        split = device.schedulable
        if state.state == WHOLE_ONLY and split.count > 1:
            split = attrs.evolve(split, count=1)
        out.append(attrs.evolve(device, schedulable=split, isolation=state.state, isolation_reason=state.reason))
    return out, states


def current_health(manager: BackendManager, discovery: Discovery) -> dict[str, bool]:
    """One round of ``hami_device_health`` over the discovered devices: device id → healthy, for
    the devices a backend reported on (a failing health hook is logged and skipped)."""
    by_backend: dict[str, list[PhysicalDevice]] = {}
    for device in discovery.devices:
        by_backend.setdefault(device.backend, []).append(device.physical)
    health: dict[str, bool] = {}
    for backend, devices in sorted(by_backend.items()):
        try:
            events = manager.device_health(backend, devices, discovery.contexts.get(backend) or "unknown")
        except Exception as exc:
            log.warning("event=health_check_failed backend=%s error=%r", backend, f"{type(exc).__name__}: {exc}")
            continue
        health.update((e.device_id, e.healthy) for e in events)
    return health
