"""An optional log of the requests the in-memory API server receives, in RBAC's terms.

Tests set ``server.request_log = RequestLog()`` and give each component its own bearer token
(``kubeconfig_for(server, "scheduler")``); every request is then recorded as (component, verb, API
group, resource, subresource, namespace, name), so a test can compare what each component really
does with the Role and ClusterRole rules the Helm chart grants it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from hami.fakes.kubeapi.server import KubeAPIServer


@attrs.frozen
class RequestRecord:
    component: str
    """The bearer token of the request ('' without one): tests use one token per component."""
    verb: str
    """RBAC's verb: get, list, watch, create, update, patch, delete, deletecollection."""
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""


class RequestLog:
    """Thread-safe list of :class:`RequestRecord`; the server appends, tests read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def by_component(self, component: str) -> list[RequestRecord]:
        return [r for r in self.records if r.component == component]

    def counts(self) -> dict[str, int]:
        """Requests by ``"<verb> <resource>[/<subresource>]"`` (benchmarks print them per pod)."""
        counts: dict[str, int] = {}
        for r in self.records:
            key = f"{r.verb} {r.resource}" + (f"/{r.subresource}" if r.subresource else "")
            counts[key] = counts.get(key, 0) + 1
        return counts

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


def rbac_verb(method: str, named: bool, watch: bool) -> str:
    """The verb kube-apiserver's authorizer sees for an HTTP method on a collection or a named object."""
    if method in ("GET", "HEAD"):
        return "watch" if watch else ("get" if named else "list")
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return method.lower()


def component_of(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def kubeconfig_for(server: KubeAPIServer, component: str) -> dict[str, Any]:
    """A kubeconfig for ``server`` whose token names ``component`` in the request log."""
    config = server.kubeconfig()
    config["users"][0]["user"]["token"] = component
    return config
