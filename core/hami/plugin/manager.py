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
Every failure inside a hook is re-raised typed and attributed (see :func:`hook_failure`):
``BackendRefused`` for a backend's own ``BackendError``, ``BackendCrashed`` for anything else,
``ContractError`` for a bad return value; errors about the user's input pass unchanged.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, cast

import attrs
import pluggy

from hami import __version__
from hami.backendkit.inventory import inventory_path
from hami.errors import (
    BackendCrashed,
    BackendError,
    BackendHookError,
    BackendLoadError,
    BackendRefused,
    ContractError,
    DuplicateVendorError,
    HamiError,
    ValidationError,
)
from hami.k8snames import is_annotation_key
from hami.plugin import ENTRY_POINT_GROUP, PROJECT, hookspecs
from hami.plugin.model import (
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    ContainerShare,
    DeviceKind,
    DeviceRequest,
    DeviceUsage,
    Enforcement,
    Grant,
    GrantedDevice,
    HealthEvent,
    NodeAnnotations,
    NodeContext,
    NodeUsage,
    PhysicalDevice,
    SchedulableDevice,
    UsageReport,
    frozen_map,
)
from hami.plugin.naming import renamed_info
from hami.plugin.policy import ClusterView, DevicePolicy, DeviceScoreContext, NodePolicy, Policy, ScoreContext
from hami.wire.annotations import ASSIGNED_NODE

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


DEFAULT_STATE_ROOT = Path("/var/lib/hami")
"""Where the node agent keeps per-backend state (``<root>/<backend>``) unless told otherwise."""


def _expect(value: Any, kind: type | tuple[type, ...], hook: str, subject: str) -> Any:
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ContractError(f"returned {value!r:.120}, expected {names}", backend=subject, hook=hook)
    return value


def _expect_list(values: Any, kind: type, hook: str, subject: str) -> list[Any]:
    if not isinstance(values, (list, tuple)):
        raise ContractError(f"returned {values!r:.120}, expected a list of {kind.__name__}", backend=subject, hook=hook)
    return [_expect(v, kind, hook, subject) for v in values]


