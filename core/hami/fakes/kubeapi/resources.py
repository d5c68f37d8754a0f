"""The resource types this server knows, and the discovery documents that describe them.

One table drives routing, discovery (``/api/v1``, ``/apis/...``) and field-selector support, so
adding a kind is one :class:`ResourceType` line. Kind-specific write rules live in ``strategy.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False
    # field selectors beyond metadata.name / metadata.namespace
    fields: frozenset[str] = field(default_factory=frozenset)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """Unique name: ``pods`` for core, ``leases.coordination.k8s.io`` for grouped resources."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def field_supported(self, name: str) -> bool:
        if name == "metadata.name" or (name == "metadata.namespace" and self.namespaced):
            return True
        return name in self.fields


_EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), True, frozenset({"status.phase"})),
    ResourceType("", "v1", "nodes", "Node", False, "node", ("no",), True, frozenset({"spec.unschedulable"})),
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        "pod",
        ("po",),
        True,
        frozenset(
            {
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            }
        ),
    ),
    ResourceType("", "v1", "events", "Event", True, "event", ("ev",), False, _EVENT_FIELDS),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    ResourceType("", "v1", "resourcequotas", "ResourceQuota", True, "resourcequota", ("quota",), True),
    ResourceType("", "v1", "secrets", "Secret", True, "secret", (), False, frozenset({"type"})),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    ResourceType(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        "mutatingwebhookconfiguration",
    ),
    ResourceType(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        True,
        "event",
        ("ev",),
        False,
        frozenset({"reason", "regarding.kind", "regarding.name", "regarding.namespace", "type"}),
    ),
    # Dynamic Resource Allocation (GA in 1.34): what hami.dra publishes and reads, and the sandbox allocates
    ResourceType("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", False, "deviceclass"),
    ResourceType("resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", True, "resourceclaim", (), True),
    ResourceType("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True, "resourceclaimtemplate"),
    ResourceType(
        "resource.k8s.io",
        "v1",
        "resourceslices",
        "ResourceSlice",
        False,
        "resourceslice",
        (),
        False,
        frozenset({"spec.nodeName", "spec.driver"}),
    ),
)

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

_BY_PATH: dict[tuple[str, str, str], ResourceType] = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KEY: dict[str, ResourceType] = {r.key: r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_key(key: str) -> ResourceType:
    """Resolve ``pods``, ``Pod``, ``leases``, ``leases.coordination.k8s.io`` … for in-process callers."""
    if key in _BY_KEY:
        return _BY_KEY[key]
    lowered = key.lower()
    for r in RESOURCES:  # core first, then groups, in table order
        if lowered in (r.plural, r.singular, r.kind.lower()) or lowered in r.short_names:
            return r
    raise KeyError(f"unknown resource {key!r}")


def groups() -> dict[str, list[str]]:
    """API group -> versions, for ``/apis``."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in out.setdefault(r.group, []):
            out[r.group].append(r.version)
    return out


# ---------------------------------------------------------------- discovery documents


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_doc(name: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list() -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{k: v for k, v in _group_doc(g, vs).items() if k not in ("kind", "apiVersion")} for g, vs in groups().items()],
    }


def api_group(name: str) -> dict[str, Any] | None:
    versions = groups().get(name)
    return _group_doc(name, versions) if versions else None


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    members = [r for r in RESOURCES if r.group == group and r.version == version]
    if not members:
        return None
    entries: list[dict[str, Any]] = []
    for r in members:
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(_VERBS),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        entries.append(entry)
        if r.status_subresource:
            entries.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if r.key == "pods":
            entries.append({"name": "pods/binding", "singularName": "", "namespaced": True, "kind": "Binding", "verbs": ["create"]})
    if group == "" and version == "v1":
        entries.append({"name": "bindings", "singularName": "binding", "namespaced": True, "kind": "Binding", "verbs": ["create"]})
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


@functools.lru_cache(maxsize=1)
def kubernetes_version() -> tuple[int, int]:
    """The Kubernetes release the installed ``kubernetes`` client was generated for (client 37.x is
    1.37): the OpenAPI documents come from that client, so ``/version`` reports the same release."""
    try:
        major = int(metadata.version("kubernetes").split(".", 1)[0])
    except (metadata.PackageNotFoundError, ValueError):
        return (1, 31)
    return (1, major) if major >= 17 else (1, 31)


def git_version() -> str:
    major, minor = kubernetes_version()
    return f"v{major}.{minor}.0-hami.kubeapi"


def version_info() -> dict[str, Any]:
    major, minor = kubernetes_version()
    return {
        "major": str(major),
        "minor": str(minor),
        "gitVersion": git_version(),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-08-13T00:00:00Z",
        "goVersion": "go1.22.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
