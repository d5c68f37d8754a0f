"""ResourceQuota on shared-device resources (``limits.acme.com/gpumem``…), enforced at admission.

kube-apiserver's own quota admission only counts ``requests.<extended resource>`` and charges a
container what it writes. A device share is different: ``acme.com/gpumem: 3000`` with
``acme.com/gpu: 2`` takes 3000 MiB on *each* of two devices. So, as in HAMi, the webhook enforces
``limits.<resource>`` itself for every resource of an installed backend:

- a per-device resource (memory, memory percentage, cores) is charged value × the container's device
  count; any other resource (the count, an alias, a priority) is charged as written;
- a pod is charged like Kubernetes charges pod requests: the sum over app containers and sidecars
  (init containers with ``restartPolicy: Always``), or the largest init container plus the sidecars
  started before it, whichever is larger;
- usage is recomputed from the namespace's non-terminated pods on every admission (nobody maintains
  ``status.used`` for these keys); quota scopes and scope selectors are honoured;
- admission *reserves* what it admits (:func:`reserve_quota`): check and reservation happen under one
  lock per namespace, and a pod admitted but not yet in the pod list counts through its reservation.
  The webhook writes the reservation's token into the pod (``hami.io/quota-reservation``); the
  reservation ends when a listed pod carries the token (the list counts it from then on) or after
  :data:`RESERVATION_TTL` seconds (a pod refused after us by another admission step). Where they are
  kept is pluggable (:class:`ReservationStore`): in the process (:class:`QuotaReservations`: tests,
  the simulator) or in the API server (:class:`hami.webhook.reservations.LeaseReservations`: one
  Lease per namespace, written with a resourceVersion precondition, so every webhook replica and a
  restarted one sees every reservation; docs/webhook.md says why not ``status.used``).

Messages use kube-apiserver's wording: ``exceeded quota: q1, requested: limits.acme.com/gpumem=6000,
used: limits.acme.com/gpumem=4000, limited: limits.acme.com/gpumem=8000``.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from hami.backendkit.limits import container_resources
from hami.errors import HamiError, QuantityError
from hami.wire.quantity import format_quantity, parse_quantity

if TYPE_CHECKING:
    import kubernetes.client

    from hami.plugin.manager import BackendManager

log = logging.getLogger(__name__)

QUOTA_PREFIX = "limits."
RESERVATION_ANNOTATION = "hami.io/quota-reservation"
"""Pod annotation the webhook sets to the token of the quota reservation it made for the pod."""
RESERVATION_TTL = 60.0
"""Seconds a reservation counts when no listed pod carries its token (longer than an admission chain takes)."""
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_LIST_PAGE = 500

Pod = Mapping[str, Any]


class QuotaError(HamiError):
    """The quotas or pods of a namespace could not be read (the API server failed us)."""


class QuotaSource(Protocol):
    """Where admission reads a namespace's ResourceQuotas and pods, as JSON-shaped dicts."""

    def resource_quotas(self, namespace: str) -> list[Mapping[str, Any]]: ...

    def pods(self, namespace: str) -> list[Mapping[str, Any]]: ...


@attrs.frozen
class ScopeFacts:
    """What quota scopes and scope selectors look at in a pod, so a reservation can be matched
    against quotas without the pod itself (a shared reservation record keeps only these)."""

    terminating: bool = False
    best_effort: bool = True
    priority_class: str | None = None
    cross_namespace_affinity: bool = False

    @classmethod
    def of(cls, pod: Pod) -> ScopeFacts:
        spec = pod.get("spec") or {}
        if not isinstance(spec, Mapping):
            spec = {}
        return cls(_is_terminating(spec), _is_best_effort(spec), spec.get("priorityClassName") or None, _cross_namespace_affinity(spec))


@attrs.frozen
class Reservation:
    """One admitted pod's hold on its namespace's quotas until the pod list shows it or ``expires``
    (the store's clock: wall-clock seconds where replicas share it)."""

    pod: str
    charge: Mapping[str, Decimal] = attrs.field(hash=False)
    scope: ScopeFacts
    expires: float
    seen: float | None = None
    """When a writer first found the pod listed (kept ``seen_grace`` seconds so a replica retrying
    on an older pod list still counts it), or None."""


