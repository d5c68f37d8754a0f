"""The dashboard's view of the cluster: one JSON-ready dict built from raw nodes, pods and events.

Devices, their use and who holds them come from :func:`hami.top.snapshot` (the scheduler's own
accounting, so the numbers are the ones filter decisions see). Pods are those asking for a device
resource of an installed backend, holding a device, or Pending; a Pending pod carries the scheduler's
reasons in plain words (:mod:`hami.ui.reasons`). Nothing here copies an annotation, an environment
variable or any other free-form field of the objects: only derived figures, names and the
scheduler's messages reach a page, so signatures, signing keys and secrets in pod specs never do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import attrs

from hami.ui.reasons import explain

if TYPE_CHECKING:
    from hami.plugin.model import DeviceKind

SCHEDULER_EVENTS = ("FailedScheduling", "FilteringFailed")
"""Event reasons that say why a pod is not placed: kube-scheduler's and hami's extender's."""


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _resource_vendors(kinds: Mapping[str, DeviceKind]) -> dict[str, str]:
    """Container resource name → the vendor key of the kind it belongs to."""
    return {name: vendor for vendor, kind in kinds.items() for name in kind.resources.all()}


def _event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or _meta(event).get("creationTimestamp") or "")


def _latest_events(events: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """The newest scheduling event per (pod namespace, pod name, event reason)."""
    latest: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        reason = event.get("reason") or ""
        if involved.get("kind") != "Pod" or reason not in SCHEDULER_EVENTS:
            continue
        key = (str(involved.get("namespace") or ""), str(involved.get("name") or ""), reason)
        if key not in latest or _event_time(event) >= _event_time(latest[key]):
            latest[key] = event
    return latest


def _explained(source: str, message: str) -> dict[str, Any]:
    explanation = explain(message)
    return {
        "source": source,
        "headline": explanation.headline,
        "message": explanation.message,
        "reasons": [attrs.asdict(r) for r in explanation.reasons],
    }


def _waiting(pod: Mapping[str, Any], events: Mapping[tuple[str, str, str], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Why a pod does not run: the scheduler's condition and events, or what kubelet says."""
    meta, status = _meta(pod), pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    out: list[dict[str, Any]] = []
    if phase == "Failed":
        message = ": ".join(x for x in (status.get("reason"), status.get("message")) if x)
        return [_explained("kubelet", message or "The pod failed.")]
    if phase != "Pending":
        return out
    if (pod.get("spec") or {}).get("nodeName"):
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                out.append(_explained("kubelet", f"{container.get('name')}: {waiting['reason']} {waiting.get('message') or ''}".strip()))
        return out or [_explained("kubelet", f"Placed on {pod['spec']['nodeName']}; waiting for its containers to start.")]
    condition = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)
    if condition is not None and condition.get("message"):
        out.append(_explained("kube-scheduler", str(condition["message"])))
    key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    scheduled = events.get((*key, "FailedScheduling"))
    if scheduled is not None and not out:
        out.append(_explained("kube-scheduler", str(scheduled.get("message") or "")))
    filtering = events.get((*key, "FilteringFailed"))
    if filtering is not None:
        out.append(_explained("hami scheduler", str(filtering.get("message") or "")))
    return out or [_explained("", "Not scheduled yet: no scheduler has written a reason.")]


def _pod_view(
    pod: Mapping[str, Any],
    resource_vendor: Mapping[str, str],
    grants: list[dict[str, Any]],
    events: Mapping[tuple[str, str, str], Mapping[str, Any]],
) -> dict[str, Any] | None:
    meta, status = _meta(pod), pod.get("status") or {}
    requests = []
    for container in _containers(pod):
        resources = container.get("resources") or {}
        asked = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
        for name in sorted(asked):
            if name in resource_vendor:
                requests.append(
                    {"container": container.get("name", ""), "resource": name, "vendor": resource_vendor[name], "value": str(asked[name])}
                )
    phase = str(status.get("phase") or "Pending")
    if not requests and not grants and phase != "Pending":
        return None
    vendors = sorted({r["vendor"] for r in requests} | {g["vendor"] for g in grants})
    return {
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "phase": phase,
        "node": (pod.get("spec") or {}).get("nodeName") or "",
        "vendors": vendors,
        "requests": requests,
        "devices": sorted(grants, key=lambda g: (g["container"], g["vendor"], g["device"])),
        "waiting": _waiting(pod, events) if phase in ("Pending", "Failed") else [],
        "created": meta.get("creationTimestamp") or "",
    }


def _ratio(used: float, total: float) -> float:
    return round(used / total, 4) if total > 0 else 0.0


PHASE_BUCKETS = {"Running": "pods_running", "Pending": "pods_pending"}
MEASURED_SHARE = ("used_mib", "utilization", "throttled")
"""What :func:`hami.top.snapshot` adds to a holder where the node's agent reports usage (hami.io/node-usage)."""


def overview(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per vendor: nodes, devices (healthy ones), device types, slots/memory/cores used of total, pods by phase."""
    totals: dict[str, dict[str, Any]] = {}
    for node in nodes:
        for device in node["devices"]:
            total = totals.setdefault(
                device["vendor"],
                {
                    "vendor": device["vendor"],
                    "nodes": set(),
                    "devices": 0,
                    "healthy": 0,
                    "types": set(),
                    "slots": {"used": 0, "total": 0},
                    "memory_mib": {"used": 0, "total": 0},
                    "cores": {"used": 0, "total": 0},
                    "pods_running": 0,
                    "pods_pending": 0,
                    "pods_other": 0,
                    "usage": {"devices": 0, "memory_mib": 0, "utilization": None, "busy": []},
                },
            )
            total["nodes"].add(node["name"])
            total["devices"] += 1
            total["healthy"] += 1 if device["healthy"] and not device["cordoned"] else 0
            total["types"].add(device["type"])
            if "usage" in device:  # measured by the node's agent (hami top's "in use"), not every node reports
                total["usage"]["devices"] += 1
                total["usage"]["memory_mib"] += device["usage"]["memory_mib"]
                if device["usage"].get("utilization") is not None:
                    total["usage"]["busy"].append(device["usage"]["utilization"])
            for key in ("slots", "memory_mib", "cores"):
                total[key]["used"] += device[key]["used"]
                total[key]["total"] += device[key]["total"]
    for pod in pods:
        for vendor in pod["vendors"]:
            if vendor in totals:
                totals[vendor][PHASE_BUCKETS.get(pod["phase"], "pods_other")] += 1
    out = []
    for vendor in sorted(totals):
        total = totals[vendor]
        total["nodes"] = len(total["nodes"])
        total["types"] = sorted(total["types"])
        busy = total["usage"].pop("busy")
        total["usage"]["utilization"] = round(sum(busy) / len(busy), 1) if busy else None
        for key in ("slots", "memory_mib", "cores"):
            total[key]["ratio"] = _ratio(total[key]["used"], total[key]["total"])
        out.append(total)
    return out


def build(
    kinds: Mapping[str, DeviceKind], nodes: list[dict[str, Any]], pods: list[dict[str, Any]], events: Iterable[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The whole view: ``overview`` per vendor, ``nodes`` with devices, ``pods``, and the filter choices."""
    from hami.top import snapshot

    devices_view = snapshot(kinds, nodes, pods)
    ready = {}
    for node in nodes:
        conditions = (node.get("status") or {}).get("conditions") or []
        ready_condition = next((c for c in conditions if c.get("type") == "Ready"), None)
        ready[_meta(node).get("name")] = {
            "ready": ready_condition is None or ready_condition.get("status") == "True",
            "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
        }
    grants: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for node in devices_view["nodes"]:
        node.update(ready.get(node["name"]) or {"ready": True, "unschedulable": False})
        node["vendors"] = sorted({d["vendor"] for d in node["devices"]})
        for device in node["devices"]:
            for key in ("slots", "memory_mib", "cores"):
                device[key]["ratio"] = _ratio(device[key]["used"], device[key]["total"])
            for holder in device["pods"]:
                grant = {
                    "container": holder["container"],
                    "node": node["name"],
                    "device": device["id"],
                    "vendor": device["vendor"],
                    "type": device["type"],
                    "memory_mib": holder["memory_mib"],
                    "cores": holder["cores"],
                }
                grant.update({k: holder[k] for k in MEASURED_SHARE if k in holder})  # the usage monitor's figures, where reported
                grants.setdefault((holder["namespace"], holder["pod"]), []).append(grant)
    latest = _latest_events(events)
    resource_vendor = _resource_vendors(kinds)
    pod_views = []
    for pod in pods:
        meta = _meta(pod)
        view = _pod_view(pod, resource_vendor, grants.get((meta.get("namespace", ""), meta.get("name", "")), []), latest)
        if view is not None:
            pod_views.append(view)
    pod_views.sort(key=lambda p: (p["namespace"], p["name"]))
    return {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "overview": overview(devices_view["nodes"], pod_views),
        "nodes": devices_view["nodes"],
        "pods": pod_views,
        "choices": {
            "vendors": sorted(
                {*(d["vendor"] for n in devices_view["nodes"] for d in n["devices"]), *(v for p in pod_views for v in p["vendors"])}
            ),
            "namespaces": sorted({p["namespace"] for p in pod_views}),
            "nodes": sorted(n["name"] for n in devices_view["nodes"]),
        },
    }


@attrs.frozen
class Filters:
    """The page's filters (query parameters); empty means all."""

    namespace: str = ""
    vendor: str = ""
    node: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        return cls(namespace=query.get("namespace", "").strip(), vendor=query.get("vendor", "").strip(), node=query.get("node", "").strip())

    def as_query(self) -> dict[str, str]:
        return {k: v for k, v in attrs.asdict(self).items() if v}

    def apply(self, view: Mapping[str, Any]) -> dict[str, Any]:
        """The view with only the chosen namespace's pods, vendor's devices and pods, and node."""
        nodes = []
        for node in view["nodes"]:
            if self.node and node["name"] != self.node:
                continue
            devices = [d for d in node["devices"] if not self.vendor or d["vendor"] == self.vendor]
            if self.namespace:
                devices = [{**d, "pods": [p for p in d["pods"] if p["namespace"] == self.namespace]} for d in devices]
            if devices or (not self.vendor and node["problems"]):
                nodes.append({**node, "devices": devices})
        pods = [
            p
            for p in view["pods"]
            if (not self.namespace or p["namespace"] == self.namespace)
            and (not self.vendor or self.vendor in p["vendors"])
            and (not self.node or p["node"] == self.node)
        ]
        return {**view, "overview": overview(nodes, pods), "nodes": nodes, "pods": pods, "filters": attrs.asdict(self)}
