"""A fake kubelet that speaks the real device plugin gRPC API over unix sockets.

It lets tests run a device plugin against what kubelet does — registration checks, dial-back,
ListAndWatch, GetPreferredAllocation, Allocate, PreStartContainer, socket wipe on restart and node
capacity updates — without a node. Pod admission follows kubelet's device manager (init containers
first, init-container devices reusable by later containers, reason ``UnexpectedAdmissionError``).
"""

from __future__ import annotations

import asyncio
import logging
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from hami.k8snames import is_extended_resource_name
from hami.node.deviceplugin import API_VERSION, HEALTHY, KUBELET_SOCKET, UNHEALTHY
from hami.node.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc
from hami.node.podresources import pod_resources_socket as pod_resources_socket_for
from hami.node.podresources.v1 import api_pb2_grpc as podresources_grpc

from . import aioloop
from .admission import (
    CREATE_CONTAINER_CONFIG_ERROR,
    AdmissionError,
    AdmissionResult,
    ContainerAllocation,
    PodView,
    device_count,
    go_grpc_error,
    pod_view,
    unexpected,
)
from .endpoint import CALL_TIMEOUT_S, PluginEndpoint
from .node_status import NodeStatusMirror
from .podresources import PodResourcesServicer

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _aio_server(address: str, add: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> grpc.aio.Server:
    """A started grpc.aio server for one servicer (created on the loop, which grpc.aio requires)."""
    server = grpc.aio.server()
    add(servicer, server)
    server.add_insecure_port(address)
    await server.start()
    return server


STREAM_GRACE_PERIOD = 300.0
"""Seconds a resource outlives its plugin's ended stream: kubelet's ``endpointStopGracePeriod``."""
CONNECTION_CLOSING = "rpc error: code = Canceled desc = grpc: the client connection is closing"
"""What Go's gRPC answers a call on a closed ClientConn: an admission racing a restart or re-registration."""


class _Registration(api_pb2_grpc.RegistrationServicer):
    """The ``v1beta1.Registration`` service; errors are plain (code Unknown), as kubelet returns them.

    Served on the shared loop (:mod:`.aioloop`); the registration itself dials the plugin back and
    blocks, so it runs in the loop's executor."""

    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    async def Register(self, request: api_pb2.RegisterRequest, context: grpc.aio.ServicerContext) -> api_pb2.Empty:
        try:
            await asyncio.to_thread(self.kubelet._register, request)
        except _RegisterError as err:
            log.info("rejected registration of %r: %s", request.resource_name, err)
            await context.abort(grpc.StatusCode.UNKNOWN, str(err))
        return api_pb2.Empty()


class _RegisterError(Exception):
    pass


class FakeKubelet:
    """Serves ``Registration`` on ``<plugin_dir>/kubelet.sock`` and drives registered plugins.

    ``core_v1`` (a ``kubernetes.client.CoreV1Api``) is optional; with it the node is created if absent and
    its ``status.capacity`` (all devices) / ``status.allocatable`` (healthy devices) follow the plugins.
    ``stream_grace_period`` is how long a resource whose ListAndWatch stream ended stays (with no healthy
    devices) before it is removed. The default is kubelet's 5 minutes (``endpointStopGracePeriod``,
    pkg/kubelet/cm/devicemanager/endpoint.go): a pod admitted meanwhile fails with
    ``UnexpectedAdmissionError`` instead of starting without its devices, and a plugin that
    re-registers within it serves the resource again. 0 removes the resource at once (a test that
    wants the resource gone says so).
    """

    def __init__(
        self,
        plugin_dir: Path | str,
        node_name: str = "node-1",
        core_v1: Any | None = None,
        *,
        dial_timeout: float = 10.0,
        stream_grace_period: float = STREAM_GRACE_PERIOD,
        register_node: bool = True,
        pod_resources_socket: Path | str | None = None,
    ) -> None:
        self.plugin_dir = Path(plugin_dir)
        self.pod_resources_socket = Path(pod_resources_socket or pod_resources_socket_for(self.plugin_dir))
        """Where ``PodResourcesLister`` is served (:func:`hami.node.podresources.pod_resources_socket`)."""
        self.node_name = node_name
        self.core_v1 = core_v1
        self.dial_timeout = dial_timeout
        self.stream_grace_period = stream_grace_period
        self.register_node = register_node
        self._node = NodeStatusMirror(core_v1, node_name) if core_v1 is not None else None
        self._server: grpc.aio.Server | None = None
        self._cond = threading.Condition(threading.RLock())
        self._registrations: list[api_pb2.RegisterRequest] = []
        self._endpoints: dict[str, PluginEndpoint] = {}
        # resource -> {device id: health}; survives a stopped stream during its grace period.
        self._devices: dict[str, dict[str, str]] = {}
        # pod key -> {container name -> ContainerAllocation}; the in-memory stand-in for the checkpoint.
        self._pods: dict[str, dict[str, ContainerAllocation]] = {}
        self._pod_names: dict[str, tuple[str, str]] = {}  # pod key -> (namespace, name), for PodResources
        self._pod_resources: grpc.aio.Server | None = None
        self._timers: list[threading.Timer] = []
        self._admit_lock = threading.Lock()  # one admission at a time, like the device manager's mutex

    # ------------------------------------------------------------------ lifecycle
    @property
    def socket_path(self) -> Path:
        return self.plugin_dir / KUBELET_SOCKET

    def start(self) -> FakeKubelet:
        self.plugin_dir.mkdir(parents=True, exist_ok=True)
        if self._node is not None and self.register_node:
            self._node.register_node()
        self._serve()
        return self

    def stop(self) -> None:
        """Stop serving, drop every plugin connection and remove ``kubelet.sock``."""
        self._stop_server()
        with self._cond:
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        for ep in endpoints:
            ep.close()

    def restart(self) -> None:
        """Simulate a kubelet restart: stop, delete every socket in the plugin dir, serve a new ``kubelet.sock``.

        Registrations are forgotten (plugins must re-register); resources of the old plugins go through the
        stream grace period; pod device assignments survive (kubelet keeps them in its checkpoint).
        """
        self._stop_server()
        with self._cond:
            endpoints = list(self._endpoints.values())
            self._endpoints.clear()
            self._registrations.clear()
            for ep in endpoints:
                self._stream_ended(ep.resource)
                if ep.resource in self._devices:  # a restarted kubelet knows the resource (checkpoint), no device
                    self._devices[ep.resource] = {}
        for ep in endpoints:
            ep.close()
        for entry in self.plugin_dir.iterdir():
            try:
                if stat.S_ISSOCK(entry.lstat().st_mode):
                    entry.unlink()
                    log.debug("restart: removed socket %s", entry)
            except FileNotFoundError:
                pass
        self._sync_node()
        self._serve()
        log.info("fake kubelet restarted in %s", self.plugin_dir)

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        if self.socket_path.exists():
            self.socket_path.unlink()
        self._server = aioloop.run(
            _aio_server(f"unix://{self.socket_path}", api_pb2_grpc.add_RegistrationServicer_to_server, _Registration(self))
        )
        log.info("fake kubelet serving Registration on %s", self.socket_path)
        self._serve_pod_resources()

    def _serve_pod_resources(self) -> None:
        socket = self.pod_resources_socket
        socket.parent.mkdir(parents=True, exist_ok=True)
        if socket.exists():
            socket.unlink()
        servicer = PodResourcesServicer(self.pod_resources, self._allocatable)
        self._pod_resources = aioloop.run(
            _aio_server(f"unix://{socket}", podresources_grpc.add_PodResourcesListerServicer_to_server, servicer)
        )
        log.info("fake kubelet serving PodResourcesLister on %s", socket)

    def _stop_server(self) -> None:
        if self._server is not None:
            aioloop.run(self._server.stop(grace=0))
            self._server = None
        if self._pod_resources is not None:
            aioloop.run(self._pod_resources.stop(grace=0))
            self._pod_resources = None
            self.pod_resources_socket.unlink(missing_ok=True)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------------ registration
    def _register(self, request: api_pb2.RegisterRequest) -> None:
        with self._cond:
            self._registrations.append(api_pb2.RegisterRequest.FromString(request.SerializeToString()))
            self._cond.notify_all()
        if request.version != API_VERSION:
            raise _RegisterError(
                f"requested API version {request.version!r} is not supported by kubelet. Supported versions are [{API_VERSION!r}]"
            )
        if not is_extended_resource_name(request.resource_name):
            raise _RegisterError(f"the ResourceName {request.resource_name!r} is invalid")
        if not request.endpoint or "/" in request.endpoint:
            raise _RegisterError(f"invalid endpoint {request.endpoint!r}: must be a socket base name")
        resource = request.resource_name
        ep = PluginEndpoint(resource, self.plugin_dir / request.endpoint, self._stream_update, self._on_stream_end)
        try:
            ep.connect(self.dial_timeout)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _RegisterError(f"failed to dial device plugin: context deadline exceeded ({ep.socket_path})") from None
            raise _RegisterError(f"failed to get device plugin options: {go_grpc_error(err)}") from None
        with self._cond:
            old = self._endpoints.get(resource)
            self._endpoints[resource] = ep
            self._devices.setdefault(resource, {})
        if old is not None:
            old.close()
        log.info("registered plugin for %s at %s (options: %s)", resource, ep.socket_path, ep.options)
        ep.start_watch()

    def _stream_update(self, ep: PluginEndpoint) -> None:
        with self._cond:
            if self._endpoints.get(ep.resource) is not ep:
                return
            self._devices[ep.resource] = {d.ID: d.health for d in ep.devices.values()}
            self._cond.notify_all()
        self._sync_node()

    def _on_stream_end(self, ep: PluginEndpoint) -> None:
        with self._cond:
            current = self._endpoints.get(ep.resource) is ep
            if current:
                del self._endpoints[ep.resource]
                self._stream_ended(ep.resource)
        ep.close()
        if current:
            self._sync_node()

    def _stream_ended(self, resource: str) -> None:
        """Kubelet marks a vanished plugin's devices unhealthy, then drops the resource after the grace period.

        Called with ``_cond`` held, right after the endpoint was removed; the caller syncs the node.
        """
        devs = self._devices.get(resource)
        if devs is not None:
            self._devices[resource] = {d: UNHEALTHY for d in devs}
        self._cond.notify_all()
        if self.stream_grace_period <= 0:
            self._expire_locked(resource)
            return
        timer = threading.Timer(self.stream_grace_period, self._expire, args=(resource,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _expire(self, resource: str) -> None:
        with self._cond:
            self._expire_locked(resource)
        self._sync_node()

    def _expire_locked(self, resource: str) -> None:
        if resource in self._endpoints:  # re-registered meanwhile
            return
        if self._devices.pop(resource, None) is not None:
            log.info("resource %s removed: its plugin's stream ended", resource)
        self._cond.notify_all()

    def _sync_node(self) -> None:
        if self._node is None:
            return
        with self._cond:
            counts = {r: (len(devs), sum(1 for h in devs.values() if h == HEALTHY)) for r, devs in self._devices.items()}
        self._node.sync(counts)

    # ------------------------------------------------------------------ views
    @property
    def registrations(self) -> list[api_pb2.RegisterRequest]:
        """Every RegisterRequest received since start (or the last restart), accepted or not."""
        with self._cond:
            return list(self._registrations)

    def resources(self) -> list[str]:
        """Resources with a connected plugin."""
        with self._cond:
            return sorted(self._endpoints)

    def options(self, resource: str) -> api_pb2.DevicePluginOptions | None:
        """The options fetched with GetDevicePluginOptions when the plugin registered."""
        with self._cond:
            ep = self._endpoints.get(resource)
            return ep.options if ep is not None else None

    def devices(self, resource: str) -> dict[str, str]:
        """Latest device list of ``resource``: ``{device id: health}``."""
        with self._cond:
            return dict(self._devices.get(resource, {}))

    def healthy_devices(self, resource: str) -> list[str]:
        return sorted(d for d, h in self.devices(resource).items() if h == HEALTHY)

    def topology(self, resource: str) -> dict[str, list[int]]:
        """NUMA nodes per device, as the plugin last reported them."""
        with self._cond:
            ep = self._endpoints.get(resource)
            devs = dict(ep.devices) if ep is not None else {}
        return {i: [n.ID for n in d.topology.nodes] for i, d in devs.items()}

    def pod_resources(self) -> dict[tuple[str, str], dict[str, ContainerAllocation]]:
        """What ``List`` reports: (namespace, name) of each admitted pod → its containers' devices."""
        with self._cond:
            return {self._pod_names.get(k, ("default", k)): dict(c) for k, c in self._pods.items()}

    def _allocatable(self) -> dict[str, list[str]]:
        with self._cond:
            return {r: sorted(d for d, h in devs.items() if h == HEALTHY) for r, devs in self._devices.items()}

    def assigned(self, resource: str) -> set[str]:
        """Device IDs of ``resource`` currently assigned to admitted pods."""
        with self._cond:
            return {d for conts in self._pods.values() for c in conts.values() for d in c.devices.get(resource, ())}

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "condition") -> T:
        """Wait until ``predicate()`` is truthy and return its value; raise ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()  # outside the lock: it may call the API server
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            with self._cond:
                self._cond.wait(min(left, 0.05))

    def wait_devices(self, resource: str, count: int, timeout: float = 5.0, *, healthy: bool = True) -> dict[str, str]:
        """Wait until ``resource`` has exactly ``count`` (healthy, by default) devices; return its device map."""

        def count_matches() -> bool:
            devs = self.devices(resource)
            n = sum(1 for h in devs.values() if h == HEALTHY) if healthy else len(devs)
            return n == count

        kind = "healthy devices" if healthy else "devices"
        try:
            self.wait_for(count_matches, timeout, f"{resource} to have {count} {kind}")
        except TimeoutError as err:
            raise TimeoutError(f"{err}; it has {self.devices(resource)}") from None
        return self.devices(resource)

    def wait_registered(self, resource: str, timeout: float = 5.0) -> None:
        self.wait_for(lambda: resource in self._endpoints, timeout, f"a plugin for {resource} to register")

    # ------------------------------------------------------------------ admission
    def admit(self, pod: Any) -> AdmissionResult:
        """Allocate devices for a pod bound to this node, like kubelet's device manager admit handler."""
        view = pod_view(pod)
        if view.node_name and view.node_name != self.node_name:
            raise ValueError(f"pod {view.key} is bound to {view.node_name}, not to {self.node_name}")
        with self._admit_lock:
            with self._cond:
                if view.key in self._pods:  # already admitted: kubelet reuses the assignment
                    return AdmissionResult(view.key, True, containers=dict(self._pods[view.key]))
                self._pods[view.key] = {}
                self._pod_names[view.key] = (view.namespace, view.name)
            try:
                containers = self._allocate_pod(view)
                self._pre_start(containers)
            except AdmissionError as err:
                with self._cond:  # devices of a rejected pod go back to the pool
                    self._pods.pop(view.key, None)
                    self._pod_names.pop(view.key, None)
                    self._cond.notify_all()
                log.info("pod %s not admitted: %s", view.key, err)
                return AdmissionResult(view.key, False, err.reason, str(err))
            log.info("pod %s admitted", view.key)
            return AdmissionResult(view.key, True, containers=containers)

    def release(self, pod: Any) -> None:
        """Free the devices of a pod (it terminated or was deleted); ``pod`` may be a pod or its key."""
        key = pod if isinstance(pod, str) else pod_view(pod).key
        with self._cond:
            self._pods.pop(key, None)
            self._pod_names.pop(key, None)
            self._cond.notify_all()

    def _allocate_pod(self, view: PodView) -> dict[str, ContainerAllocation]:
        reusable: dict[str, set[str]] = {}
        out: dict[str, ContainerAllocation] = {}
        for name, is_init, limits in view.containers:
            alloc = ContainerAllocation(name=name, init=is_init)
            with self._cond:
                self._pods[view.key][name] = alloc
            for resource, quantity in sorted(limits.items()):
                with self._cond:
                    ep = self._endpoints.get(resource)
                    known = resource in self._devices
                if ep is None and not known:
                    continue  # not a device plugin resource on this node
                needed = device_count(resource, quantity)
                if needed == 0:
                    continue
                if ep is None:
                    raise AdmissionError(unexpected(f"endpoint not found in cache for a registered resource: {resource}"))
                ids = self._devices_to_allocate(ep, needed, reusable.get(resource, set()))
                alloc.devices[resource] = ids
                alloc.responses[resource] = self._call_allocate(ep, ids)
            # Devices of a (non-sidecar) init container can be reused by the containers after it.
            for resource, ids in alloc.devices.items():
                if is_init:
                    reusable.setdefault(resource, set()).update(ids)
                else:
                    reusable.get(resource, set()).difference_update(ids)
            out[name] = alloc
        return out

    def _devices_to_allocate(self, ep: PluginEndpoint, needed: int, reusable: set[str]) -> list[str]:
        resource = ep.resource
        with self._cond:
            chosen = sorted(reusable)[:needed]
            in_use = self.assigned(resource)
            healthy = [d for d, h in sorted(self._devices.get(resource, {}).items()) if h == HEALTHY]
            available = [d for d in healthy if d not in in_use and d not in chosen]
        remaining = needed - len(chosen)
        if remaining <= 0:
            return chosen
        if len(available) < remaining:
            raise AdmissionError(
                unexpected(f"requested number of devices unavailable for {resource}. Requested: {remaining}, Available: {len(available)}")
            )
        if ep.options.get_preferred_allocation_available:
            preferred = self._preferred(ep, available + chosen, chosen, needed)
            for d in preferred:
                if len(chosen) == needed:
                    break
                if d in available and d not in chosen:
                    chosen.append(d)
        for d in available:
            if len(chosen) == needed:
                break
            if d not in chosen:
                chosen.append(d)
        return chosen

    def _preferred(self, ep: PluginEndpoint, available: list[str], must_include: list[str], size: int) -> list[str]:
        request = api_pb2.PreferredAllocationRequest(
            container_requests=[
                api_pb2.ContainerPreferredAllocationRequest(
                    available_deviceIDs=available, must_include_deviceIDs=must_include, allocation_size=size
                )
            ]
        )
        try:
            response = ep.stub.GetPreferredAllocation(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            raise AdmissionError(unexpected(go_grpc_error(err))) from None
        except ValueError:  # closed meanwhile (a restart, a re-registration): "Cannot invoke RPC on closed channel!"
            raise AdmissionError(unexpected(CONNECTION_CLOSING)) from None
        if not response.container_responses:
            return []
        return list(response.container_responses[0].deviceIDs)

    def _call_allocate(self, ep: PluginEndpoint, ids: list[str]) -> api_pb2.ContainerAllocateResponse:
        request = api_pb2.AllocateRequest(container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=ids)])
        try:
            response = ep.stub.Allocate(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as err:
            raise AdmissionError(unexpected(go_grpc_error(err))) from None
        except ValueError:  # closed meanwhile, as above
            raise AdmissionError(unexpected(CONNECTION_CLOSING)) from None
        if not response.container_responses:
            raise AdmissionError(unexpected(f"no containers return in allocation response {response}"))
        return response.container_responses[0]

    def _pre_start(self, containers: dict[str, ContainerAllocation]) -> None:
        for alloc in containers.values():
            for resource, ids in alloc.devices.items():
                ep = self._endpoints.get(resource)
                if ep is None or not ep.options.pre_start_required:
                    continue
                try:
                    ep.stub.PreStartContainer(api_pb2.PreStartContainerRequest(devices_ids=ids), timeout=CALL_TIMEOUT_S)
                except (grpc.RpcError, ValueError) as err:  # ValueError: the endpoint was closed meanwhile
                    why = go_grpc_error(err) if isinstance(err, grpc.RpcError) else CONNECTION_CLOSING
                    raise AdmissionError(
                        f"PreStartContainer failed for {resource} in container {alloc.name}: {why}", CREATE_CONTAINER_CONFIG_ERROR
                    ) from None
