"""The node agent (``hami agent``): the process the node DaemonSet runs.

It loads the installed backends, discovers and splits this node's devices, writes the node's
device annotations and handshake (every ``register_interval`` and on a health change, with backoff
while the API server is away), serves one kubelet device plugin per resource name, answers
Allocate from the pod annotations the scheduler wrote, releases devices of pods that are gone, and
re-registers within a poll interval when kubelet restarts. Allocation state lives in the API
objects; what the API server forgets — pods deleted while the agent was down — the pod ledger in
the state directory remembers, and the first pod list after a start reconciles it
(:mod:`hami.node.podwatch`), so restarting the agent loses nothing and releases nothing twice.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import grpc
from kubernetes.client import CoreV1Api

from hami.errors import HamiError
from hami.node.allocate import Allocator, describe_api_error
from hami.node.deviceplugin import DEVICE_PLUGIN_DIR, HEALTHY, KUBELET_SOCKET, UNHEALTHY
from hami.node.deviceplugin.v1beta1 import api_pb2
from hami.node.devices import Discovery, NodeDevice, discover_node
from hami.node.metrics import AgentMetrics, MetricsServer, api_pods, serve_metrics
from hami.node.plugin_server import DevicePluginServer, DevicePluginServicer
from hami.node.podresources import PodResourcesClient, pod_resources_socket
from hami.node.podwatch import LEDGER_FILE, PodReleaser
from hami.node.registration import Backoff, NodeRegistrar
from hami.node.usage import UsageSampler
from hami.plugin.manager import DEFAULT_STATE_ROOT, BackendManager
from hami.wire.signing import SigningKeys

log = logging.getLogger(__name__)


@attrs.frozen
class AgentOptions:
    """Knobs of one agent; the defaults are what the DaemonSet runs with, tests shorten the intervals."""

    node_name: str
    device_plugin_dir: Path = attrs.field(default=Path(DEVICE_PLUGIN_DIR), converter=Path)
    register_interval: float = 30.0
    """Seconds between node annotation writes (and rediscoveries) when nothing changes."""
    health_interval: float = 5.0
    """Seconds between ``hami_device_health`` calls."""
    kubelet_poll_interval: float = 0.5
    """Seconds between checks for a kubelet restart (our socket gone, kubelet.sock re-created)."""
    retry_initial: float = 1.0
    retry_max: float = 30.0
    request_timeout: float = 5.0
    """Timeout of every API server request made while kubelet waits (Allocate)."""
    register_timeout: float = 5.0
    socket_prefix: str = "hami-"
    watch_pods: bool = True
    """Run the pod watch that calls ``hami_release`` for pods that are gone."""
    metrics_bind: tuple[str, int] | None = None
    """Serve Prometheus metrics on (host, port); None: do not serve (tests)."""
    usage_interval: float = 5.0
    """Seconds between usage samples (``hami_sample_usage``; HAMi's feedback period); ``/metrics`` reads the last one."""
    legacy_metrics: bool = False
    """Also export HAMi's pre-2.8 metric names (``--legacy-metrics``)."""
    state_dir: Path = attrs.field(default=DEFAULT_STATE_ROOT, converter=Path)
    """Root of the backends' per-node state (``<state_dir>/<backend>``, ``NodeContext.state_dir``) and
    of the agent's pod ledger (``<state_dir>/hami-agent/pods.json``): a host directory, so that a
    restarted agent still knows which pods hold devices."""
    pod_resources_socket: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    """Kubelet's PodResources socket; None: beside the device plugin directory
    (:func:`hami.node.podresources.pod_resources_socket`)."""


class Agent:
    """Owns the plugin servers and the background loops; ``start()``/``stop()`` or ``with``."""

    def __init__(
        self,
        manager: BackendManager,
        core_v1: CoreV1Api,
        options: AgentOptions,
        keys: SigningKeys | None,
        *,
        insecure_skip_signature: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keys is None and not insecure_skip_signature:
            raise HamiError(
                "the agent needs the allocation signing keys (--signing-key-dir or HAMI_SIGNING_KEY_DIR); "
                "start it with --insecure-skip-signature to trust any pod annotation"
            )
        self.manager = manager
        self.core_v1 = core_v1
        self.options = options
        self.node = options.node_name
        self.insecure = keys is None
        self.allocator = Allocator(
            manager, core_v1, self.node, keys, request_timeout=options.request_timeout, clock=clock, discovery=lambda: self.discovery
        )
        self.registrar = NodeRegistrar(core_v1, self.node, manager.kinds, request_timeout=options.request_timeout, clock=clock)
        pod_resources = options.pod_resources_socket or pod_resources_socket(options.device_plugin_dir)
        self.releaser = PodReleaser(
            manager,
            core_v1,
            self.node,
            request_timeout=options.request_timeout,
            backoff=Backoff(options.retry_initial, options.retry_max),
            discovery=lambda: self.discovery,
            ledger=options.state_dir / LEDGER_FILE,
            pod_resources=PodResourcesClient(pod_resources, timeout=options.request_timeout),
        )
        self.servers: dict[str, DevicePluginServer] = {}
        self._explained: set[tuple[str, str, str]] = set()
        """(backend, device id, reason) of the unadvertised devices already logged: once, not every refresh."""
        self.usage = UsageSampler(self, api_pods(core_v1, self.node), interval=options.usage_interval)
        self.metrics = AgentMetrics(self, legacy=options.legacy_metrics)
        self.metrics_server: MetricsServer | None = None
        self.discovery: Discovery = Discovery()
        self.health: dict[str, bool] = {}
        """Device id → health reported by ``hami_device_health`` (overrides what discovery said)."""
        self.node_registered = threading.Event()
        self.node_registrations = 0
        self.kubelet_registrations = 0
        self._state = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_discovery = 0.0

    # ------------------------------------------------------------ lifecycle
    @property
    def kubelet_socket(self) -> Path:
        return self.options.device_plugin_dir / KUBELET_SOCKET

    def start(self) -> Agent:
        if self.insecure:
            log.warning(
                "event=signature_check_disabled node=%s msg=%r", self.node, "--insecure-skip-signature: any pod annotation is trusted"
            )
        for record in self.manager.records:
            if record.status == "failed":
                log.error(
                    "event=backend_broken backend=%s distribution=%s version=%s error=%r",
                    record.name,
                    record.distribution,
                    record.version,
                    record.error,
                )
        log.info(
            "event=agent_starting node=%s backends=%s plugin_dir=%s",
            self.node,
            ",".join(sorted(self.manager.backends)),
            self.options.device_plugin_dir,
        )
        self.refresh()
        with self._state:
            self._check_kubelet(restarted=False)
        for target, name in (
            (self._registration_loop, "hami-node-register"),
            (self._health_loop, "hami-health"),
            (self._kubelet_loop, "hami-kubelet-watch"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.options.watch_pods:
            self.releaser.start()
        self.usage.start()
        if self.options.metrics_bind is not None:
            self.metrics_server = serve_metrics(self.metrics.registry, *self.options.metrics_bind)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.releaser.stop()
        self.usage.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        with self._state:
            for server in self.servers.values():
                server.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
            self.metrics_server = None
        log.info("event=agent_stopped node=%s", self.node)

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(self) -> None:
        """Start, then serve until SIGTERM or SIGINT (the DaemonSet's pod is being stopped)."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        self.start()
        try:
            while not done.wait(1.0):
                pass
        finally:
            self.stop()

    # ------------------------------------------------------------ devices
    def refresh(self) -> Discovery:
        """Discover and split again, then publish the lists to the plugin servers."""
        discovery = discover_node(self.manager, self.node, self.options.state_dir)
        for seen in discovery.unadvertised:
            key = (seen.backend, seen.id, seen.physical.reason)
            if key not in self._explained:
                self._explained.add(key)
                log.warning(
                    "event=device_not_advertised backend=%s node=%s id=%s index=%d reason=%r",
                    seen.backend,
                    self.node,
                    seen.id,
                    seen.physical.index,
                    seen.physical.reason,
                )
        with self._state:
            self.discovery = discovery
            self._next_discovery = time.monotonic() + self.options.register_interval
            self._publish()
        return discovery

    def healthy(self, device: NodeDevice) -> bool:
        return self.health.get(device.id, device.schedulable.healthy)

    def _plugin_devices(self, devices: Sequence[NodeDevice]) -> list[api_pb2.Device]:
        out: list[api_pb2.Device] = []
        for device in devices:
            health = HEALTHY if self.healthy(device) else UNHEALTHY
            topology = api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=device.physical.numa)])
            out.extend(api_pb2.Device(ID=slot, health=health, topology=topology) for slot in device.slot_ids())
        return out

    def _publish(self) -> None:
        by_resource = self.discovery.by_resource()
        for resource, devices in sorted(by_resource.items()):
            server = self.servers.get(resource)
            if server is None:
                servicer = DevicePluginServicer(resource, self.allocator, self.metrics)
                server = DevicePluginServer(servicer, self.options.device_plugin_dir, socket_prefix=self.options.socket_prefix)
                server.start()
                self.servers[resource] = server
            server.servicer.set_devices(self._plugin_devices(devices))
        for resource, server in self.servers.items():
            if resource not in by_resource:
                server.servicer.set_devices([])  # the devices vanished: advertise none, keep the socket

    # ------------------------------------------------------------ health
    def check_health(self) -> bool:
        """Ask every backend for health changes; publish and re-register when one changed."""
        changed = False
        with self._state:
            devices = list(self.discovery.devices)
        by_backend: dict[str, list[NodeDevice]] = {}
        for node_device in devices:
            by_backend.setdefault(node_device.backend, []).append(node_device)
        for backend, owned in sorted(by_backend.items()):
            known = {d.id: d for d in owned}
            try:
                events = self.manager.device_health(backend, [d.physical for d in owned], self.discovery.contexts.get(backend) or self.node)
            except Exception as exc:
                log.warning("event=health_check_failed backend=%s error=%r", backend, f"{type(exc).__name__}: {exc}")
                continue
            with self._state:
                for event in events:
                    device = known.get(event.device_id)
                    if device is None:
                        log.warning("event=health_unknown_device backend=%s device=%s", backend, event.device_id)
                        continue
                    before = self.healthy(device)
                    self.health[event.device_id] = event.healthy
                    if before != event.healthy:
                        changed = True
                        log.warning(
                            "event=device_health device=%s backend=%s healthy=%s reason=%r", device.id, backend, event.healthy, event.reason
                        )
        if changed:
            with self._state:
                self._publish()
            self._wake.set()
        return changed

    def _health_loop(self) -> None:
        while not self._stop.wait(self.options.health_interval):
            try:
                self.check_health()
            except Exception:
                log.exception("event=health_loop_error node=%s", self.node)

    # ------------------------------------------------------------ node annotations
    def _registration_loop(self) -> None:
        backoff = Backoff(self.options.retry_initial, self.options.retry_max)
        while not self._stop.is_set():
            try:
                if time.monotonic() >= self._next_discovery:
                    self.refresh()
                with self._state:
                    discovery, health = self.discovery, dict(self.health)
                self.registrar.write(discovery, health)
                self.node_registrations += 1
                self.node_registered.set()
                backoff.reset()
                delay = self.options.register_interval
            except Exception as exc:
                delay = backoff.next()
                log.warning("event=node_register_failed node=%s error=%r retry_s=%.1f", self.node, describe_api_error(exc), delay)
            self._wake.wait(delay)
            self._wake.clear()

    # ------------------------------------------------------------ kubelet
    def _kubelet_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.kubelet_socket)
        except OSError:
            return None
        return st.st_ino, st.st_ctime_ns

    def _kubelet_loop(self) -> None:
        last = self._kubelet_identity()
        while not self._stop.wait(self.options.kubelet_poll_interval):
            current = self._kubelet_identity()
            restarted = current is not None and current != last
            last = current
            if restarted:
                log.warning("event=kubelet_restarted node=%s socket=%s", self.node, self.kubelet_socket)
            try:
                with self._state:
                    self._check_kubelet(restarted)
            except Exception:
                log.exception("event=kubelet_loop_error node=%s", self.node)

    def _check_kubelet(self, restarted: bool) -> None:
        """Serve again where our socket vanished; (re-)register what kubelet does not know."""
        for server in self.servers.values():
            if not server.socket_intact():
                log.warning("event=plugin_socket_gone resource=%s socket=%s", server.resource, server.socket_path)
                server.restart()
            elif restarted:
                server.registered = False
            if server.registered or self._kubelet_identity() is None:
                continue
            try:
                server.register(self.kubelet_socket, timeout=self.options.register_timeout)
                self.kubelet_registrations += 1
            except grpc.RpcError as exc:
                log.warning("event=kubelet_register_failed resource=%s code=%s error=%r", server.resource, exc.code().name, exc.details())
