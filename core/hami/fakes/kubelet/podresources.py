"""The fake kubelet's ``PodResourcesLister``: ``List`` answers from the pods it admitted.

As kubelet's ``v1.PodResourcesServer``: one ``PodResources`` per admitted pod, one
``ContainerResources`` per container (init containers included), one ``ContainerDevices`` per
device plugin resource the container was given; a pod it released (terminated, deleted) is gone.
``GetAllocatableResources`` and ``Get`` answer too (healthy devices; one pod or NOT_FOUND).
Served by grpc.aio on the fake kubelets' shared loop; the snapshots only take a lock, so the
handlers run on the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

from hami.node.podresources.v1 import api_pb2, api_pb2_grpc

from .admission import ContainerAllocation

Snapshot = Callable[[], Mapping[tuple[str, str], Mapping[str, ContainerAllocation]]]
"""(namespace, name) → container name → what it was given."""


def _pod(key: tuple[str, str], containers: Mapping[str, ContainerAllocation]) -> api_pb2.PodResources:
    namespace, name = key
    return api_pb2.PodResources(
        name=name,
        namespace=namespace,
        containers=[
            api_pb2.ContainerResources(
                name=alloc.name,
                devices=[api_pb2.ContainerDevices(resource_name=r, device_ids=list(ids)) for r, ids in sorted(alloc.devices.items())],
            )
            for alloc in containers.values()
        ],
    )


class PodResourcesServicer(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, pods: Snapshot, allocatable: Callable[[], Mapping[str, list[str]]]) -> None:
        self._pods = pods
        self._allocatable = allocatable

    async def List(self, request: api_pb2.ListPodResourcesRequest, context: Any) -> api_pb2.ListPodResourcesResponse:
        return api_pb2.ListPodResourcesResponse(pod_resources=[_pod(k, c) for k, c in sorted(self._pods().items())])

    async def Get(self, request: api_pb2.GetPodResourcesRequest, context: grpc.aio.ServicerContext) -> api_pb2.GetPodResourcesResponse:
        key = (request.pod_namespace, request.pod_name)
        containers = self._pods().get(key)
        if containers is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"pod {request.pod_name} not found in {request.pod_namespace}")
        return api_pb2.GetPodResourcesResponse(pod_resources=_pod(key, containers or {}))

    async def GetAllocatableResources(
        self, request: api_pb2.AllocatableResourcesRequest, context: Any
    ) -> api_pb2.AllocatableResourcesResponse:
        return api_pb2.AllocatableResourcesResponse(
            devices=[api_pb2.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in sorted(self._allocatable().items())]
        )
