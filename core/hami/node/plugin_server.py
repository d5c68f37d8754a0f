"""One kubelet device plugin (``v1beta1.DevicePlugin``) per resource name, on a unix socket.

The servicer keeps the advertised device list and outlives its gRPC server: after a kubelet
restart wipes the socket, the agent serves a fresh server on the same path with the same servicer,
so ListAndWatch starts from the current list. Allocate and GetPreferredAllocation are delegated to
the agent's :class:`~hami.node.allocate.Allocator`; this module only speaks gRPC.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Protocol

import grpc

from hami.node.allocate import AllocateError
from hami.node.deviceplugin import API_VERSION
from hami.node.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from hami.node.metrics import AgentMetrics

log = logging.getLogger(__name__)

_WAKE_S = 5.0
"""How often an idle ListAndWatch stream checks that kubelet is still there; a stream kubelet ends
wakes at once (the RPC's termination callback), so this is only a safety net. Each wake costs a
thread switch per node: 0.5 s was 1,000 wake-ups a second across a 500-node sandbox (issue 29)."""


class AllocationHandler(Protocol):
    def allocate(self, resource: str, devices_ids: Sequence[str]) -> api_pb2.ContainerAllocateResponse: ...

    def preferred(self, resource: str, request: api_pb2.ContainerPreferredAllocationRequest) -> list[str]: ...


def socket_name(resource: str, prefix: str = "hami-") -> str:
    """``acme.com/gpu`` → ``hami-acme.com-gpu.sock``: a base name kubelet accepts as endpoint."""
    return f"{prefix}{resource.replace('/', '-')}.sock"


class DevicePluginServicer(api_pb2_grpc.DevicePluginServicer):
    """The DevicePlugin service of one resource."""

    def __init__(self, resource: str, handler: AllocationHandler, metrics: AgentMetrics | None = None) -> None:
        self.resource = resource
        self.handler = handler
        self.metrics = metrics
        self.options = api_pb2.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)
        self._cond = threading.Condition()
        self._devices: tuple[api_pb2.Device, ...] = ()
        self._generation = 0
        self._closed = False

    # ------------------------------------------------------------ state
    def set_devices(self, devices: Sequence[api_pb2.Device]) -> bool:
        """Replace the list; open streams send it if it changed. True when it changed."""
        new = tuple(devices)
        with self._cond:
            if new == self._devices and self._generation:
                return False
            self._devices = new
            self._generation += 1
            self._cond.notify_all()
        log.info(
            "event=devices_updated resource=%s devices=%d unhealthy=%d", self.resource, len(new), sum(d.health != "Healthy" for d in new)
        )
        return True

    @property
    def devices(self) -> tuple[api_pb2.Device, ...]:
        with self._cond:
            return self._devices

    def close_streams(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _wake_streams(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False

    # ------------------------------------------------------------ DevicePlugin service
    def GetDevicePluginOptions(self, request: api_pb2.Empty, context: grpc.ServicerContext) -> api_pb2.DevicePluginOptions:
        return self.options

    def ListAndWatch(self, request: api_pb2.Empty, context: grpc.ServicerContext) -> Iterator[api_pb2.ListAndWatchResponse]:
        seen = -1
        log.info("event=list_and_watch_open resource=%s", self.resource)
        context.add_callback(self._wake_streams)  # kubelet hung up: stop waiting now
        while context.is_active():
            with self._cond:
                if self._closed:
                    return
                if seen == self._generation:
                    self._cond.wait(_WAKE_S)
                    continue
                seen = self._generation
                response = api_pb2.ListAndWatchResponse(devices=self._devices)
            yield response

    def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreferredAllocationResponse:
        responses = []
        for container in request.container_requests:
            try:
                ids = self.handler.preferred(self.resource, container)
            except Exception:  # a preference is advice: never fail admission over it
                log.exception("event=preferred_allocation_failed resource=%s", self.resource)
                ids = list(container.must_include_deviceIDs)
            responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api_pb2.PreferredAllocationResponse(container_responses=responses)

    def Allocate(self, request: api_pb2.AllocateRequest, context: grpc.ServicerContext) -> api_pb2.AllocateResponse:
        started = time.perf_counter()
        code = "OK"
        try:
            responses = []
            for container in request.container_requests:
                try:
                    responses.append(self.handler.allocate(self.resource, list(container.devices_ids)))
                except AllocateError as exc:
                    code = exc.code.name
                    log.warning("event=allocate_failed resource=%s code=%s error=%r", self.resource, exc.code.name, str(exc))
                    context.abort(exc.code, str(exc))
                except Exception as exc:  # a bug must become a status kubelet shows, not a dead thread
                    code = "INTERNAL"
                    log.exception("event=allocate_crashed resource=%s", self.resource)
                    context.abort(
                        grpc.StatusCode.INTERNAL, f"{self.resource}: internal error in the hami agent: {type(exc).__name__}: {exc}"
                    )
            return api_pb2.AllocateResponse(container_responses=responses)
        finally:
            if self.metrics is not None:
                self.metrics.observe_allocate(self.resource, time.perf_counter() - started, code)

    def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: grpc.ServicerContext
    ) -> api_pb2.PreStartContainerResponse:
        return api_pb2.PreStartContainerResponse()


class DevicePluginServer:
    """A servicer served on ``<plugin dir>/<socket name>`` and registered with kubelet."""

    def __init__(self, servicer: DevicePluginServicer, plugin_dir: Path, *, socket_prefix: str = "hami-", workers: int = 8) -> None:
        self.servicer = servicer
        self.socket_path = Path(plugin_dir) / socket_name(servicer.resource, socket_prefix)
        self.workers = workers
        self.registered = False
        self._server: grpc.Server | None = None
        self._inode: int | None = None

    @property
    def resource(self) -> str:
        return self.servicer.resource

    def start(self) -> None:
        """Serve (replacing a stale socket file); kubelet must be able to dial us before we register."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self.servicer.reopen()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"dp-{self.resource}"))
        api_pb2_grpc.add_DevicePluginServicer_to_server(self.servicer, server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        self._inode = self._current_inode()
        self.registered = False
        log.info("event=plugin_serving resource=%s socket=%s", self.resource, self.socket_path)

    def stop(self) -> None:
        self.servicer.close_streams()
        if self._server is not None:
            self._server.stop(grace=0).wait(5)
            self._server = None
        if self._inode is not None and self._current_inode() == self._inode:
            self.socket_path.unlink(missing_ok=True)
        self._inode = None
        self.registered = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def _current_inode(self) -> int | None:
        try:
            return self.socket_path.stat().st_ino
        except OSError:
            return None

    def socket_intact(self) -> bool:
        """False once kubelet (restarting) deleted or replaced our socket file."""
        return self._server is not None and self._inode is not None and self._current_inode() == self._inode

    def register(self, kubelet_socket: Path, timeout: float = 5.0) -> None:
        """Call kubelet's ``Register``; raises ``grpc.RpcError`` when kubelet is absent or refuses."""
        with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
            api_pb2_grpc.RegistrationStub(channel).Register(
                api_pb2.RegisterRequest(
                    version=API_VERSION,
                    endpoint=self.socket_path.name,
                    resource_name=self.resource,
                    options=self.servicer.options,
                ),
                timeout=timeout,
            )
        self.registered = True
        log.info("event=registered_with_kubelet resource=%s endpoint=%s", self.resource, self.socket_path.name)