@attrs.frozen
class Held:
    """A store's reservations of one namespace as read, with the version a write must still find."""

    entries: Mapping[str, Reservation] = attrs.field(hash=False)
    version: str | None = None


class ReservationStore(Protocol):
    """Where reservations live; :func:`reserve_quota` reads, decides, then commits, and starts over
    (at most ``attempts`` times) when :meth:`commit` finds the record changed since :meth:`load`."""

    ttl: float
    attempts: int
    seen_grace: float
    """Seconds an entry whose pod was listed stays in the record; a retry reuses its pod list while
    it is younger than half of this (0: no reuse, a listed pod's entry is dropped at once)."""
    clock: Callable[[], float]

    def lock(self, namespace: str) -> threading.Lock: ...

    def load(self, namespace: str, fresh: bool) -> Held: ...

    def commit(self, namespace: str, held: Held, entries: Mapping[str, Reservation]) -> bool: ...

    def in_flight(self, namespace: str, listed: Iterable[Mapping[str, Any]]) -> list[Reservation]:
        """The reservations still counting against ``listed`` (leak checks, tests)."""
        ...

    def count(self, namespace: str) -> int: ...


class QuotaReservations:
    """In-flight quota reservations of one webhook process, per namespace, with the lock that makes
    check-and-reserve atomic for that namespace (one replica only: nothing is shared)."""

    attempts = 1
    seen_grace = 0.0

    def __init__(self, ttl: float = RESERVATION_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._pending: dict[str, dict[str, Reservation]] = {}  # namespace -> token -> reservation

    def lock(self, namespace: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(namespace, threading.Lock())

    def load(self, namespace: str, fresh: bool) -> Held:
        return Held(dict(self._pending.get(namespace, {})))

    def commit(self, namespace: str, held: Held, entries: Mapping[str, Reservation]) -> bool:
        self._pending[namespace] = dict(entries)  # under lock(namespace): nothing changed since load
        return True

    def in_flight(self, namespace: str, listed: Iterable[Mapping[str, Any]]) -> list[Reservation]:
        """The reservations not yet in ``listed`` and not expired. Call under :meth:`lock`."""
        return list(live_reservations(self.load(namespace, True).entries, listed, self.clock()).values())

    def count(self, namespace: str) -> int:
        return len(self._pending.get(namespace, {}))


def live_reservations(entries: Mapping[str, Reservation], listed: Iterable[Mapping[str, Any]], now: float) -> dict[str, Reservation]:
    """The entries still in flight: not expired by ``now``, their pod neither in ``listed`` (the list
    counts that pod, whatever its phase) nor ever seen listed by a writer."""
    tokens = _tokens(listed)
    return {token: r for token, r in entries.items() if token not in tokens and r.seen is None and r.expires > now}


def _tokens(listed: Iterable[Mapping[str, Any]]) -> set[Any]:
    return {((p.get("metadata") or {}).get("annotations") or {}).get(RESERVATION_ANNOTATION) for p in listed}


def settle(
    entries: Mapping[str, Reservation], listed: Iterable[Mapping[str, Any]], now: float, grace: float, list_after_read: bool
) -> tuple[dict[str, Reservation], dict[str, Reservation]]:
    """(the entries that count, the entries to write back) given a pod list.

    An entry whose pod is listed does not count (the list does) and is kept, marked seen, for ``grace``
    seconds. A seen entry whose pod is not listed counts only when the list may predate the mark (a
    list reused from before this read): a list taken after the read that holds the mark would show the
    pod unless it is gone. Expired entries, and seen ones past ``grace``, are dropped: their pods are
    in any list younger than ``grace`` (or gone)."""
    tokens = _tokens(listed)
    counted: dict[str, Reservation] = {}
    kept: dict[str, Reservation] = {}
    for token, r in entries.items():
        if r.expires <= now or (r.seen is not None and r.seen + grace <= now):
            continue
        if token in tokens:
            if grace > 0:
                kept[token] = r if r.seen is not None else attrs.evolve(r, seen=now)
            continue
        kept[token] = r
        if r.seen is None or not list_after_read:
            counted[token] = r
    return counted, kept


class StaticQuotaSource:
    """Fixed quotas and pods (the simulator, unit tests): ``{namespace: [objects]}``."""

    def __init__(
        self, quotas: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, pods: Mapping[str, Sequence[Mapping[str, Any]]] | None = None
    ) -> None:
        self._quotas = {ns: list(items) for ns, items in (quotas or {}).items()}
        self._pods = {ns: list(items) for ns, items in (pods or {}).items()}
        self.reservations: ReservationStore = QuotaReservations()

    def resource_quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        return list(self._quotas.get(namespace, ()))

    def pods(self, namespace: str) -> list[Mapping[str, Any]]:
        return list(self._pods.get(namespace, ()))


class KubeQuotaSource:
    """Reads through a ``kubernetes.client.CoreV1Api``; raw JSON, so objects keep the wire shape
    the AdmissionReview's pod has (camelCase keys), and pods are listed in pages."""

    def __init__(self, core_v1: kubernetes.client.CoreV1Api, *, timeout: float = 5.0, reservations: ReservationStore | None = None) -> None:
        self.core_v1 = core_v1
        self.timeout = timeout
        self.reservations: ReservationStore = reservations if reservations is not None else QuotaReservations()

    def _list(self, call: Any, what: str, namespace: str) -> list[Mapping[str, Any]]:
        items: list[Mapping[str, Any]] = []
        token: str | None = None
        try:
            while True:
                kwargs: dict[str, Any] = {"limit": _LIST_PAGE, "_preload_content": False, "_request_timeout": self.timeout}
                if token:
                    kwargs["_continue"] = token
                data = json.loads(call(namespace, **kwargs).data)
                items.extend(data.get("items") or ())
                token = (data.get("metadata") or {}).get("continue")
                if not token:
                    return items
        except Exception as exc:  # any client, network or decoding failure: admission reports it
            raise QuotaError(f"cannot list {what} in namespace {namespace!r}: {type(exc).__name__}: {str(exc)[:300]}") from exc

    def resource_quotas(self, namespace: str) -> list[Mapping[str, Any]]:
        return self._list(self.core_v1.list_namespaced_resource_quota, "resourcequotas", namespace)

    def pods(self, namespace: str) -> list[Mapping[str, Any]]:
        return self._list(self.core_v1.list_namespaced_pod, "pods", namespace)


# ------------------------------------------------------------------ what a pod is charged


def _quantity(value: Any, what: str) -> Decimal | None:
    try:
        return parse_quantity(value)
    except QuantityError as exc:
        log.warning("event=quota_bad_quantity subject=%r error=%r", what, str(exc))
        return None


def _device_counts(manager: BackendManager, container: Mapping[str, Any], pod: Pod) -> dict[str, int]:
    """Devices per vendor key the container asks for (the backend's own rules, aliases included)."""
    try:
        return {r.vendor: r.count for r in manager.container_requests(container, pod)}
    except HamiError as exc:  # an existing pod with a value we cannot read: charge per device once
        log.warning("event=quota_unreadable_request container=%r error=%r", container.get("name"), str(exc))
        return {}


def container_charge(manager: BackendManager, container: Mapping[str, Any], pod: Pod) -> dict[str, Decimal]:
    """``{"limits.<resource>": amount}`` for one container's shared-device resources."""
    resources = container_resources(container)
    counts: dict[str, int] | None = None
    charge: dict[str, Decimal] = {}
    for name, raw in resources.items():
        kind = manager.kind_for_resource(name)
        if kind is None:
            continue
        value = _quantity(raw, f"container {container.get('name')!r} {name}")
        if value is None or value <= 0:
            continue
        names = kind.resources
        if name in (names.memory, names.memory_percentage, names.cores):
            if counts is None:
                counts = _device_counts(manager, container, pod)
            value *= counts.get(kind.vendor, 1)
        charge[QUOTA_PREFIX + name] = value
    return charge


def _add(total: dict[str, Decimal], part: Mapping[str, Decimal]) -> dict[str, Decimal]:
    out = dict(total)
    for key, value in part.items():
        out[key] = out.get(key, Decimal(0)) + value
    return out


def _max(a: Mapping[str, Decimal], b: Mapping[str, Decimal]) -> dict[str, Decimal]:
    return {key: max(a.get(key, Decimal(0)), b.get(key, Decimal(0))) for key in a.keys() | b.keys()}


def _containers(spec: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    value = spec.get(field) or []
    return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []


def pod_charge(manager: BackendManager, pod: Pod) -> dict[str, Decimal]:
    """What the whole pod is charged, with Kubernetes' init-container and sidecar rule."""
    spec = pod.get("spec") or {}
    if not isinstance(spec, Mapping):
        return {}
    app: dict[str, Decimal] = {}
    for container in _containers(spec, "containers"):
        app = _add(app, container_charge(manager, container, pod))
    sidecars: dict[str, Decimal] = {}
    init_peak: dict[str, Decimal] = {}
    for container in _containers(spec, "initContainers"):
        charge = container_charge(manager, container, pod)
        if container.get("restartPolicy") == "Always":
            sidecars = _add(sidecars, charge)
            init_peak = _max(init_peak, sidecars)
        else:
            init_peak = _max(init_peak, _add(sidecars, charge))
    return {k: v for k, v in _max(_add(app, sidecars), init_peak).items() if v > 0}


# ------------------------------------------------------------------ which pods and quotas count


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def counts_against_quota(pod: Pod, now: datetime | None = None) -> bool:
    """Kubernetes' rule: terminal pods, and pods past their deletion grace period, use nothing."""
    if (pod.get("status") or {}).get("phase") in _TERMINAL_PHASES:
        return False
    metadata = pod.get("metadata") or {}
    deleted = _parse_time(metadata.get("deletionTimestamp"))
    grace = metadata.get("deletionGracePeriodSeconds")
    if deleted is not None and isinstance(grace, int):
        return (now or datetime.now(timezone.utc)) <= deleted + timedelta(seconds=grace)
    return True


def _is_terminating(spec: Mapping[str, Any]) -> bool:
    deadline = spec.get("activeDeadlineSeconds")
    return isinstance(deadline, int) and deadline >= 0


def _is_best_effort(spec: Mapping[str, Any]) -> bool:
    for container in _containers(spec, "initContainers") + _containers(spec, "containers"):
        resources = container.get("resources") or {}
        for section in ("requests", "limits"):
            if any(r in (resources.get(section) or {}) for r in ("cpu", "memory")):
                return False
    return True


def _cross_namespace_affinity(spec: Mapping[str, Any]) -> bool:
    affinity = spec.get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        section = affinity.get(kind) or {}
        terms = list(section.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
        terms += [(t or {}).get("podAffinityTerm") or {} for t in section.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
        if any(t.get("namespaces") or t.get("namespaceSelector") is not None for t in terms if isinstance(t, Mapping)):
            return True
    return False


def _scope_matches(scope: str, facts: ScopeFacts) -> bool:
    if scope == "Terminating":
        return facts.terminating
    if scope == "NotTerminating":
        return not facts.terminating
    if scope == "BestEffort":
        return facts.best_effort
    if scope == "NotBestEffort":
        return not facts.best_effort
    if scope == "PriorityClass":
        return facts.priority_class is not None
    if scope == "CrossNamespacePodAffinity":
        return facts.cross_namespace_affinity
    return False  # a scope that cannot select pods (VolumeAttributesClass…)


def _expression_matches(expr: Mapping[str, Any], facts: ScopeFacts) -> bool:
    scope, operator, values = expr.get("scopeName"), expr.get("operator"), list(expr.get("values") or [])
    if scope != "PriorityClass":  # other scopes take Exists / DoesNotExist only
        matched = _scope_matches(str(scope), facts)
        return matched if operator == "Exists" else not matched if operator == "DoesNotExist" else False
    name = facts.priority_class  # a label selector over {"PriorityClass": name}
    if operator == "In":
        return name is not None and name in values
    if operator == "NotIn":
        return name is None or name not in values
    if operator == "Exists":
        return name is not None
    if operator == "DoesNotExist":
        return name is None
    return False


def quota_selects(quota: Mapping[str, Any], pod: Pod | ScopeFacts) -> bool:
    """Whether ``quota``'s scopes and scope selector select ``pod`` (no scope: every pod)."""
    facts = pod if isinstance(pod, ScopeFacts) else ScopeFacts.of(pod)
    qspec = quota.get("spec") or {}
    if not all(_scope_matches(str(s), facts) for s in qspec.get("scopes") or ()):
        return False
    expressions = (qspec.get("scopeSelector") or {}).get("matchExpressions") or ()
    return all(isinstance(e, Mapping) and _expression_matches(e, facts) for e in expressions)


# ------------------------------------------------------------------ the check


def _pretty(values: Mapping[str, Decimal]) -> str:
    return ",".join(f"{k}={format_quantity(values[k])}" for k in sorted(values))


def reserve_quota(manager: BackendManager, pod: Pod, namespace: str, source: QuotaSource) -> tuple[str | None, str | None]:
    """Check ``pod`` against the quotas counting the in-flight reservations, and reserve it when it fits.

    Returns (kube-apiserver's "exceeded quota" message, None) or (None, the reservation token to write
    into the pod as :data:`RESERVATION_ANNOTATION`; None when no quota limits the pod or the source keeps
    no reservations). Raises :class:`QuotaError` when the API server cannot be read or written, or the
    reservation record kept changing under us for the store's ``attempts``.

    The order matters for a shared store: reservations are read *before* the pod list, so a reservation
    pruned by another replica (its pod was listed) is in our list too; and the commit is conditional on
    the record being unchanged since that read, so two replicas never both fill the last room. A
    retry after a lost write re-reads the record but reuses a pod list younger than half the store's
    ``seen_grace`` (entries of listed pods stay that long, see :func:`settle`): a retry then costs a
    read and a write, not a list, so a replica that keeps losing to a busy one still gets through.
    """
    store: ReservationStore | None = getattr(source, "reservations", None)
    if store is None:
        return check_quota(manager, pod, namespace, source), None
    requested = pod_charge(manager, pod)
    if not requested:
        return None, None
    facts = ScopeFacts.of(pod)
    quotas = _quotas(source, namespace, requested, facts)
    if not quotas:
        return None, None
    name = str((pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName") or "")
    listed: list[Mapping[str, Any]] = []
    pods_charged: list[tuple[ScopeFacts, Mapping[str, Decimal]]] = []
    listed_at = float("-inf")
    with store.lock(namespace):  # replicas conflict with each other, never with themselves
        for attempt in range(store.attempts):
            held = store.load(namespace, fresh=attempt > 0)
            # a retry keeps its pod list while young: entries pruned meanwhile were seen grace ago
            fresh_list = store.clock() - listed_at >= store.seen_grace / 2
            if fresh_list:
                listed = source.pods(namespace)
                listed_at = store.clock()
                pods_charged = [(ScopeFacts.of(p), pod_charge(manager, p)) for p in listed if counts_against_quota(p)]
            now = store.clock()
            counted, kept = settle(held.entries, listed, now, store.seen_grace, list_after_read=fresh_list)
            charged = pods_charged + [(r.scope, r.charge) for r in counted.values()]
            exceeded, limited = _exceeded(quotas, requested, facts, charged, namespace)
            if exceeded is not None or not limited:
                if kept != dict(held.entries):
                    _prune(store, namespace, held, kept)
                return exceeded, None
            token = secrets.token_hex(16)
            if store.commit(namespace, held, {**kept, token: Reservation(name, requested, facts, now + store.ttl)}):
                return None, token
            log.info("event=quota_reservation_conflict namespace=%s attempt=%d", namespace, attempt + 1)
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))  # desynchronise replicas retrying together
    raise QuotaError(
        f"cannot reserve ResourceQuota in namespace {namespace!r}: the reservation record changed under "
        f"{store.attempts} attempts in a row (other webhook replicas admitting at the same moment); retry"
    )


def _prune(store: ReservationStore, namespace: str, held: Held, kept: Mapping[str, Reservation]) -> None:
    """Mark or drop, on a denial too, the reservations whose pod the list now shows: once written, a
    pod deleted before the next admission no longer charges through its old reservation until the
    TTL. Best effort (one try): a lost race or a failed write only leaves that window open."""
    try:
        store.commit(namespace, held, kept)
    except QuotaError as exc:
        log.warning("event=quota_prune_failed namespace=%s error=%r", namespace, str(exc)[:200])


def check_quota(manager: BackendManager, pod: Pod, namespace: str, source: QuotaSource) -> str | None:
    """kube-apiserver's "exceeded quota" message for the first quota ``pod`` would exceed, or None
    (a check only: :func:`reserve_quota` is what admission calls).

    Raises :class:`QuotaError` when the API server cannot be read.
    """
    requested = pod_charge(manager, pod)
    if not requested:
        return None
    facts = ScopeFacts.of(pod)
    quotas = _quotas(source, namespace, requested, facts)
    if not quotas:
        return None
    charged = [(ScopeFacts.of(p), pod_charge(manager, p)) for p in source.pods(namespace) if counts_against_quota(p)]
    return _exceeded(quotas, requested, facts, charged, namespace)[0]


def _quotas(source: QuotaSource, namespace: str, requested: Mapping[str, Decimal], facts: ScopeFacts) -> list[Mapping[str, Any]]:
    """The namespace's quotas that limit one of ``requested``'s keys and select the pod, by name."""
    quotas = []
    for quota in sorted(source.resource_quotas(namespace), key=lambda q: str((q.get("metadata") or {}).get("name", ""))):
        hard = (quota.get("spec") or {}).get("hard") or {}
        if any(key in requested for key in hard) and quota_selects(quota, facts):
            quotas.append(quota)
    return quotas


def _exceeded(
    quotas: Sequence[Mapping[str, Any]],
    requested: Mapping[str, Decimal],
    facts: ScopeFacts,
    charged: Sequence[tuple[ScopeFacts, Mapping[str, Decimal]]],
    namespace: str,
) -> tuple[str | None, bool]:
    """(the first exceeded quota's message or None, whether any quota limits the pod at all)."""
    limited_any = False
    for quota in quotas:
        name = str((quota.get("metadata") or {}).get("name", ""))
        hard = {
            key: _quantity(value, f"quota {name} {key}")
            for key, value in ((quota.get("spec") or {}).get("hard") or {}).items()
            if key in requested
        }
        limited = {key: value for key, value in hard.items() if value is not None}
        if not limited:
            continue
        limited_any = True
        used: dict[str, Decimal] = {key: Decimal(0) for key in limited}
        for scope, charge in charged:
            if quota_selects(quota, scope):
                used = {key: used[key] + charge.get(key, Decimal(0)) for key in used}
        failed = sorted(key for key in limited if used[key] + requested[key] > limited[key])
        if failed:
            log.info("event=quota_exceeded namespace=%s quota=%s resources=%s", namespace, name, ",".join(failed))
            return (
                f"exceeded quota: {name}, requested: {_pretty({k: requested[k] for k in failed})}, "
                f"used: {_pretty({k: used[k] for k in failed})}, limited: {_pretty({k: limited[k] for k in failed})}"
            ), True
    return None, limited_any


def quota_keys(manager: BackendManager) -> Iterable[str]:
    """Every quota key the webhook enforces with the installed backends."""
    return sorted(QUOTA_PREFIX + resource for kind in manager.kinds.values() for resource in kind.resources.all())
