"""Loading backends and dispatching hooks to them.

Loading must survive a broken plugin (the node DaemonSet keeps serving the vendors that work):
each entry point is imported and registered on its own; a failure is logged and recorded with the
distribution's name and version. ``HAMI_STRICT_PLUGINS=1`` turns any failure into an exception
(CI, backend development). ``HAMI_BACKENDS`` (allow list) and ``HAMI_DISABLED_BACKENDS`` (deny
list) take comma-separated entry-point or distribution names. Entry points load in name order; when
two claim one vendor key, the first keeps it and the second is recorded as failed, naming both.

Dispatch goes through typed methods of :class:`BackendManager`: vendor hooks reach the owning
backend (and cross-cutting plugins) only, and every result is checked against the hookspec's type,
so a backend that breaks the contract is named in the error instead of failing somewhere later.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any, Literal

import attrs
import pluggy

from hami import __version__
from hami.errors import BackendError, DuplicateVendorError, HamiError, ValidationError
from hami.plugin import ENTRY_POINT_GROUP, PROJECT, hookspecs
from hami.plugin.model import (
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceKind,
    DeviceRequest,
    DeviceUsage,
    Grant,
    HealthEvent,
    NodeAnnotations,
    NodeUsage,
    PhysicalDevice,
    PolicyInfo,
    SchedulableDevice,
    frozen_map,
)

log = logging.getLogger(__name__)

Status = Literal["ok", "failed", "disabled"]
_TRUE = {"1", "true", "yes", "on"}


@attrs.frozen
class BackendRecord:
    """What loading one plugin produced; ``hami backends`` prints these."""

    name: str
    distribution: str = ""
    version: str = ""
    status: Status = "ok"
    error: str = ""
    info: BackendInfo | None = None
    builtin: bool = False
    """Part of the core (the built-in policies), not an installed plugin."""

    @property
    def vendors(self) -> tuple[str, ...]:
        return self.info.vendors if self.info else ()

    @property
    def resources(self) -> tuple[str, ...]:
        return self.info.resource_names if self.info else ()

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.info.name if self.info else self.name,
            "vendor": ",".join(self.vendors),
            "vendors": list(self.vendors),
            "distribution": self.distribution,
            "version": self.version,
            "resources": list(self.resources),
            "status": self.status,
            "error": self.error,
        }


def _names_from_env(variable: str) -> frozenset[str] | None:
    value = os.environ.get(variable, "").strip()
    return frozenset(n.strip() for n in value.split(",") if n.strip()) if value else None


def _expect(value: Any, kind: type | tuple[type, ...], hook: str, subject: str) -> Any:
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BackendError(f"{hook} for {subject} returned {value!r:.120}, expected {names}")
    return value


def _expect_list(values: Any, kind: type, hook: str, subject: str) -> list[Any]:
    if not isinstance(values, (list, tuple)):
        raise BackendError(f"{hook} for {subject} returned {values!r:.120}, expected a list of {kind.__name__}")
    return [_expect(v, kind, hook, subject) for v in values]


class BackendManager:
    """The host side of the contract: owns the pluggy manager, the load records and the dispatch."""

    def __init__(
        self,
        *,
        strict: bool | None = None,
        allow: Iterable[str] | None = None,
        deny: Iterable[str] | None = None,
        builtins: bool = True,
    ) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = os.environ.get("HAMI_STRICT_PLUGINS", "").lower() in _TRUE if strict is None else strict
        self.allow = frozenset(allow) if allow is not None else _names_from_env("HAMI_BACKENDS")
        self.deny = frozenset(deny) if deny is not None else (_names_from_env("HAMI_DISABLED_BACKENDS") or frozenset())
        self.records: list[BackendRecord] = []
        self._backends: dict[str, tuple[object, BackendInfo, BackendRecord]] = {}
        self._owners: dict[str, str] = {}  # vendor key -> backend name
        self._kinds: dict[str, DeviceKind] = {}  # vendor key -> kind
        self._resource_kinds: dict[str, DeviceKind] = {}  # resource name -> kind
        self._policies: dict[tuple[str, str], PolicyInfo] | None = None
        self._overrides: dict[str, dict[str, Any]] = {}
        self._configs: dict[str, Mapping[str, Any]] = {}
        self._callers: dict[tuple[str, str, bool], Any] = {}
        self._callers_lock = threading.Lock()
        if builtins:
            from hami.policies import BUILTIN_PLUGINS

            for plugin in BUILTIN_PLUGINS:
                self.register(plugin, name=plugin.__name__, distribution="hami", version=__version__, builtin=True)

    # ------------------------------------------------------------ loading

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[BackendRecord]:
        """Import and register every installed backend; returns this call's records."""
        seen: set[tuple[str, str]] = set()
        records = []
        for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
            if (ep.name, ep.value) in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            dist = getattr(ep, "dist", None)
            dist_name, version = (dist.metadata["Name"], dist.version) if dist else ("", "")
            if not self._enabled(ep.name, dist_name):
                record = BackendRecord(ep.name, dist_name, version, "disabled", "disabled by HAMI_BACKENDS / HAMI_DISABLED_BACKENDS")
                self.records.append(record)
                records.append(record)
                log.info("event=backend_disabled backend=%s distribution=%s", ep.name, dist_name)
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken backend must not take the others down
                records.append(self._failed(ep.name, dist_name, version, f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}", exc))
                continue
            records.append(self.register(plugin, name=ep.name, distribution=dist_name, version=version))
        self.check_pending()
        return records

    def _enabled(self, *names: str) -> bool:
        if any(n in self.deny for n in names if n):
            return False
        return self.allow is None or any(n in self.allow for n in names if n)

    def register(
        self, plugin: object, *, name: str | None = None, distribution: str = "", version: str = "", builtin: bool = False
    ) -> BackendRecord:
        """Register one plugin in-process (entry points, tests, a backend under development)."""
        if inspect.isclass(plugin):
            plugin = plugin()
        label = name or getattr(plugin, "__name__", None) or repr(plugin)
        try:
            self._check_unmarked(plugin)
            self.pm.register(plugin, name=name)  # pluggy names unnamed instances by id
        except Exception as exc:
            return self._failed(label, distribution, version, f"{type(exc).__name__}: {exc}", exc)
        try:
            self._check_hook_names(plugin)
            info = self._identity(plugin, label)
            if name is None and info is not None:
                label = info.name
            if info is not None:
                self._claim(plugin, info, name, distribution, version)
        except Exception as exc:
            self.pm.unregister(plugin)
            return self._failed(label, distribution, version, str(exc), exc)
        record = BackendRecord(label, distribution, version, "ok", "", info, builtin)
        if info is not None:
            self._backends[info.name] = (plugin, info, record)
            for kind in info.kinds:
                self._owners[kind.vendor] = info.name
                self._kinds[kind.vendor] = kind
                self._resource_kinds.update((resource, kind) for resource in kind.resources.all())
        self._callers.clear()
        self._policies = None
        self.records.append(record)
        log.info("event=backend_loaded backend=%s distribution=%s version=%s vendors=%s", label, distribution, version, ",".join(record.vendors))
        return record

    def _failed(self, name: str, distribution: str, version: str, error: str, exc: Exception) -> BackendRecord:
        record = BackendRecord(name, distribution, version, "failed", error)
        self.records.append(record)
        log.warning("event=backend_failed backend=%s distribution=%s version=%s error=%r", name, distribution, version, error)
        if self.strict:
            raise (exc if isinstance(exc, BackendError) else BackendError(f"backend {name!r} ({distribution or 'in-process'}): {error}")) from exc
        return record

    @staticmethod
    def _check_unmarked(plugin: object) -> None:
        """A ``hami_*`` function without ``@hookimpl`` would be silently ignored by pluggy."""
        for attr in dir(plugin):
            if attr.startswith("hami_") and callable(getattr(plugin, attr, None)):
                if getattr(getattr(plugin, attr), f"{PROJECT}_impl", None) is None:
                    raise BackendError(f"{attr} is not marked with @hami.hookimpl")

    def _check_hook_names(self, plugin: object) -> None:
        """A misspelled hook (``hami_discover_device``) fails loudly instead of never being called."""
        unknown = sorted(c.name for c in self.pm.get_hookcallers(plugin) or () if not c.has_spec())
        if unknown:
            raise BackendError(f"implements unknown hook(s) {', '.join(unknown)} (misspelled? see hami.plugin.hookspecs)")

    def _identity(self, plugin: object, name: str) -> BackendInfo | None:
        if not hasattr(plugin, "hami_backend"):
            return None  # a cross-cutting plugin: policies, auditing
        info = self.pm.subset_hook_caller("hami_backend", [p for p in self.pm.get_plugins() if p is not plugin])()
        return _expect(info[0] if info else None, BackendInfo, "hami_backend", name)

    def _claim(self, plugin: object, info: BackendInfo, name: str, distribution: str, version: str) -> None:
        if info.name in self._backends:
            other = self._backends[info.name][2]
            raise BackendError(f"backend name {info.name!r} is already taken by {other.distribution or other.name} {other.version}".rstrip())
        for vendor in info.vendors:
            if vendor in self._owners:
                other = self._backends[self._owners[vendor]][2]
                raise DuplicateVendorError(
                    f"vendor key {vendor!r} is claimed by both {other.distribution or other.name} {other.version} "
                    f"and {distribution or name} {version}; uninstall one or disable it with HAMI_DISABLED_BACKENDS"
                )
        for kind in info.kinds:
            for resource in kind.resources.all():
                owner = self.kind_for_resource(resource)
                if owner is not None:
                    raise BackendError(f"resource {resource!r} of {kind.vendor!r} is already served by vendor {owner.vendor!r}")

    def check_pending(self) -> None:
        """Fail loudly on hook implementations that match no spec."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise BackendError(str(exc)) from exc

    # ------------------------------------------------------------ what is loaded

    @property
    def backends(self) -> dict[str, BackendInfo]:
        return {name: info for name, (_, info, _) in self._backends.items()}

    @property
    def kinds(self) -> dict[str, DeviceKind]:
        return dict(self._kinds)

    def kind(self, vendor: str) -> DeviceKind:
        try:
            return self._kinds[vendor]
        except KeyError:
            raise BackendError(f"no installed backend owns vendor key {vendor!r} (installed: {', '.join(sorted(self._owners)) or 'none'})") from None

    def kind_for_resource(self, resource: str) -> DeviceKind | None:
        return self._resource_kinds.get(resource)

    def owner(self, vendor: str) -> BackendInfo:
        self.kind(vendor)
        return self._backends[self._owners[vendor]][1]

    def configure(self, backend: str, overrides: Mapping[str, Any]) -> None:
        """Overlay the operator's settings on a backend's ``default_config`` for every later call."""
        if backend not in self._backends:
            raise BackendError(f"cannot configure {backend!r}: not a loaded backend (loaded: {', '.join(sorted(self._backends)) or 'none'})")
        self._overrides[backend] = dict(overrides)
        self._configs.pop(backend, None)

    def config(self, backend: str) -> Mapping[str, Any]:
        """What the hooks of ``backend`` receive as ``config`` (built once per configuration: hooks are hot)."""
        found = self._configs.get(backend)
        if found is None:
            found = self._configs[backend] = frozen_map({**self._backends[backend][1].default_config, **self._overrides.get(backend, {})})
        return found

    # ------------------------------------------------------------ dispatch

    def _caller(self, hook: str, backend: str | None, *, cross_cutting: bool = True) -> Any:
        """``hook`` reaching only ``backend`` (None: no backend) and, if asked, the cross-cutting plugins."""
        key = (hook, backend or "", cross_cutting)
        caller = self._callers.get(key)
        if caller is not None:
            return caller
        with self._callers_lock:  # servers dispatch from many threads
            if key not in self._callers:
                keep = {id(self._backends[backend][0])} if backend else set()
                remove = [
                    p for p in self.pm.get_plugins()
                    if id(p) not in keep and (not cross_cutting or any(p is b for b, _, _ in self._backends.values()))
                ]
                self._callers[key] = self.pm.subset_hook_caller(hook, remove)
            return self._callers[key]

    def _open_call(self, hook: str, **kwargs: Any) -> list[Any]:
        """An open hook: each backend with its own config, then the cross-cutting plugins with none."""
        results = []
        for backend in self._backends:
            results.extend(self._caller(hook, backend, cross_cutting=False)(config=self.config(backend), **kwargs))
        results.extend(self._caller(hook, None)(config=frozen_map({}), **kwargs))
        return results

    def _vendor_call(self, hook: str, vendor: str, **kwargs: Any) -> Any:
        """A vendor hook: the owning backend and the cross-cutting plugins, with the owner's config."""
        owner = self.owner(vendor).name
        return self._caller(hook, owner)(config=self.config(owner), **kwargs)

    def discover(self, backend: str, node_name: str) -> list[PhysicalDevice]:
        info = self.backends[backend]
        found = self._caller("hami_discover_devices", backend, cross_cutting=False)(config=self.config(backend), node_name=node_name)
        devices = [d for batch in found for d in _expect_list(batch, PhysicalDevice, "hami_discover_devices", backend)]
        for device in devices:
            if device.vendor not in info.vendors:
                raise BackendError(f"hami_discover_devices for {backend} returned device {device.id!r} of vendor {device.vendor!r}, which it does not own")
        return devices

    def device_health(self, backend: str, devices: Sequence[PhysicalDevice]) -> list[HealthEvent]:
        batches = self._caller("hami_device_health", backend, cross_cutting=False)(devices=list(devices), config=self.config(backend))
        return [e for batch in batches for e in _expect_list(batch, HealthEvent, "hami_device_health", backend)]

    def node_annotations(self, backend: str, devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice]) -> dict[str, str]:
        """A backend's extra node annotations; the registration and handshake keys stay the core's."""
        found: dict[str, str] = {}
        caller = self._caller("hami_node_annotations", backend, cross_cutting=False)
        for part in caller(devices=list(devices), physical=list(physical), config=self.config(backend)):
            if part is not None:
                found.update(_expect(part, NodeAnnotations, "hami_node_annotations", backend).values)
        owned = {key for k in self._kinds.values() for key in attrs.astuple(k.annotations)}
        clash = sorted(owned & found.keys())
        if clash:
            raise BackendError(f"hami_node_annotations for {backend} writes {clash}, which the core writes itself")
        return found

    def select_devices(self, request: DeviceRequest, candidates: Sequence[DeviceUsage], node_annotations: Mapping[str, str], pod: Mapping[str, Any]) -> list[str] | None:
        """The owner's choice of ``request.count`` devices among ``candidates``, or None for the core's."""
        chosen = self._vendor_call("hami_select_devices", request.vendor, request=request, candidates=list(candidates), node_annotations=node_annotations, pod=pod)
        if chosen is None:
            return None
        ids = _expect_list(chosen, str, "hami_select_devices", request.vendor)
        allowed = {c.device.id for c in candidates}
        if ids and (len(ids) != request.count or len(set(ids)) != len(ids) or not set(ids) <= allowed):
            raise BackendError(f"hami_select_devices for {request.vendor} chose {ids}: expected {request.count} distinct ids among the candidates")
        return ids

    def split(self, device: PhysicalDevice) -> SchedulableDevice:
        result = self._vendor_call("hami_split_device", device.vendor, device=device)
        if result is None:
            return SchedulableDevice(
                id=device.id, vendor=device.vendor, type=device.type, count=1, memory=device.memory,
                cores=device.cores, index=device.index, numa=device.numa, healthy=device.healthy,
            )
        _expect(result, SchedulableDevice, "hami_split_device", device.vendor)
        if result.id != device.id or result.vendor != device.vendor:
            raise BackendError(f"hami_split_device for {device.vendor} changed the identity of device {device.id!r} to {result.id!r}/{result.vendor!r}")
        return result

    def container_requests(self, container: Mapping[str, Any], pod: Mapping[str, Any]) -> list[DeviceRequest]:
        subject = f"container {container.get('name')!r}"
        batches = self._open_call("hami_container_requests", container=container, pod=pod)
        requests = [r for batch in batches for r in _expect_list(batch, DeviceRequest, "hami_container_requests", subject)]
        vendors = [r.vendor for r in requests]
        for vendor in vendors:
            self.kind(vendor)
            if vendors.count(vendor) > 1:
                raise BackendError(f"hami_container_requests returned {vendors.count(vendor)} requests for vendor {vendor!r} in {subject}")
        return requests

    def mutate_container(self, container: Mapping[str, Any], pod: Mapping[str, Any]) -> ContainerPatch:
        limits: dict[str, str] = {}
        warnings: list[str] = []
        for patch in self._open_call("hami_mutate_container", container=container, pod=pod):
            if patch is None:
                continue
            _expect(patch, ContainerPatch, "hami_mutate_container", f"container {container.get('name')!r}")
            for name, value in patch.limits.items():
                if limits.get(name, value) != value:
                    raise BackendError(f"two plugins default {name!r} differently: {limits[name]!r} and {value!r}")
                limits[name] = value
            warnings.extend(patch.warnings)
        return ContainerPatch(limits=limits, warnings=warnings)

    def normalize(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> DeviceRequest:
        result = self._vendor_call("hami_normalize_request", request.vendor, request=request, device=device, pod=pod)
        if result is None:
            return request
        _expect(result, DeviceRequest, "hami_normalize_request", request.vendor)
        if result.vendor != request.vendor:
            raise BackendError(f"hami_normalize_request for {request.vendor} changed the vendor to {result.vendor!r}")
        return result

    def device_fits(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> str | None:
        reason = self._vendor_call("hami_device_fits", request.vendor, request=request, device=device, pod=pod)
        return None if reason is None else _expect(reason, str, "hami_device_fits", request.vendor)

    def policies(self) -> dict[tuple[str, str], PolicyInfo]:
        """Every scoring policy keyed by (level, name); asked once per set of plugins (scoring is hot)."""
        if self._policies is not None:
            return self._policies
        found: dict[tuple[str, str], PolicyInfo] = {}
        for batch in self.pm.hook.hami_scoring_policies():
            for policy in _expect_list(batch, PolicyInfo, "hami_scoring_policies", "plugins"):
                key = (policy.level, policy.name)
                if key in found:
                    raise BackendError(f"{policy.level} scoring policy {policy.name!r} is offered twice")
                found[key] = policy
        self._policies = found
        return found

    def _check_policy(self, level: str, policy: str) -> None:
        policies = self.policies()
        if (level, policy) not in policies:
            known = sorted(name for lvl, name in policies if lvl == level)
            raise ValidationError(f"unknown {level} scheduling policy {policy!r}; known: {', '.join(known)}")

    def score_node(self, policy: str, node: NodeUsage, requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> float:
        self._check_policy("node", policy)
        score = self.pm.hook.hami_score_node(policy=policy, node=node, requests=list(requests), pod=pod)
        return float(_expect(score, (int, float), "hami_score_node", f"policy {policy!r}"))

    def score_nodes(self, policy: str, nodes: Sequence[NodeUsage], requests: Sequence[DeviceRequest], pod: Mapping[str, Any]) -> list[float]:
        """One score per node, in bulk when the policy offers it, else node by node."""
        self._check_policy("node", policy)
        scores = self.pm.hook.hami_score_nodes(policy=policy, nodes=list(nodes), requests=list(requests), pod=pod)
        if scores is None:
            return [self.score_node(policy, node, requests, pod) for node in nodes]
        if not hasattr(scores, "__len__") or len(scores) != len(nodes):
            raise BackendError(f"hami_score_nodes for policy {policy!r} returned {len(scores) if hasattr(scores, '__len__') else scores!r} scores for {len(nodes)} nodes")
        return [float(x) for x in scores]

    def score_device(self, policy: str, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> float:
        self._check_policy("device", policy)
        score = self.pm.hook.hami_score_device(policy=policy, request=request, device=device, pod=pod)
        return float(_expect(score, (int, float), "hami_score_device", f"policy {policy!r}"))

    @staticmethod
    def _grants_vendor(grants: Sequence[Grant], hook: str) -> str:
        vendors = {g.vendor for g in grants}
        if len(vendors) != 1:
            raise HamiError(f"{hook} needs grants of exactly one vendor key, got {sorted(vendors)}")
        return vendors.pop()

    def container_edits(self, grants: Sequence[Grant], pod: Mapping[str, Any], container: Mapping[str, Any]) -> ContainerEdits:
        vendor = self._grants_vendor(grants, "hami_container_edits")
        edits = ContainerEdits()
        for part in self._vendor_call("hami_container_edits", vendor, grants=list(grants), pod=pod, container=container):
            if part is not None:
                edits = edits.merge(_expect(part, ContainerEdits, "hami_container_edits", vendor))
        owner = self.owner(vendor)
        # An operator who moves a backend's host directory (a vdev root, a hook path) allows it too.
        allowed = (*owner.host_paths, *self.config(owner.name).get("extra_host_paths", ()))
        outside = [p for p in edits.host_paths() if not _under_any(p, allowed)]
        if outside:
            raise BackendError(f"hami_container_edits for {vendor} exposes host path(s) {outside} outside the declared {list(allowed)}")
        return edits

    def prepare(self, grants: Sequence[Grant], pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
        vendor = self._grants_vendor(grants, "hami_prepare")
        self._vendor_call("hami_prepare", vendor, grants=list(grants), pod=pod, container=container)

    def release(self, grants: Sequence[Grant], pod: Mapping[str, Any], container: Mapping[str, Any]) -> None:
        vendor = self._grants_vendor(grants, "hami_release")
        self._vendor_call("hami_release", vendor, grants=list(grants), pod=pod, container=container)


def _under_any(path: str, prefixes: Iterable[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == os.path.normpath(p) or path.startswith(os.path.normpath(p).rstrip("/") + "/") for p in prefixes)


def load_backends(**kwargs: Any) -> BackendManager:
    """A manager with every installed backend loaded: what the servers and the CLI start with."""
    manager = BackendManager(**kwargs)
    manager.load_entry_points()
    return manager
