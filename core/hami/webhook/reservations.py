"""Quota reservations kept in the API server, so every webhook replica (and a restarted one) sees them.

kube-apiserver's own quota admission does a compare-and-swap on ``ResourceQuota.status.used`` by
resourceVersion and retries on 409. Nothing maintains ``status.used`` for ``limits.<device resource>``,
so the webhook keeps its in-flight reservations in an object of its own instead: one
``coordination.k8s.io`` Lease per admitted namespace, ``hami-quota-<namespace>``, in the webhook's
own namespace (so the service account needs ``get``, ``create`` and ``update`` on leases there and
nothing in users' namespaces), holding ``hami.io/quota-reservations``: JSON
``{token: {"pod", "charge", "scope", "expires"}}``. Every write carries the resourceVersion read, so
two replicas admitting in one namespace at the same moment get one success and one 409; the loser
reads again and re-decides (:func:`hami.webhook.quota.reserve_quota`). Expired entries and entries
whose pod is listed are dropped on each write. The record last written by this process is reused
without a read (a successful conditional write proves it was still current), so one replica pays one
write per admission and no extra read.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hami.errors import QuantityError
from hami.webhook.quota import RESERVATION_TTL, Held, QuotaError, Reservation, ScopeFacts, live_reservations
from hami.wire.quantity import format_quantity, parse_quantity

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger(__name__)

RESERVATIONS_ANNOTATION = "hami.io/quota-reservations"
"""Annotation of the per-namespace Lease that holds the namespace's in-flight reservations as JSON."""
LEASE_PREFIX = "hami-quota-"
DEFAULT_ATTEMPTS = 16
SEEN_GRACE = 10.0
"""Seconds an entry whose pod was listed stays (marked) in the record: a replica retrying reuses a pod
list younger than half of this. Replicas' clocks must agree to better than the other half."""
"""Conditional writes tried before an admission is denied (each loss means another replica admitted)."""


def lease_name(namespace: str) -> str:
    """The Lease holding ``namespace``'s reservations (namespace names are ≤ 63 characters, so it fits)."""
    return LEASE_PREFIX + namespace


