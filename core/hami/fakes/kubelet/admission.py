"""What the fake kubelet's admission returns, and how it reads a pod's device requests.

Kubelet reports a failed device allocation as pod admission failure with reason
``UnexpectedAdmissionError`` and message ``Allocate failed due to <err>, which is unexpected``; gRPC
errors read like Go's ``rpc error: code = Unknown desc = <plugin message>``. We reproduce both texts so
tests can assert what users of a real cluster would see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from hami.node.deviceplugin.v1beta1 import api_pb2

UNEXPECTED_ADMISSION_ERROR = "UnexpectedAdmissionError"
#: Reason used when PreStartContainer fails (kubelet fails the container start with this reason).
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"


@dataclass
class ContainerAllocation:
    """Devices kubelet assigned to one container and the plugin's answers (one per resource)."""

    name: str
    init: bool = False
    devices: dict[str, list[str]] = field(default_factory=dict)
    responses: dict[str, api_pb2.ContainerAllocateResponse] = field(default_factory=dict)

    @property
    def envs(self) -> dict[str, str]:
        """Environment of all resources' responses merged (later resources win, as in kubelet)."""
        out: dict[str, str] = {}
        for resp in self.responses.values():
            out.update(resp.envs)
        return out

    @property
    def annotations(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for resp in self.responses.values():
            out.update(resp.annotations)
        return out

    @property
    def mounts(self) -> list[api_pb2.Mount]:
        return [m for resp in self.responses.values() for m in resp.mounts]

    @property
    def device_specs(self) -> list[api_pb2.DeviceSpec]:
        return [d for resp in self.responses.values() for d in resp.devices]

    @property
    def cdi_devices(self) -> list[str]:
        return [c.name for resp in self.responses.values() for c in resp.cdi_devices]


@dataclass
class AdmissionResult:
    """Outcome of :meth:`FakeKubelet.admit` for one pod."""

    pod: str
    admitted: bool
    reason: str = ""
    message: str = ""
    containers: dict[str, ContainerAllocation] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        """The pod status message kubelet would write, or None when admitted."""
        return None if self.admitted else self.message

    def container(self, name: str) -> ContainerAllocation:
        return self.containers[name]


class AdmissionError(Exception):
    """Internal: carries kubelet's error text up to :class:`AdmissionResult`."""

    def __init__(self, message: str, reason: str = UNEXPECTED_ADMISSION_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


def go_grpc_error(err: grpc.RpcError) -> str:
    """Format a gRPC error the way Go's ``status.Error`` prints it."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    name = "".join(part.capitalize() for part in code.name.split("_"))
    name = {"Ok": "OK", "Cancelled": "Canceled"}.get(name, name)
    details = err.details() if hasattr(err, "details") else str(err)
    return f"rpc error: code = {name} desc = {details}"


def unexpected(err: str) -> str:
    return f"Allocate failed due to {err}, which is unexpected"


@dataclass
class PodView:
    """The parts of a pod the device manager reads."""

    key: str
    node_name: str | None
    containers: list[tuple[str, bool, dict[str, Any]]]  # (name, is_init, limits)
    namespace: str = "default"
    name: str = ""


def pod_view(pod: Any) -> PodView:
    """Read a pod given as a dict (API JSON, camelCase or snake_case) or a ``kubernetes`` ``V1Pod``."""
    if not isinstance(pod, dict):
        from kubernetes.client import ApiClient

        pod = ApiClient().sanitize_for_serialization(pod)
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    uid = meta.get("uid")
    key = uid or f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
    containers: list[tuple[str, bool, dict[str, Any]]] = []
    inits = spec.get("initContainers", spec.get("init_containers")) or []
    for is_init, group in ((True, inits), (False, spec.get("containers") or [])):
        for c in group:
            limits = (c.get("resources") or {}).get("limits") or {}
            containers.append((c["name"], is_init, dict(limits)))
    return PodView(
        key=key,
        node_name=spec.get("nodeName", spec.get("node_name")),
        containers=containers,
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
    )


def device_count(resource: str, quantity: Any) -> int:
    """Device plugin resources are integers; anything else is refused like kubelet's quantity check."""
    try:
        value = int(str(quantity))
    except ValueError:
        raise AdmissionError(unexpected(f"invalid quantity {quantity!r} for {resource}")) from None
    if value < 0:
        raise AdmissionError(unexpected(f"invalid quantity {quantity!r} for {resource}"))
    return value
