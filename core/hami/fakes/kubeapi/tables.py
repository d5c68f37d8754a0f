"""Server-side printing: ``meta.k8s.io`` ``Table`` answers, as kubectl asks for them.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io,…,application/json`` for
``get`` and prints the columns the server chose, so a server that ignores it gets ``NAME AGE``
only. The pod and node printers follow kube-apiserver's (``pkg/printers/internalversion/printers.go``
upstream: ``printPod``, ``printNode``, ``translateTimestampSince`` via ``duration.HumanDuration``);
like the real server, every column is sent (``Priority: 1`` ones are what ``-o wide`` adds) and other
kinds get the default ``Name``/``Created At`` table (``DefaultTableConvertor``) or a small printer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import attrs

from hami.fakes.kubeapi.errors import StatusError
from hami.fakes.kubeapi.resources import ResourceType

TABLE_VERSIONS = ("v1", "v1beta1")
INCLUDE_OBJECT = ("None", "Metadata", "Object")
_NAME_DOC = "Name must be unique within a namespace."
_AGE_DOC = "CreationTimestamp is a timestamp representing the server time when this object was created."


# ---------------------------------------------------------------- Accept header


@attrs.frozen
class MediaType:
    """One entry of an Accept header: ``type/subtype`` and its parameters (lower-case keys)."""

    mime: str
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return dict(self.params).get(name)


def parse_accept(header: str | None) -> list[MediaType]:
    """Split an Accept header into media types, in the client's order (``q`` is not used by kubectl).

    Raises ValueError naming the entry for a malformed one (no ``/``, a parameter without ``=``)."""
    out: list[MediaType] = []
    for raw in (header or "").split(","):
        raw = raw.strip()
        if not raw:
            continue
        mime, *params = (p.strip() for p in raw.split(";"))
        if mime.count("/") != 1 or not all(mime.split("/")):
            raise ValueError(f"malformed media type {raw!r} in Accept")
        pairs = []
        for param in params:
            if not param:
                continue
            if "=" not in param:
                raise ValueError(f"malformed media type parameter {param!r} in Accept entry {raw!r}")
            key, value = param.split("=", 1)
            pairs.append((key.strip().lower(), value.strip().strip('"')))
        out.append(MediaType(mime.lower(), tuple(pairs)))
    return out


def wants_table(header: str | None) -> str | None:
    """The Table version (``v1``/``v1beta1``) the client asked for first, or None for plain JSON.

    406 when every acceptable type is a transformation this server cannot make (e.g. only
    ``as=PartialObjectMetadata``), as kube-apiserver answers."""
    try:
        types = parse_accept(header)
    except ValueError as exc:
        raise StatusError(406, "NotAcceptable", str(exc)) from None
    if not types:
        return None
    for media in types:
        if media.mime not in ("application/json", "application/*", "*/*"):
            continue
        as_ = media.param("as")
        if as_ is None:
            return None
        if as_ == "Table" and media.param("g") == "meta.k8s.io" and (media.param("v") or "v1") in TABLE_VERSIONS:
            return media.param("v") or "v1"
    raise StatusError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (got {header!r})",
    )


# ---------------------------------------------------------------- durations


def human_duration(seconds: float) -> str:
    """``duration.HumanDuration``: ``45s``, ``3m12s``, ``2h5m``, ``3d4h``, ``2y10d`` …"""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def since(value: Any, now: datetime | None = None) -> str:
    """``translateTimestampSince``: the age of a timestamp, ``<unknown>`` without one."""
    when = _parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(timezone.utc)) - when).total_seconds())


# ---------------------------------------------------------------- printers


def _column(name: str, description: str, type_: str = "string", priority: int = 0, fmt: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


_NAME = _column("Name", _NAME_DOC, fmt="name")
_AGE = _column("Age", _AGE_DOC)

POD_COLUMNS = [
    _NAME,
    _column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    _column("Status", "The aggregate status of the containers in this pod."),
    _column(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    _AGE,
    _column("IP", "IP address allocated to the pod.", priority=1),
    _column("Node", "NodeName is a request to schedule this pod onto a specific node.", priority=1),
    _column("Nominated Node", "nominatedNodeName is set when this pod preempts other pods on the node.", priority=1),
    _column("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness.", priority=1),
]
NODE_COLUMNS = [
    _NAME,
    _column("Status", "The status of the node"),
    _column("Roles", "The roles of the node"),
    _AGE,
    _column("Version", "Kubelet Version reported by the node."),
    _column("Internal-IP", "List of addresses reachable to the node.", priority=1),
    _column("External-IP", "List of addresses reachable to the node.", priority=1),
    _column("OS-Image", "OS Image reported by the node from /etc/os-release.", priority=1),
    _column("Kernel-Version", "Kernel Version reported by the node from 'uname -r'.", priority=1),
    _column("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API.", priority=1),
]
DEFAULT_COLUMNS = [_NAME, _column("Created At", _AGE_DOC, type_="date")]
NAMESPACE_COLUMNS = [_NAME, _column("Status", "The status of the namespace"), _AGE]
CONFIGMAP_COLUMNS = [_NAME, _column("Data", "Data contains the configuration data.", type_="integer"), _AGE]
SECRET_COLUMNS = [
    _NAME,
    _column("Type", "The type of the secret"),
    _column("Data", "Data contains the secret data.", type_="integer"),
    _AGE,
]
LEASE_COLUMNS = [_NAME, _column("Holder", "holderIdentity contains the identity of the holder of a current lease."), _AGE]

_Printer = Callable[[dict[str, Any], datetime], tuple[list[Any], list[dict[str, str]]]]


def _state(container: dict[str, Any], which: str) -> dict[str, Any] | None:
    state = container.get(which) or {}
    return state if isinstance(state, dict) else None


def _restartable(container: dict[str, Any] | None) -> bool:
    return bool(container) and container.get("restartPolicy") == "Always"  # type: ignore[union-attr]


def print_pod(pod: dict[str, Any], now: datetime) -> tuple[list[Any], list[dict[str, str]]]:
    """``printPod``: READY ready/total, STATUS from phase, reasons and container states, RESTARTS."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    conditions: list[dict[str, str]] = []
    if phase == "Succeeded":
        conditions = [{"type": "Completed", "status": "True", "reason": "Succeeded"}]
    elif phase == "Failed":
        conditions = [{"type": "Completed", "status": "True", "reason": "Failed"}]
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or [] if isinstance(c, dict)}
    total = len(spec.get("containers") or []) + sum(_restartable(c) for c in init_specs.values())
    ready = restarts = sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += int(cs.get("restartCount") or 0)
        finished = _parse_time(((_state(cs, "lastState") or {}).get("terminated") or {}).get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished
        sidecar = _restartable(init_specs.get(cs.get("name")))
        if sidecar:
            sidecar_restarts += int(cs.get("restartCount") or 0)
            if finished and (last_sidecar_restart is None or finished > last_sidecar_restart):
                last_sidecar_restart = finished
        state = _state(cs, "state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started"):
            ready += bool(cs.get("ready"))
            continue
        if terminated:
            if terminated.get("reason"):
                reason = "Init:" + terminated["reason"]
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode', 0)}"
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True" for c in status.get("conditions") or [])
    if not initializing or initialized:
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += int(cs.get("restartCount") or 0)
            finished = _parse_time(((_state(cs, "lastState") or {}).get("terminated") or {}).get("finishedAt"))
            if finished and (last_restart is None or finished > last_restart):
                last_restart = finished
            state = _state(cs, "state") or {}
            waiting, terminated = state.get("waiting"), state.get("terminated")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated:
                reason = f"Signal:{terminated['signal']}" if terminated.get("signal") else f"ExitCode:{terminated.get('exitCode', 0)}"
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
            reason = "Running" if pod_ready else "NotReady"
    if meta.get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    ips = status.get("podIPs") or []
    ip = (ips[0].get("ip") if ips and isinstance(ips[0], dict) else None) or status.get("podIP") or "<none>"
    gates = spec.get("readinessGates") or []
    gates_text = "<none>"
    if gates:
        by_type: dict[Any, Any] = {}
        for cond in status.get("conditions") or []:
            by_type.setdefault(cond.get("type"), cond.get("status"))
        true = sum(by_type.get(g.get("conditionType")) == "True" for g in gates)
        gates_text = f"{true}/{len(gates)}"
    cells = [
        meta.get("name", ""),
        f"{ready}/{total}",
        reason,
        restarts_text,
        since(meta.get("creationTimestamp"), now),
        ip,
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_text,
    ]
    return cells, conditions


def node_roles(labels: dict[str, str] | None) -> list[str]:
    """``findNodeRoles``: ``node-role.kubernetes.io/<role>`` keys and the ``kubernetes.io/role`` value."""
    roles = set()
    for key, value in (labels or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/") :]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return sorted(roles)


def print_node(node: dict[str, Any], now: datetime) -> tuple[list[Any], list[dict[str, str]]]:
    """``printNode``: STATUS from the Ready condition (+``SchedulingDisabled``), ROLES from labels."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    states = []
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            states = ["Ready" if cond.get("status") == "True" else "NotReady"]
    if not states:
        states = ["Unknown"]
    if (node.get("spec") or {}).get("unschedulable"):
        states.append("SchedulingDisabled")
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        for addr in status.get("addresses") or []:
            if addr.get("type") == kind:
                return str(addr.get("address"))
        return "<none>"

    cells = [
        meta.get("name", ""),
        ",".join(states),
        ",".join(node_roles(meta.get("labels"))) or "<none>",
        since(meta.get("creationTimestamp"), now),
        info.get("kubeletVersion") or "",
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]
    return cells, []


def _simple(*cells: Callable[[dict[str, Any], datetime], Any]) -> _Printer:
    def printer(obj: dict[str, Any], now: datetime) -> tuple[list[Any], list[dict[str, str]]]:
        return [(obj.get("metadata") or {}).get("name", ""), *(c(obj, now) for c in cells)], []

    return printer


def _age(obj: dict[str, Any], now: datetime) -> str:
    return since((obj.get("metadata") or {}).get("creationTimestamp"), now)


def _created(obj: dict[str, Any], now: datetime) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def _data_count(obj: dict[str, Any], now: datetime) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or obj.get("stringData") or {})


PRINTERS: dict[str, tuple[list[dict[str, Any]], _Printer]] = {
    "pods": (POD_COLUMNS, print_pod),
    "nodes": (NODE_COLUMNS, print_node),
    "namespaces": (NAMESPACE_COLUMNS, _simple(lambda o, n: (o.get("status") or {}).get("phase") or "", _age)),
    "configmaps": (CONFIGMAP_COLUMNS, _simple(_data_count, _age)),
    "secrets": (SECRET_COLUMNS, _simple(lambda o, n: o.get("type") or "Opaque", _data_count, _age)),
    "leases.coordination.k8s.io": (LEASE_COLUMNS, _simple(lambda o, n: (o.get("spec") or {}).get("holderIdentity") or "<unset>", _age)),
}


def _partial(obj: dict[str, Any], version: str) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}", "metadata": obj.get("metadata") or {}}


def table(
    info: ResourceType,
    objects: Iterable[dict[str, Any]],
    *,
    version: str = "v1",
    include_object: str = "Metadata",
    list_meta: dict[str, Any] | None = None,
    columns: bool = True,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A ``meta.k8s.io`` Table of ``objects``: every column (wide ones have priority 1), one row each,
    with the whole object, its metadata or nothing per ``includeObject``."""
    if include_object not in INCLUDE_OBJECT:
        raise StatusError(
            400, "BadRequest", f"includeObject: unsupported value {include_object!r}: must be one of {', '.join(INCLUDE_OBJECT)}"
        )
    defs, printer = PRINTERS.get(info.key, (DEFAULT_COLUMNS, _simple(_created)))
    moment = now or datetime.now(timezone.utc)
    rows = []
    for obj in objects:
        cells, conditions = printer(obj, moment)
        row: dict[str, Any] = {"cells": cells}
        if conditions:
            row["conditions"] = conditions
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "Metadata":
            row["object"] = _partial(obj, version)
        rows.append(row)
    out: dict[str, Any] = {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": list_meta or {}}
    if columns:
        out["columnDefinitions"] = defs
    out["rows"] = rows
    return out
