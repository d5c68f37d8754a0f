"""Kubelet's PodResources API (``podresources/v1``): which pod's containers hold which device ids.

Kubelet serves ``PodResourcesLister`` on ``/var/lib/kubelet/pod-resources/kubelet.sock``. The agent
reads ``List`` when it reconciles (:mod:`hami.node.podwatch`): a pod the API server no longer has
but kubelet still lists (a force-deleted pod being torn down) keeps its devices until kubelet lets
go. The generated modules live in :mod:`hami.node.podresources.v1`; regenerate them with
``python -m hami.node.podresources.regenerate`` after editing ``v1/api.proto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs
import grpc

from hami.errors import HamiError

__all__ = ["POD_RESOURCES_SOCKET", "PodResources", "PodResourcesClient", "PodResourcesError", "pod_resources_socket"]

POD_RESOURCES_SOCKET = "kubelet.sock"
"""Base name of kubelet's socket in its ``pod-resources`` directory."""
MAX_MESSAGE = 16 * 1024 * 1024
"""Kubelet's ``podresources.DefaultMaxMsgSize`` (16 MiB): a node with many pods answers big lists."""


def pod_resources_socket(plugin_dir: Path | str) -> Path:
    """Where kubelet serves PodResources, from the device plugin directory.

    Kubelet's layout (``…/kubelet/device-plugins`` beside ``…/kubelet/pod-resources``) when the
    directory is named ``device-plugins``; otherwise (a test or sandbox directory, where sockets must
    stay short) the ``pod-resources`` directory inside it, where the fake kubelet serves it.
    """
    plugin_dir = Path(plugin_dir)
    base = plugin_dir.parent if plugin_dir.name == "device-plugins" else plugin_dir
    return base / "pod-resources" / POD_RESOURCES_SOCKET


class PodResourcesError(HamiError):
    """Kubelet's PodResources API could not be read (socket absent, kubelet down, wrong answer)."""


@attrs.frozen
class PodResources:
    """One pod as kubelet's ``List`` reports it: per container, per resource, the device ids."""

    namespace: str
    name: str
    containers: Mapping[str, Mapping[str, tuple[str, ...]]] = attrs.field(factory=dict, hash=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def device_ids(self, resources: frozenset[str] | None = None) -> tuple[str, ...]:
        """Every device id the pod holds (of ``resources`` only, when given)."""
        wanted = (ids for per in self.containers.values() for r, ids in sorted(per.items()) if resources is None or r in resources)
        return tuple(i for ids in wanted for i in ids)


class PodResourcesClient:
    """``List`` over kubelet's unix socket; every failure is a :class:`PodResourcesError` naming the socket."""

    def __init__(self, socket: Path | str, *, timeout: float = 5.0) -> None:
        self.socket = Path(socket)
        self.timeout = timeout

    def list(self) -> list[PodResources]:
        from hami.node.podresources.v1 import api_pb2, api_pb2_grpc

        if not self.socket.exists():
            raise PodResourcesError(f"kubelet's PodResources socket {self.socket} does not exist")
        options = [("grpc.max_receive_message_length", MAX_MESSAGE)]
        try:
            with grpc.insecure_channel(f"unix://{self.socket}", options=options) as channel:
                response = api_pb2_grpc.PodResourcesListerStub(channel).List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            raise PodResourcesError(f"PodResources List on {self.socket} failed: {getattr(code, 'name', code)}: {details}") from None
        pods = []
        for pod in response.pod_resources:
            containers: dict[str, dict[str, tuple[str, ...]]] = {}
            for container in pod.containers:
                per = containers.setdefault(container.name, {})
                for devices in container.devices:
                    per[devices.resource_name] = per.get(devices.resource_name, ()) + tuple(devices.device_ids)
            pods.append(PodResources(pod.namespace, pod.name, containers))
        return pods
