"""The node's DRA driver: publish ResourceSlices, serve kubelet, keep both current, clean up on exit.

A command of its own (``hami dra serve``), not a mode of the device-plugin agent: the two are
alternative ways to offer the same devices, and kube-scheduler's DRA allocator never sees what
HAMi's extender granted (nor the other way round), so running both on one node double-books every
device. A separate command (and DaemonSet, off by default in the chart) makes that choice explicit
per node while sharing the agent's discovery code (:func:`hami.node.devices.discover_node`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes

from hami.dra import DRIVER
from hami.dra.kubelet import DraService, RegistrationService, serve
from hami.dra.pluginregistration import api_pb2_grpc as reg_grpc
from hami.dra.slices import API_VERSION, build_slices
from hami.dra.v1 import api_pb2_grpc as dra_grpc
from hami.node.devices import Discovery, current_health, discover_node
from hami.plugin.manager import BackendManager

log = logging.getLogger(__name__)

GROUP, VERSION = API_VERSION.split("/")
DEFAULT_REGISTRY_DIR = Path("/var/lib/kubelet/plugins_registry")
DEFAULT_PLUGIN_DIR = Path("/var/lib/kubelet/plugins") / DRIVER


class SlicePublisher:
    """Keeps the node's ResourceSlices equal to what discovery says (create, replace, delete), bumping
    the pool generation whenever the devices change, so schedulers drop the older slices."""

    def __init__(self, api_client: kubernetes.client.ApiClient, node_name: str) -> None:
        self.api = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.node_name = node_name

    def existing(self) -> dict[str, dict[str, Any]]:
        selector = f"spec.driver={DRIVER},spec.nodeName={self.node_name}"
        found: dict[str, Any] = self.api.list_cluster_custom_object(GROUP, VERSION, "resourceslices", field_selector=selector)  # type: ignore[assignment]
        return {s["metadata"]["name"]: s for s in found.get("items", [])}

    def _node_uid(self) -> str | None:
        try:
            node = self.core.read_node(self.node_name)
            return str(node.metadata.uid) if node.metadata is not None else None
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def publish(self, discovery: Discovery, health: Mapping[str, bool] | None = None) -> bool:
        """Write the slices for ``discovery`` (True), or nothing when they are already current (False)."""
        existing = self.existing()
        generation = max((s["spec"]["pool"]["generation"] for s in existing.values()), default=0)
        node_uid = self._node_uid()
        wanted = build_slices(discovery, self.node_name, generation=max(generation, 1), health=health, node_uid=node_uid)

        def same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
            return bool(a["spec"] == b["spec"])

        names = [w["metadata"]["name"] for w in wanted]
        if len(wanted) == len(existing) and all(n in existing and same(w, existing[n]) for n, w in zip(names, wanted, strict=True)):
            return False
        wanted = build_slices(discovery, self.node_name, generation=generation + 1, health=health, node_uid=node_uid)
        for body in wanted:
            name = body["metadata"]["name"]
            if name in existing:
                body["metadata"]["resourceVersion"] = existing[name]["metadata"]["resourceVersion"]
                self.api.replace_cluster_custom_object(GROUP, VERSION, "resourceslices", name, body)
                del body["metadata"]["resourceVersion"]
            else:
                self.api.create_cluster_custom_object(GROUP, VERSION, "resourceslices", body)
        for name in sorted(set(existing) - {b["metadata"]["name"] for b in wanted}):
            self._delete(name)
        log.info(
            "event=dra_slices_published node=%s generation=%d slices=%d devices=%d",
            self.node_name,
            generation + 1,
            len(wanted),
            sum(len(b["spec"]["devices"]) for b in wanted),
        )
        return True

    def _delete(self, name: str) -> None:
        try:
            self.api.delete_cluster_custom_object(GROUP, VERSION, "resourceslices", name)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise

    def delete_all(self) -> int:
        existing = self.existing()
        for name in existing:
            self._delete(name)
        return len(existing)


class DraDriver:
    """Discovery, slices and kubelet services of one node; :meth:`start` then :meth:`stop`."""

    def __init__(
        self,
        manager: BackendManager,
        node_name: str,
        api_client: kubernetes.client.ApiClient,
        *,
        registry_dir: Path = DEFAULT_REGISTRY_DIR,
        plugin_dir: Path = DEFAULT_PLUGIN_DIR,
        cdi_dir: Path = Path("/var/run/cdi"),
        state_root: Path | None = None,
        interval: float = 30.0,
    ) -> None:
        self.manager = manager
        self.node_name = node_name
        self.state_root = Path(state_root) if state_root is not None else Path("/var/lib/hami")
        self.publisher = SlicePublisher(api_client, node_name)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.registry_socket = Path(registry_dir) / f"{DRIVER}-reg.sock"
        self.dra_socket = Path(plugin_dir) / "dra.sock"
        self.interval = interval
        self._discovery = discover_node(manager, node_name, self.state_root)
        self._health: dict[str, bool] = {}
        self.service = DraService(
            manager, node_name, lambda: self._discovery, self._read_claim, self._read_pod, Path(cdi_dir), self.state_root
        )
        self.registration = RegistrationService(str(self.dra_socket))
        self._servers: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def discovery(self) -> Discovery:
        return self._discovery

    def _read_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        claim: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "resourceclaims", name)  # type: ignore[assignment]
        return claim

    def _read_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            pod = self.core.read_namespaced_pod(name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(self.core.api_client.sanitize_for_serialization(pod))

    def start(self) -> DraDriver:
        """Publish, then serve the DRA socket, then the registration socket (kubelet dials the
        endpoint as soon as it sees the registration socket)."""
        self.publisher.publish(self._discovery)
        self._servers.append(serve([(dra_grpc.add_DRAPluginServicer_to_server, self.service)], self.dra_socket))
        self._servers.append(serve([(reg_grpc.add_RegistrationServicer_to_server, self.registration)], self.registry_socket))
        self._thread = threading.Thread(target=self._loop, name="hami-dra-refresh", daemon=True)
        self._thread.start()
        return self

    def refresh(self) -> bool:
        """Discover again and check health, then make the published slices match: a device or health
        change, or slices someone deleted or edited, are written again (True when anything was)."""
        discovery = discover_node(self.manager, self.node_name, self.state_root)
        health = current_health(self.manager, discovery)
        self._discovery, self._health = discovery, health
        return self.publisher.publish(discovery, health)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # the API server away: try again next round
                log.warning("event=dra_refresh_failed node=%s error=%r", self.node_name, f"{type(exc).__name__}: {exc}")

    def stop(self, *, delete_slices: bool = True) -> None:
        """Stop serving (registration socket first, so kubelet unregisters us) and delete our slices."""
        self._stop.set()
        for server in reversed(self._servers):
            server.stop(grace=1).wait()
        self._servers.clear()
        self.registry_socket.unlink(missing_ok=True)
        self.dra_socket.unlink(missing_ok=True)
        if delete_slices:
            try:
                self.publisher.delete_all()
            except Exception as exc:
                log.warning("event=dra_slices_not_deleted node=%s error=%r", self.node_name, str(exc))