def encode_reservations(entries: Mapping[str, Reservation]) -> str:
    """The annotation's JSON for ``entries`` (sorted keys, quantities as canonical strings)."""
    return json.dumps(
        {
            token: {
                "pod": r.pod,
                "charge": {k: format_quantity(v) for k, v in sorted(r.charge.items())},
                "scope": {
                    "terminating": r.scope.terminating,
                    "bestEffort": r.scope.best_effort,
                    "priorityClass": r.scope.priority_class,
                    "crossNamespaceAffinity": r.scope.cross_namespace_affinity,
                },
                "expires": r.expires,
                **({"seen": r.seen} if r.seen is not None else {}),
            }
            for token, r in sorted(entries.items())
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def _entry(raw: Any) -> Reservation:
    if not isinstance(raw, Mapping):
        raise ValueError(f"entry is {type(raw).__name__}, not an object")
    charge, scope, expires = raw.get("charge"), raw.get("scope") or {}, raw.get("expires")
    if not isinstance(charge, Mapping) or not isinstance(scope, Mapping):
        raise ValueError("charge and scope must be objects")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise ValueError(f"expires {expires!r} is not a number")
    amounts: dict[str, Decimal] = {}
    for key, value in charge.items():
        if not isinstance(value, str):
            raise ValueError(f"charge {key!r}={value!r} is not a quantity string")
        amounts[str(key)] = parse_quantity(value)
    priority = scope.get("priorityClass")
    facts = ScopeFacts(
        bool(scope.get("terminating", False)),
        bool(scope.get("bestEffort", True)),
        priority if isinstance(priority, str) and priority else None,
        bool(scope.get("crossNamespaceAffinity", False)),
    )
    seen = raw.get("seen")
    if seen is not None and (isinstance(seen, bool) or not isinstance(seen, (int, float))):
        raise ValueError(f"seen {seen!r} is not a number")
    return Reservation(str(raw.get("pod") or ""), amounts, facts, float(expires), None if seen is None else float(seen))


def decode_reservations(text: str | None, where: str = "") -> dict[str, Reservation]:
    """The annotation read back. An entry we cannot read is dropped with a warning (only the webhook
    writes this object; a damaged entry would have lapsed within the TTL anyway); text that is not a
    JSON object at all reads as no entries, likewise logged."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        log.warning("event=quota_reservations_unreadable where=%s error=%r", where, str(exc)[:200])
        return {}
    if not isinstance(data, dict):
        log.warning("event=quota_reservations_unreadable where=%s error=%r", where, f"a JSON {type(data).__name__}, not an object")
        return {}
    out: dict[str, Reservation] = {}
    for token, raw in data.items():
        try:
            out[str(token)] = _entry(raw)
        except (ValueError, QuantityError, OverflowError) as exc:
            log.warning("event=quota_reservation_dropped where=%s token=%r error=%r", where, str(token)[:40], str(exc)[:200])
    return out


class LeaseReservations:
    """A :class:`~hami.webhook.quota.ReservationStore` every replica shares: one Lease per namespace in
    ``namespace`` (the webhook's own), conditional writes, expiry on a wall clock shared by replicas."""

    def __init__(
        self,
        coordination_v1: kubernetes.client.CoordinationV1Api,
        namespace: str,
        *,
        ttl: float = RESERVATION_TTL,
        clock: Callable[[], float] = time.time,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float = 5.0,
        seen_grace: float = SEEN_GRACE,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts!r}")
        self.api: Any = coordination_v1  # raw JSON calls (_preload_content=False)
        self.namespace = namespace
        self.ttl = ttl
        self.clock = clock
        self.attempts = attempts
        self.timeout = timeout
        self.seen_grace = seen_grace
        self.conflicts = 0  # conditional writes lost to another writer (a figure for benches and tests)
        self.worst_streak = 0  # most writes lost in a row by one admission (how close it came to `attempts`)
        self._streak: dict[str, int] = {}
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._cache: dict[str, Held] = {}  # what this process last wrote or read, per namespace

    def lock(self, namespace: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(namespace, threading.Lock())

    def _failed(self, verb: str, namespace: str, exc: Exception) -> QuotaError:
        status = getattr(exc, "status", None)
        reason = f"{status} {getattr(exc, 'reason', '')}".strip() if status else type(exc).__name__
        body = str(getattr(exc, "body", "") or exc)[:300]
        return QuotaError(
            f"cannot {verb} the quota reservations of namespace {namespace!r} (Lease {self.namespace}/{lease_name(namespace)}): "
            f"{reason}: {body} (the webhook's service account needs get, create and update on "
            f"coordination.k8s.io leases in namespace {self.namespace!r})"
        )

    def load(self, namespace: str, fresh: bool) -> Held:
        """The namespace's reservations: the last record this process saw unless ``fresh``."""
        if not fresh:
            with self._guard:
                cached = self._cache.get(namespace)
            if cached is not None:
                return cached
        try:
            response = self.api.read_namespaced_lease(
                lease_name(namespace), self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
            lease = json.loads(response.data)
        except Exception as exc:  # any client, network or decoding failure: admission denies, fail closed
            if getattr(exc, "status", None) == 404:
                held = Held({}, None)
                self._remember(namespace, held)
                return held
            raise self._failed("read", namespace, exc) from exc
        metadata = lease.get("metadata") or {}
        where = f"{self.namespace}/{lease_name(namespace)}"
        held = Held(
            decode_reservations((metadata.get("annotations") or {}).get(RESERVATIONS_ANNOTATION), where),
            str(metadata.get("resourceVersion") or ""),
        )
        self._remember(namespace, held)
        return held

    def _remember(self, namespace: str, held: Held | None) -> None:
        with self._guard:
            if held is None:
                self._cache.pop(namespace, None)
            else:
                self._cache[namespace] = held

    def commit(self, namespace: str, held: Held, entries: Mapping[str, Reservation]) -> bool:
        """Write ``entries`` if the Lease is still at ``held.version`` (absent when None); False on a 409
        (or a 404: deleted meanwhile), raising :class:`QuotaError` on any other failure."""
        name = lease_name(namespace)
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/managed-by": "hami", "hami.io/quota-namespace": namespace},
            "annotations": {RESERVATIONS_ANNOTATION: encode_reservations(entries)},
        }
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": {}}
        try:
            if held.version is None:
                response = self.api.create_namespaced_lease(self.namespace, body, _preload_content=False, _request_timeout=self.timeout)
            else:
                metadata["resourceVersion"] = held.version
                response = self.api.replace_namespaced_lease(
                    name, self.namespace, body, _preload_content=False, _request_timeout=self.timeout
                )
            written = json.loads(response.data)
        except Exception as exc:
            if getattr(exc, "status", None) in (409, 404):
                self._remember(namespace, None)
                with self._guard:
                    self.conflicts += 1
                    self._streak[namespace] = streak = self._streak.get(namespace, 0) + 1
                    self.worst_streak = max(self.worst_streak, streak)
                return False
            self._remember(namespace, None)
            raise self._failed("write", namespace, exc) from exc
        self._remember(namespace, Held(dict(entries), str((written.get("metadata") or {}).get("resourceVersion") or "")))
        with self._guard:
            self._streak[namespace] = 0
        return True

    def in_flight(self, namespace: str, listed: Any) -> list[Reservation]:
        """The reservations of ``namespace`` a fresh read finds not yet in ``listed`` and not expired."""
        return list(live_reservations(self.load(namespace, True).entries, listed, self.clock()).values())

    def count(self, namespace: str) -> int:
        """Entries in the record as read now (expired or listed ones included until the next write)."""
        return len(self.load(namespace, True).entries)
