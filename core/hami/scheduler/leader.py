"""Leader election on a ``coordination.k8s.io/v1`` Lease, for running several scheduler replicas.

Only the leader answers filter and bind (the others report not-ready, so the Service sends
kube-scheduler to the leader). Taking or renewing the lease is a PUT carrying the lease's
resourceVersion, so two replicas racing for an expired lease get one winner and one 409.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from kubernetes.client import CoordinationV1Api, V1LeaseSpec, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from hami.periodic import Periodic

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaderElector:
    def __init__(
        self, api: CoordinationV1Api, namespace: str, name: str, identity: str, *, lease_seconds: int = 15, renew_seconds: float = 5.0
    ) -> None:
        self.api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.leading = False
        self._loop = Periodic("leader-election", renew_seconds, self._round, run_first=True)

    def _round(self) -> None:
        try:
            self.try_acquire()
        except Exception:  # an outage: stop leading until a round succeeds
            self._set(False, "lease unreachable")
            raise

    def try_acquire(self) -> bool:
        """One round: take or renew the lease if it is ours or expired; returns whether we lead."""
        now = _now()
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                return self._set(False, f"HTTP {exc.status}")
            body: Any = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": self.lease_seconds,
                    "acquireTime": _stamp(now),
                    "renewTime": _stamp(now),
                    "leaseTransitions": 0,
                },
            }
            try:
                self.api.create_namespaced_lease(self.namespace, body)
                return self._set(True, "created")
            except ApiException as create_exc:
                return self._set(False, f"create lost (HTTP {create_exc.status})")
        spec = lease.spec or V1LeaseSpec()  # a Lease without a spec is held by nobody
        holder = spec.holder_identity
        renewed = spec.renew_time if isinstance(spec.renew_time, datetime) else _parse(spec.renew_time)
        duration = timedelta(seconds=spec.lease_duration_seconds or self.lease_seconds)
        if holder not in (None, "", self.identity) and renewed is not None and renewed + duration > now:
            return self._set(False, f"held by {holder}")
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        body = {
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": (lease.metadata or V1ObjectMeta()).resource_version,
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": _stamp(now) if holder != self.identity else _stamp(spec.acquire_time or now),
                "renewTime": _stamp(now),
                "leaseTransitions": transitions,
            },
        }
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, body)
            return self._set(True, "renewed" if holder == self.identity else f"taken over from {holder or 'nobody'}")
        except ApiException as exc:
            return self._set(False, f"lost the race (HTTP {exc.status})")

    def _set(self, leading: bool, why: str) -> bool:
        if leading != self.leading:
            log.info("event=leadership_changed identity=%s leading=%s why=%r", self.identity, leading, why)
        self.leading = leading
        return leading

    def start(self) -> LeaderElector:
        self._loop.start()
        return self

    def stop(self) -> None:
        self._loop.stop()
        self.leading = False
