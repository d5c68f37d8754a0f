"""A minimal device plugin server: the peer the fake kubelet (and node agent tests) talk to.

It serves ``v1beta1.DevicePlugin`` on a unix socket with a settable device list, configurable options and
answers, and records every call. It is a test double, not a reference plugin.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from pathlib import Path

import grpc

from hami.node.deviceplugin import API_VERSION, HEALTHY
from hami.node.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

DeviceLike = api_pb2.Device | str | tuple[str, str]
AllocateHandler = Callable[[api_pb2.ContainerAllocateRequest], api_pb2.ContainerAllocateResponse]
PreferredHandler = Callable[[api_pb2.ContainerPreferredAllocationRequest], list[str]]


def _device(d: DeviceLike) -> api_pb2.Device:
    if isinstance(d, api_pb2.Device):
        return d
    if isinstance(d, str):
        return api_pb2.Device(ID=d, health=HEALTHY)
    return api_pb2.Device(ID=d[0], health=d[1])


def default_allocate(request: api_pb2.ContainerAllocateRequest) -> api_pb2.ContainerAllocateResponse:
    """Answer with ``SAMPLE_DEVICES=<ids>`` so tests can see which devices a container got."""
    return api_pb2.ContainerAllocateResponse(envs={"SAMPLE_DEVICES": ",".join(request.devices_ids)})


class SamplePlugin(api_pb2_grpc.DevicePluginServicer):
    """Device plugin test double serving on ``socket_path``.

    ``allocate`` builds each ContainerAllocateResponse; set ``fail_allocate`` to a message to make Allocate
    fail with it (code Unknown), and ``preferred`` to answer GetPreferredAllocation. Calls are recorded in
    ``allocate_calls``, ``preferred_calls`` and ``prestart_calls``.
    """

    def __init__(
        self,
        socket_path: Path | str,
        devices: Iterable[DeviceLike] = (),
        *,
        pre_start_required: bool = False,
        get_preferred_allocation_available: bool = False,
        allocate: AllocateHandler = default_allocate,
        preferred: PreferredHandler | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.options = api_pb2.DevicePluginOptions(
            pre_start_required=pre_start_required,
            get_preferred_allocation_available=get_preferred_allocation_available,
        )
        self.allocate = allocate
        self.preferred = preferred
        self.fail_allocate: str | None = None
        self.allocate_calls: list[api_pb2.AllocateRequest] = []
        self.preferred_calls: list[api_pb2.PreferredAllocationRequest] = []
        self.prestart_calls: list[api_pb2.PreStartContainerRequest] = []
        self._devices = [_device(d) for d in devices]
        self._generation = 0
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self._stopping = False

    # ------------------------------------------------------------------ control
    def start(self) -> SamplePlugin:
        """Serve on ``socket_path`` (replacing a stale socket file)."""
        if self.socket_path.exists():
            self.socket_path.unlink()
        self._stopping = False
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="sample-plugin"))
        api_pb2_grpc.add_DevicePluginServicer_to_server(self, server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        log.info("sample plugin serving on %s", self.socket_path)
        return self

    def stop(self) -> None:
        """Stop serving; open ListAndWatch streams end."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.stop(grace=0).wait(5)
            self._server = None
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> SamplePlugin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def register(self, kubelet_socket: Path | str, resource_name: str, version: str = API_VERSION, timeout: float = 15.0) -> None:
        """Call ``Register`` on kubelet (waiting for its socket); raises ``grpc.RpcError`` when kubelet refuses."""
        with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
            api_pb2_grpc.RegistrationStub(channel).Register(
                api_pb2.RegisterRequest(
                    version=version,
                    endpoint=self.socket_path.name,
                    resource_name=resource_name,
                    options=self.options,
                ),
                timeout=timeout,
                wait_for_ready=True,
            )

    def set_devices(self, devices: Iterable[DeviceLike]) -> None:
        """Replace the device list; every open ListAndWatch stream gets it as a new message."""
        with self._cond:
            self._devices = [_device(d) for d in devices]
            self._generation += 1
            self._cond.notify_all()

    def set_health(self, device_id: str, health: str) -> None:
        with self._cond:
            devices = [api_pb2.Device(ID=d.ID, health=health, topology=d.topology) if device_id == d.ID else d for d in self._devices]
        self.set_devices(devices)

    @property
    def devices(self) -> list[api_pb2.Device]:
        with self._cond:
            return list(self._devices)

    # ------------------------------------------------------------------ DevicePlugin service
    def GetDevicePluginOptions(self, request: api_pb2.Empty, context: grpc.ServicerContext) -> api_pb2.DevicePluginOptions:
        return self.options

    def ListAndWatch(self, request: api_pb2.Empty, context: grpc.ServicerContext) -> Iterator[api_pb2.ListAndWatchResponse]:
        seen = -1
        while context.is_active():
            with self._cond:
                if self._stopping:
                    return
                if seen == self._generation:
                    self._cond.wait(0.1)
                    continue
                seen = self._generation
                response = api_pb2.ListAndWatchResponse(devices=self._devices)
            yield response

    def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreferredAllocationResponse:
        self.preferred_calls.append(request)
        responses = []
        for creq in request.container_requests:
            ids = self.preferred(creq) if self.preferred is not None else list(creq.must_include_deviceIDs)
            responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api_pb2.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request: api_pb2.AllocateRequest, context: grpc.ServicerContext) -> api_pb2.AllocateResponse:
        self.allocate_calls.append(request)
        if self.fail_allocate is not None:
            context.abort(grpc.StatusCode.UNKNOWN, self.fail_allocate)
        return api_pb2.AllocateResponse(container_responses=[self.allocate(c) for c in request.container_requests])

    def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreStartContainerResponse:
        self.prestart_calls.append(request)
        return api_pb2.PreStartContainerResponse()