def hook_failure(exc: BaseException, backend: str, hook: str) -> BaseException:
    """What a caller sees of ``exc`` raised inside ``hook`` of ``backend``: typed and named.

    Errors about the user's input (``RequestError``, ``QuantityError``, ``AnnotationError``,
    ``InventoryError``) pass unchanged: they already name the offending value and the servers map
    them to the user. A ``ValidationError`` means the backend built an impossible value (contract)."""
    if isinstance(exc, BackendHookError):
        return exc if exc.backend else type(exc)(exc.reason, backend=backend, hook=hook)
    if isinstance(exc, BackendLoadError):
        return exc
    if isinstance(exc, ValidationError):
        return ContractError(str(exc), backend=backend, hook=hook)
    if isinstance(exc, BackendError):
        return BackendRefused(str(exc), backend=backend, hook=hook)
    if isinstance(exc, HamiError):
        return exc
    return BackendCrashed(f"{type(exc).__name__}: {exc}", backend=backend, hook=hook)


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
        self._policies: dict[tuple[str, str], Policy] | None = None
        self._policy_owners: dict[tuple[str, str], str] = {}
        self._cluster: ClusterView | None = None
        self._overrides: dict[str, dict[str, Any]] = {}
        self._declared: dict[str, BackendInfo] = {}  # backend -> its info before resource_names renamed it
        self._configs: dict[str, Mapping[str, Any]] = {}
        self._callers: dict[tuple[str, str, bool], Any] = {}
        self._callers_lock = threading.Lock()
        if builtins:
            from hami.policies import BUILTIN_PLUGINS

            for name, plugin in BUILTIN_PLUGINS.items():
                self.register(plugin, name=name, distribution="hami", version=__version__, builtin=True)

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
                records.append(
                    self._failed(ep.name, dist_name, version, f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}", exc)
                )
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
        log.info(
            "event=backend_loaded backend=%s distribution=%s version=%s vendors=%s", label, distribution, version, ",".join(record.vendors)
        )
        return record

    def _failed(self, name: str, distribution: str, version: str, error: str, exc: Exception) -> BackendRecord:
        record = BackendRecord(name, distribution, version, "failed", error)
        self.records.append(record)
        log.warning("event=backend_failed backend=%s distribution=%s version=%s error=%r", name, distribution, version, error)
        if self.strict:
            if isinstance(exc, BackendLoadError):
                raise exc
            named = isinstance(exc, BackendHookError) and exc.backend
            raise BackendLoadError(error if named else f"backend {name!r} ({distribution or 'in-process'}): {error}") from exc
        return record

    @staticmethod
    def _check_unmarked(plugin: object) -> None:
        """A ``hami_*`` function without ``@hookimpl`` would be silently ignored by pluggy."""
        for attr in dir(plugin):
            marked = getattr(getattr(plugin, attr, None), f"{PROJECT}_impl", None) is not None
            if attr.startswith("hami_") and callable(getattr(plugin, attr, None)) and not marked:
                raise BackendLoadError(f"{attr} is not marked with @hami.hookimpl")

    def _check_hook_names(self, plugin: object) -> None:
        """A misspelled hook (``hami_discover_device``) fails loudly instead of never being called."""
        unknown = sorted(c.name for c in self.pm.get_hookcallers(plugin) or () if not c.has_spec())
        if unknown:
            raise BackendLoadError(f"implements unknown hook(s) {', '.join(unknown)} (misspelled? see hami.plugin.hookspecs)")

    def _identity(self, plugin: object, name: str) -> BackendInfo | None:
        if not hasattr(plugin, "hami_backend"):
            return None  # a cross-cutting plugin: policies, auditing
        info = self.pm.subset_hook_caller("hami_backend", [p for p in self.pm.get_plugins() if p is not plugin])()
        return cast(BackendInfo, _expect(info[0] if info else None, BackendInfo, "hami_backend", name))

    def _claim(self, plugin: object, info: BackendInfo, name: str | None, distribution: str, version: str) -> None:
        if info.name in self._backends:
            other = self._backends[info.name][2]
            raise BackendLoadError(
                f"backend name {info.name!r} is already taken by {other.distribution or other.name} {other.version}".rstrip()
            )
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
                    raise BackendLoadError(f"resource {resource!r} of {kind.vendor!r} is already served by vendor {owner.vendor!r}")

    def check_pending(self) -> None:
        """Fail loudly on hook implementations that match no spec."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise BackendLoadError(str(exc)) from exc

    # ------------------------------------------------------------ what is loaded

    @property
    def backends(self) -> dict[str, BackendInfo]:
        return {name: info for name, (_, info, _) in self._backends.items()}

    @property
    def kinds(self) -> dict[str, DeviceKind]:
        return dict(self._kinds)

    @property
    def pod_annotations(self) -> tuple[str, ...]:
        """Every loaded backend's declared allocation annotation keys (``BackendInfo.pod_annotations``):
        the admission webhook protects them like the core's own."""
        return tuple(sorted({key for _, info, _ in self._backends.values() for key in info.pod_annotations}))

    def kind(self, vendor: str) -> DeviceKind:
        try:
            return self._kinds[vendor]
        except KeyError:
            raise BackendError(
                f"no installed backend owns vendor key {vendor!r} (installed: {', '.join(sorted(self._owners)) or 'none'})"
            ) from None

    def kind_for_resource(self, resource: str) -> DeviceKind | None:
        return self._resource_kinds.get(resource)

    def owner(self, vendor: str) -> BackendInfo:
        self.kind(vendor)
        return self._backends[self._owners[vendor]][1]

    def configure(self, backend: str, overrides: Mapping[str, Any]) -> None:
        """Overlay the operator's settings on a backend's ``default_config`` for every later call."""
        if backend not in self._backends:
            raise BackendError(
                f"cannot configure {backend!r}: not a loaded backend (loaded: {', '.join(sorted(self._backends)) or 'none'})"
            )
        declared = self._declared.setdefault(backend, self._backends[backend][1])
        self._rename(backend, renamed_info(declared, {**declared.default_config, **overrides}))
        self._overrides[backend] = dict(overrides)
        self._configs.pop(backend, None)

    def _rename(self, backend: str, info: BackendInfo) -> None:
        """Serve ``backend``'s kinds under the names its ``resource_names`` setting gives (hami.plugin.naming)."""
        plugin, current, record = self._backends[backend]
        if info == current:
            return
        for kind in info.kinds:
            for resource in kind.resources.all():
                owner = self._resource_kinds.get(resource)
                if owner is not None and self._owners.get(owner.vendor) != backend:
                    raise ValidationError(f"backends.{backend}.resource_names: {resource!r} is already served by vendor {owner.vendor!r}")
        for kind in current.kinds:
            for resource in kind.resources.all():
                self._resource_kinds.pop(resource, None)
        for kind in info.kinds:
            self._kinds[kind.vendor] = kind
            self._resource_kinds.update((resource, kind) for resource in kind.resources.all())
        renamed = attrs.evolve(record, info=info)
        self.records = [renamed if r is record else r for r in self.records]
        self._backends[backend] = (plugin, info, renamed)
        log.info("event=backend_resources_renamed backend=%s resources=%s", backend, ",".join(info.resource_names))

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
                    p
                    for p in self.pm.get_plugins()
                    if id(p) not in keep and (not cross_cutting or any(p is b for b, _, _ in self._backends.values()))
                ]
                self._callers[key] = self.pm.subset_hook_caller(hook, remove)
            return self._callers[key]

    def _label(self, plugin: object, fallback: str) -> str:
        for name, (owned, _, _) in self._backends.items():
            if owned is plugin:
                return name
        return fallback

    def _culprit(self, hook: str, exc: BaseException, default: str) -> str:
        """The plugin whose ``hook`` implementation ``exc`` came out of (the outermost such frame of
        its traceback), else ``default``: a vendor call also reaches cross-cutting plugins."""
        owners: dict[Any, set[str]] = {}
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            code = getattr(getattr(impl.function, "__func__", impl.function), "__code__", None)
            if code is not None:
                owners.setdefault(code, set()).add(self._label(impl.plugin, impl.plugin_name))
        tb = exc.__traceback__
        while tb is not None:
            names = owners.get(tb.tb_frame.f_code)
            if names:
                return default if default in names else sorted(names)[0]
            tb = tb.tb_next
        return default

    def _invoke(self, hook: str, backend: str | None, kwargs: Mapping[str, Any], *, cross_cutting: bool = True) -> Any:
        """Call ``hook`` on ``backend`` (and the cross-cutting plugins); a failure comes out typed and named."""
        try:
            return self._caller(hook, backend, cross_cutting=cross_cutting)(**kwargs)
        except Exception as exc:
            failure = hook_failure(exc, self._culprit(hook, exc, backend or "cross-cutting plugins"), hook)
            if failure is exc:
                raise
            raise failure from exc

    def _open_results(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """An open hook: each backend with its own config, then the cross-cutting plugins with none;
        every result paired with who returned it."""
        results: list[tuple[str, Any]] = []
        for backend in self._backends:
            results.extend(
                (backend, r) for r in self._invoke(hook, backend, {"config": self.config(backend), **kwargs}, cross_cutting=False)
            )
        results.extend(("cross-cutting plugins", r) for r in self._invoke(hook, None, {"config": frozen_map({}), **kwargs}))
        return results

    def _open_call(self, hook: str, **kwargs: Any) -> list[Any]:
        return [result for _, result in self._open_results(hook, **kwargs)]

    def _vendor_call(self, hook: str, vendor: str, **kwargs: Any) -> Any:
        """A vendor hook: the owning backend and the cross-cutting plugins, with the owner's config."""
        owner = self.owner(vendor).name
        return self._invoke(hook, owner, {"config": self.config(owner), **kwargs})

    # ------------------------------------------------------------ node side

    def node_context(self, backend: str, node_name: str, *, state_root: Path | str | None = None) -> NodeContext:
        """What the node-side hooks of ``backend`` get as ``node``: simulated when an inventory is
        configured (:func:`hami.backendkit.inventory.inventory_path`, the one place that decides)."""
        config = self.config(backend)
        root = Path(state_root) if state_root is not None else DEFAULT_STATE_ROOT
        return NodeContext(name=node_name, simulated=inventory_path(config) is not None, config=config, state_dir=root / backend)

    def _context(self, backend: str, node: NodeContext | str) -> NodeContext:
        """``node`` as given (the agent builds one per backend), or the default context of a node name."""
        return self.node_context(backend, node) if isinstance(node, str) else node

    def discover(self, backend: str, node: NodeContext | str, *, unadvertised: bool = False) -> list[PhysicalDevice]:
        """``backend``'s devices on ``node`` (a context, or just the node's name); the devices it saw
        but cannot advertise (``advertised=False``) only when asked, for listing them."""
        info = self.backends[backend]
        context = self._context(backend, node)
        kwargs = {"config": self.config(backend), "node_name": context.name, "node": context}
        found = self._invoke("hami_discover_devices", backend, kwargs, cross_cutting=False)
        devices = [d for batch in found for d in _expect_list(batch, PhysicalDevice, "hami_discover_devices", backend)]
        for device in devices:
            if device.vendor not in info.vendors:
                raise ContractError(
                    f"returned device {device.id!r} of vendor {device.vendor!r}, which it does not own",
                    backend=backend,
                    hook="hami_discover_devices",
                )
        return devices if unadvertised else [d for d in devices if d.advertised]

    def device_health(self, backend: str, devices: Sequence[PhysicalDevice], node: NodeContext | str = "") -> list[HealthEvent]:
        context = self._context(backend, node or "unknown")
        batches = self._invoke(
            "hami_device_health", backend, {"devices": list(devices), "config": self.config(backend), "node": context}, cross_cutting=False
        )
        return [e for batch in batches for e in _expect_list(batch, HealthEvent, "hami_device_health", backend)]

    def enforcement(self, backend: str, devices: Sequence[PhysicalDevice], node: NodeContext | str = "") -> list[Enforcement]:
        """``backend``'s report on what enforces its share limits on ``node`` (``hami_enforcement``);
        a report for a vendor it does not own is a contract breach."""
        context = self._context(backend, node or "unknown")
        kwargs = {"devices": list(devices), "config": self.config(backend), "node": context}
        batches = self._invoke("hami_enforcement", backend, kwargs, cross_cutting=False)
        reports = [e for batch in batches for e in _expect_list(batch, Enforcement, "hami_enforcement", backend)]
        vendors = self.backends[backend].vendors
        for report in reports:
            if report.vendor not in vendors:
                raise ContractError(
                    f"reported enforcement of vendor {report.vendor!r}, which it does not own", backend=backend, hook="hami_enforcement"
                )
        return reports

    def sample_usage(
        self, backend: str, devices: Sequence[PhysicalDevice], containers: Sequence[ContainerShare], node: NodeContext | str = ""
    ) -> UsageReport:
        """``backend``'s usage sample of its ``devices`` and the ``containers`` granted them, merged;
        a figure for a device or container it was not given is a contract breach."""
        context = self._context(backend, node or "unknown")
        kwargs = {"devices": list(devices), "containers": list(containers), "config": self.config(backend), "node": context}
        parts = [p for p in self._invoke("hami_sample_usage", backend, kwargs, cross_cutting=False) if p is not None]
        reports = [_expect(p, UsageReport, "hami_sample_usage", backend) for p in parts]
        merged = UsageReport(
            devices=[d for r in reports for d in r.devices],
            shares=[s for r in reports for s in r.shares],
            skipped=[k for r in reports for k in r.skipped],
        )
        ids = {d.id for d in devices}
        owners = {(c.namespace, c.pod, c.container) for c in containers}
        for load in merged.devices:
            if load.device_id not in ids:
                raise ContractError(
                    f"reported usage of device {load.device_id!r}, which it was not asked about", backend=backend, hook="hami_sample_usage"
                )
        for share in merged.shares:
            if share.device_id not in ids or (share.namespace, share.pod, share.container) not in owners:
                raise ContractError(
                    f"reported usage of {share.namespace}/{share.pod}[{share.container}] on {share.device_id!r}, which it was not asked about",
                    backend=backend,
                    hook="hami_sample_usage",
                )
        return merged

    def node_annotations(self, backend: str, devices: Sequence[SchedulableDevice], physical: Sequence[PhysicalDevice]) -> dict[str, str]:
        """A backend's extra node annotations; the registration and handshake keys stay the core's."""
        found: dict[str, str] = {}
        kwargs = {"devices": list(devices), "physical": list(physical), "config": self.config(backend)}
        for part in self._invoke("hami_node_annotations", backend, kwargs, cross_cutting=False):
            if part is not None:
                found.update(_expect(part, NodeAnnotations, "hami_node_annotations", backend).values)
        owned = {key for k in self._kinds.values() for key in attrs.astuple(k.annotations)}
        clash = sorted(owned & found.keys())
        if clash:
            raise ContractError(f"writes {clash}, which the core writes itself", backend=backend, hook="hami_node_annotations")
        return found

    def select_devices(
        self, request: DeviceRequest, candidates: Sequence[DeviceUsage], node_annotations: Mapping[str, str], pod: Mapping[str, Any]
    ) -> list[str] | None:
        """The owner's choice of ``request.count`` devices among ``candidates``, or None for the core's."""
        chosen = self._vendor_call(
            "hami_select_devices", request.vendor, request=request, candidates=list(candidates), node_annotations=node_annotations, pod=pod
        )
        if chosen is None:
            return None
        ids = _expect_list(chosen, str, "hami_select_devices", request.vendor)
        allowed = {c.device.id for c in candidates}
        if ids and (len(ids) != request.count or len(set(ids)) != len(ids) or not set(ids) <= allowed):
            raise ContractError(
                f"chose {ids}: expected {request.count} distinct ids among the candidates",
                backend=self.owner(request.vendor).name,
                hook="hami_select_devices",
            )
        return ids

    def node_capacity_devices(self, vendor: str, node: Mapping[str, Any]) -> tuple[SchedulableDevice, ...]:
        """The owner's reading of a node registered without a device-list annotation (its capacity);
        () when it has none. Devices of another vendor are a contract breach."""
        owner = self.owner(vendor).name
        found = self._invoke("hami_node_capacity_devices", owner, {"config": self.config(owner), "vendor": vendor, "node": node})
        if not found:
            return ()
        devices = tuple(_expect_list(found, SchedulableDevice, "hami_node_capacity_devices", vendor))
        for device in devices:
            if device.vendor != vendor:
                raise ContractError(
                    f"returned device {device.id!r} of vendor {device.vendor!r} for {vendor!r}",
                    backend=owner,
                    hook="hami_node_capacity_devices",
                )
        return devices

    def split(self, device: PhysicalDevice, node: NodeContext | str | None = None) -> SchedulableDevice:
        """``device``'s schedulable capacity on ``node`` (a context or a name; per-node settings need it)."""
        owner = self.owner(device.vendor).name
        result = self._vendor_call("hami_split_device", device.vendor, device=device, node=self._context(owner, node or "unknown"))
        if result is None:
            return SchedulableDevice(
                id=device.id,
                vendor=device.vendor,
                type=device.type,
                count=1,
                memory=device.memory,
                cores=device.cores,
                index=device.index,
                numa=device.numa,
                healthy=device.healthy,
            )
        _expect(result, SchedulableDevice, "hami_split_device", owner)
        if result.id != device.id or result.vendor != device.vendor:
            raise ContractError(
                f"changed the identity of device {device.id!r} to {result.id!r}/{result.vendor!r}", backend=owner, hook="hami_split_device"
            )
        return cast(SchedulableDevice, result)

    def container_requests(self, container: Mapping[str, Any], pod: Mapping[str, Any]) -> list[DeviceRequest]:
        subject = f"container {container.get('name')!r}"
        batches = self._open_results("hami_container_requests", container=container, pod=pod)
        requests = [r for who, batch in batches for r in _expect_list(batch, DeviceRequest, "hami_container_requests", who)]
        vendors = [r.vendor for r in requests]
        for vendor in vendors:
            self.kind(vendor)
            if vendors.count(vendor) > 1:
                raise BackendError(f"hami_container_requests returned {vendors.count(vendor)} requests for vendor {vendor!r} in {subject}")
        return requests

    def mutate_container(self, container: Mapping[str, Any], pod: Mapping[str, Any]) -> ContainerPatch:
        limits: dict[str, str] = {}
        warnings: list[str] = []
        remove: list[str] = []
        for patch in self._open_call("hami_mutate_container", container=container, pod=pod):
            if patch is None:
                continue
            _expect(patch, ContainerPatch, "hami_mutate_container", f"container {container.get('name')!r}")
            for name, value in patch.limits.items():
                if limits.get(name, value) != value:
                    raise BackendError(f"two plugins default {name!r} differently: {limits[name]!r} and {value!r}")
                limits[name] = value
            warnings.extend(patch.warnings)
            remove.extend(name for name in patch.remove if name not in remove)
        return ContainerPatch(limits=limits, warnings=warnings, remove=[name for name in remove if name not in limits])

    def normalize(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> DeviceRequest:
        result = self._vendor_call("hami_normalize_request", request.vendor, request=request, device=device, pod=pod)
        if result is None:
            return request
        _expect(result, DeviceRequest, "hami_normalize_request", self.owner(request.vendor).name)
        if result.vendor != request.vendor:
            raise ContractError(
                f"changed the vendor {request.vendor!r} to {result.vendor!r}",
                backend=self.owner(request.vendor).name,
                hook="hami_normalize_request",
            )
        return cast(DeviceRequest, result)

    def device_fits(self, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any]) -> str | None:
        reason = self._vendor_call("hami_device_fits", request.vendor, request=request, device=device, pod=pod)
        return None if reason is None else _expect(reason, str, "hami_device_fits", request.vendor)

    # ------------------------------------------------------------ scoring policies

    @property
    def cluster(self) -> ClusterView:
        """The cluster view of scoring calls that bring none: the backends' predicate, no host, no seed."""
        if self._cluster is None:
            self._cluster = ClusterView(device_fits=self.device_fits)
        return self._cluster

    def policies(self) -> dict[tuple[str, str], Policy]:
        """Every scoring policy keyed by (level, name); asked once per set of plugins (scoring is hot)."""
        if self._policies is not None:
            return self._policies
        found: dict[tuple[str, str], Policy] = {}
        owners: dict[tuple[str, str], str] = {}
        for impl in self.pm.hook.hami_policies.get_hookimpls():  # registration order
            plugin = impl.plugin_name
            try:
                batch = impl.function()
            except Exception as exc:
                raise hook_failure(exc, plugin, "hami_policies") from exc
            for policy in _expect_list(batch, Policy, "hami_policies", plugin):
                if not isinstance(policy, (NodePolicy, DevicePolicy)):
                    raise ContractError(f"offered {policy!r}: subclass NodePolicy or DevicePolicy", backend=plugin, hook="hami_policies")
                try:
                    info = policy.info
                except (ValidationError, AttributeError) as exc:
                    raise ContractError(f"offered a bad policy {policy!r}: {exc}", backend=plugin, hook="hami_policies") from exc
                key = (info.level, info.name)
                if key in found:
                    raise BackendLoadError(
                        f"{info.level} scoring policy {info.name!r} is offered twice: by plugin {owners[key]!r} and by plugin {plugin!r}"
                    )
                found[key], owners[key] = policy, plugin
        self._policies, self._policy_owners = found, owners
        return found

    def policy(self, level: str, name: str) -> Policy:
        """The policy called ``name`` at ``level``; a ValidationError listing the known names otherwise."""
        policies = self.policies()
        found = policies.get((level, name))
        if found is None:
            known = sorted(n for lvl, n in policies if lvl == level)
            raise ValidationError(f"unknown {level} scheduling policy {name!r}; known: {', '.join(known)}")
        return found

    def _policy_where(self, policy: Policy, method: str) -> tuple[str, str]:
        """(plugin, "node policy 'x' score_node"): where a policy failure happened, for the error."""
        return self._policy_owners.get((policy.level, policy.name), "?"), f"{policy.level} policy {policy.name!r} {method}"

    def _policy_broke(self, policy: Policy, method: str, reason: str) -> ContractError:
        plugin, where = self._policy_where(policy, method)
        return ContractError(reason, backend=plugin, hook=where)

    def _policy_raised(self, policy: Policy, method: str, exc: Exception) -> BaseException:
        """A policy's exception, named; a RequestError (a bad pod annotation) stays the pod's."""
        plugin, where = self._policy_where(policy, method)
        return hook_failure(exc, plugin, where)

    def _score(self, policy: Policy, method: str, score: Any) -> float:
        if isinstance(score, (int, float)) and not isinstance(score, bool) and score == score:  # NaN would not sort
            return float(score)
        raise self._policy_broke(policy, method, f"returned {score!r:.120}, expected a number")

    def score_node(
        self, policy: str, node: NodeUsage, requests: Sequence[DeviceRequest], pod: Mapping[str, Any], cluster: ClusterView | None = None
    ) -> float:
        chosen = cast(NodePolicy, self.policy("node", policy))
        context = ScoreContext(pod, tuple(requests), cluster or self.cluster)
        try:
            score = chosen.score_node(node, context)
        except Exception as exc:
            raise self._policy_raised(chosen, "score_node", exc) from exc
        return self._score(chosen, "score_node", score)

    def score_nodes(
        self,
        policy: str,
        nodes: Sequence[NodeUsage],
        requests: Sequence[DeviceRequest],
        pod: Mapping[str, Any],
        cluster: ClusterView | None = None,
    ) -> list[float]:
        """One score per node, in bulk when the policy offers it (else node by node, the default)."""
        chosen = cast(NodePolicy, self.policy("node", policy))
        context = ScoreContext(pod, tuple(requests), cluster or self.cluster)
        try:
            scores = chosen.score_nodes(list(nodes), context)
        except Exception as exc:
            raise self._policy_raised(chosen, "score_nodes", exc) from exc
        if not hasattr(scores, "__len__") or len(scores) != len(nodes):
            got = len(scores) if hasattr(scores, "__len__") else f"{scores!r:.80}, not"
            raise self._policy_broke(chosen, "score_nodes", f"returned {got} scores for {len(nodes)} nodes")
        try:
            out = [float(x) for x in scores]
        except (TypeError, ValueError):
            raise self._policy_broke(chosen, "score_nodes", f"returned {scores!r:.120}, expected numbers") from None
        total = sum(out)
        if total != total and any(x != x for x in out):  # one C-speed sum per call: NaN would not sort
            raise self._policy_broke(chosen, "score_nodes", "returned NaN scores")
        return out

    def score_device(
        self, policy: str, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], cluster: ClusterView | None = None
    ) -> float:
        chosen = cast(DevicePolicy, self.policy("device", policy))
        context = DeviceScoreContext(pod, request, cluster or self.cluster)
        try:
            score = chosen.score_device(device, context)
        except Exception as exc:
            raise self._policy_raised(chosen, "score_device", exc) from exc
        return self._score(chosen, "score_device", score)

    def refuse_device(
        self, policy: str, request: DeviceRequest, device: DeviceUsage, pod: Mapping[str, Any], cluster: ClusterView | None = None
    ) -> str | None:
        """Why device policy ``policy`` keeps ``device`` from ``request`` (None: it may be scored)."""
        chosen = cast(DevicePolicy, self.policy("device", policy))
        context = DeviceScoreContext(pod, request, cluster or self.cluster)
        try:
            reason = chosen.refuse(device, context)
        except Exception as exc:
            raise self._policy_raised(chosen, "refuse", exc) from exc
        if reason is not None and not (isinstance(reason, str) and reason):
            raise self._policy_broke(chosen, "refuse", f"returned {reason!r:.120}, expected a reason or None")
        return reason

    @staticmethod
    def _grants_vendor(grants: Sequence[Grant], hook: str) -> str:
        vendors = {g.vendor for g in grants}
        if len(vendors) != 1:
            raise HamiError(f"{hook} needs grants of exactly one vendor key, got {sorted(vendors)}")
        return vendors.pop()

    def granted(self, grants: Sequence[Grant], node: NodeContext | str, *, missing_ok: bool = False) -> list[GrantedDevice]:
        """The grants with their devices, discovered and split on ``node`` now: for callers that do
        not hold the node's discovery (the agent passes its own). A grant of a device not on the node
        is a BackendRefused naming it, or left out with ``missing_ok`` (release of a vanished device)."""
        if not grants:
            return []
        owner = self.owner(self._grants_vendor(grants, "granted")).name
        context = self._context(owner, node)
        found = {d.id: d for d in self.discover(owner, context)}
        out = []
        for grant in grants:
            device = found.get(grant.id)
            if device is None:
                if missing_ok:
                    continue
                raise BackendRefused(
                    f"granted device {grant.id!r} is not on node {context.name!r} (found: {', '.join(sorted(found)) or 'none'})",
                    backend=owner,
                )
            out.append(GrantedDevice(grant, device, self.split(device, context)))
        return out

    def _runtime(
        self,
        hook: str,
        grants: Sequence[Grant],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        node: NodeContext | str | None,
        devices: Sequence[GrantedDevice] | None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        vendor = self._grants_vendor(grants, hook)
        owner = self.owner(vendor).name
        context = self._context(owner, node if node is not None else _assigned_node(pod))
        plugin = self._backends[owner][0]
        wants = any(i.plugin is plugin and "devices" in i.argnames for i in getattr(self.pm.hook, hook).get_hookimpls())
        if devices is None and not wants:
            devices = []  # nobody asks for them: do not discover for nothing
        elif devices is None and node is not None:  # the node is known: find the devices there
            devices = self.granted(grants, context, missing_ok=missing_ok)
        elif devices is None:  # not even the node (tests, tools): best effort
            try:
                devices = self.granted(grants, context, missing_ok=True)
            except HamiError as exc:
                log.warning("event=granted_devices_unknown hook=%s node=%s error=%r", hook, context.name, str(exc))
                devices = []
        elif any(d.grant not in grants for d in devices) or (not missing_ok and len(devices) != len(grants)):
            raise HamiError(f"{hook}: the devices {[d.id for d in devices]} are not the grants {[g.id for g in grants]}")
        return self._vendor_call(hook, vendor, grants=list(grants), devices=list(devices), pod=pod, container=container, node=context)

    def container_edits(
        self,
        grants: Sequence[Grant],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        node: NodeContext | str | None = None,
        devices: Sequence[GrantedDevice] | None = None,
    ) -> ContainerEdits:
        """The merged edits for ``grants``; ``node``/``devices`` as the agent knows them (else found now)."""
        vendor = self._grants_vendor(grants, "hami_container_edits")
        owner = self.owner(vendor)
        edits = ContainerEdits()
        for part in self._runtime("hami_container_edits", grants, pod, container, node, devices):
            if part is not None:
                edits = edits.merge(_expect(part, ContainerEdits, "hami_container_edits", owner.name))
        # An operator who moves a backend's host directory (a vdev root, a hook path) allows it too.
        allowed = (*owner.host_paths, *self.config(owner.name).get("extra_host_paths", ()))
        outside = [p for p in edits.host_paths() if not _under_any(p, allowed)]
        if outside:
            raise ContractError(
                f"exposes host path(s) {outside} outside the declared {list(allowed)}", backend=owner.name, hook="hami_container_edits"
            )
        stray = [
            (p.device_index, p.device) for p in edits.partitions if p.device_index >= len(grants) or grants[p.device_index].id != p.device
        ]
        if stray:  # the agent writes these onto the pod; one naming another device would mislead every reader
            raise ContractError(
                f"reports partition instances (device_index, device) {stray} that are not among the grants {[g.id for g in grants]}",
                backend=owner.name,
                hook="hami_container_edits",
            )
        return edits

    def prepare(
        self,
        grants: Sequence[Grant],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        node: NodeContext | str | None = None,
        devices: Sequence[GrantedDevice] | None = None,
    ) -> None:
        self._runtime("hami_prepare", grants, pod, container, node, devices)

    def release(
        self,
        grants: Sequence[Grant],
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        node: NodeContext | str | None = None,
        devices: Sequence[GrantedDevice] | None = None,
    ) -> None:
        self._runtime("hami_release", grants, pod, container, node, devices, missing_ok=True)

    # ------------------------------------------------------------ allocation (scheduler)

    def allocation_annotations(
        self, vendor: str, containers: Sequence[Sequence[Grant]], devices: Mapping[str, SchedulableDevice], pod: Mapping[str, Any]
    ) -> dict[str, str]:
        """What ``vendor``'s backend adds to the pod beside an allocation; never a key the core writes."""
        owner = self.owner(vendor).name
        found: dict[str, str] = {}
        kwargs = {"vendor": vendor, "containers": [list(c) for c in containers], "devices": devices, "pod": pod}
        for part in self._invoke("hami_allocation_annotations", owner, {"config": self.config(owner), **kwargs}):
            if part is None:
                continue
            values = _expect(part, Mapping, "hami_allocation_annotations", owner)
            bad = sorted(str(k) for k, v in values.items() if not isinstance(k, str) or not is_annotation_key(k) or not isinstance(v, str))
            if bad:
                raise ContractError(
                    f"returned {bad}: annotations must map valid keys to strings", backend=owner, hook="hami_allocation_annotations"
                )
            found.update(values)
        core = {key for k in self._kinds.values() for key in attrs.astuple(k.annotations)}
        clash = sorted(k for k in found if k in core or k.startswith("hami.io/vgpu-") or k.startswith("hami.io/bind-"))
        if clash:
            raise ContractError(f"writes {clash}, which the core writes itself", backend=owner, hook="hami_allocation_annotations")
        info = self._backends[owner][1]
        undeclared = sorted(k for k in found if not info.writes_pod_annotation(k))
        if undeclared:  # the webhook protects only what is declared: an undeclared key could be forged by the pod owner
            raise ContractError(
                f"writes {undeclared}, not declared in BackendInfo.pod_annotations ({', '.join(info.pod_annotations) or 'none'})",
                backend=owner,
                hook="hami_allocation_annotations",
            )
        return found


def _assigned_node(pod: Mapping[str, Any]) -> str:
    """The node a pod was scheduled to by hami (``hami.io/vgpu-node``), for callers without a node context."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ASSIGNED_NODE) or os.environ.get("NODE_NAME") or "unknown")


def _under_any(path: str, prefixes: Iterable[str]) -> bool:
    path = os.path.normpath(path)
    return any(path == os.path.normpath(p) or path.startswith(os.path.normpath(p).rstrip("/") + "/") for p in prefixes)


def load_backends(**kwargs: Any) -> BackendManager:
    """A manager with every installed backend loaded: what the servers and the CLI start with."""
    manager = BackendManager(**kwargs)
    manager.load_entry_points()
    return manager
