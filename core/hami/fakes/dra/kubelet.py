"""Kubelet's DRA side for tests and the sandbox: the plugin watcher (plugin registration over a
socket in ``plugins_registry``) and the DRA manager (NodePrepareResources before a pod's
containers start, NodeUnprepareResources when it is gone), over real gRPC.

As kubelet (pkg/kubelet/pluginmanager and pkg/kubelet/cm/dra): a new socket in the registry
directory is dialled, ``GetInfo`` must say type ``DRAPlugin``, a driver name and ``v1.DRAPlugin``
among its versions, and the plugin is told the outcome through ``NotifyRegistrationStatus``; a pod's
claims are grouped by driver and prepared in one call per driver; a claim error keeps the pod from
starting with kubelet's message. The CDI ids each container gets are the prepared devices of the
claims (and requests) the container names in ``resources.claims``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import grpc

from hami.dra import DRA_SERVICE, PLUGIN_TYPE
from hami.dra.pluginregistration import api_pb2 as reg_pb2
from hami.dra.pluginregistration import api_pb2_grpc as reg_grpc
from hami.dra.v1 import api_pb2 as dra_pb2
from hami.dra.v1 import api_pb2_grpc as dra_grpc
from hami.errors import HamiError


class PrepareError(HamiError):
    """A pod's claims could not be prepared: the pod stays in ContainerCreating with this message."""


@attrs.frozen
class DraPlugin:
    name: str
    endpoint: str
    versions: tuple[str, ...]


ClaimReader = Callable[[str, str], Mapping[str, Any]]


class FakeDraKubelet:
    """One node's kubelet, DRA side. ``scan()`` registers new plugin sockets (call it, or ``start()``
    a watcher thread); ``prepare(pod)`` / ``unprepare(pod)`` as kubelet does around a pod."""

    def __init__(self, registry_dir: Path | str, read_claim: ClaimReader, *, timeout: float = 10.0) -> None:
        self.registry_dir = Path(registry_dir)
        self.read_claim = read_claim
        self.timeout = timeout
        self.plugins: dict[str, DraPlugin] = {}
        self.refused: dict[str, str] = {}
        """Socket path -> why registration was refused."""
        self.prepared: dict[str, dict[str, Any]] = {}
        """Claim uid -> {driver, namespace, name, devices: [{request_names, pool_name, device_name, cdi_device_ids, share_id}]}."""
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ plugin watcher

    def scan(self) -> list[str]:
        """Register every socket not seen before; the names of the plugins registered now."""
        added: list[str] = []
        if not self.registry_dir.is_dir():
            return added
        for socket in sorted(self.registry_dir.glob("*.sock")):
            if str(socket) in self._seen:
                continue
            self._seen.add(str(socket))
            name = self._register(socket)
            if name:
                added.append(name)
        return added

    def _register(self, socket: Path) -> str | None:
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            stub = reg_grpc.RegistrationStub(channel)
            info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=self.timeout)
            error = ""
            if info.type != PLUGIN_TYPE:
                error = f"plugin type {info.type!r} is not handled here (want {PLUGIN_TYPE!r})"
            elif not info.name:
                error = "plugin name is empty"
            elif DRA_SERVICE not in info.supported_versions:
                error = f"none of the versions {list(info.supported_versions)} is supported (want {DRA_SERVICE})"
            stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(plugin_registered=not error, error=error), timeout=self.timeout)
        if error:
            self.refused[str(socket)] = error
            return None
        with self._lock:
            self.plugins[info.name] = DraPlugin(info.name, info.endpoint, tuple(info.supported_versions))
        return str(info.name)

    def start(self, interval: float = 0.1) -> FakeDraKubelet:
        def loop() -> None:
            while not self._stop.wait(interval):
                self.scan()

        self._thread = threading.Thread(target=loop, name="fake-dra-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------ DRA manager

    @staticmethod
    def claim_names(pod: Mapping[str, Any]) -> dict[str, str]:
        """The pod's claim entries -> ResourceClaim names (direct, or generated from a template)."""
        generated = {s["name"]: s.get("resourceClaimName") for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []}
        out = {}
        for entry in (pod.get("spec") or {}).get("resourceClaims") or []:
            name = entry.get("resourceClaimName") or generated.get(entry["name"])
            if not name:
                raise PrepareError(f"pod claim {entry['name']!r}: no ResourceClaim was created for its template yet")
            out[entry["name"]] = name
        return out

    def prepare(self, pod: Mapping[str, Any]) -> dict[str, list[str]]:
        """Prepare the pod's claims; container name -> the CDI device ids it gets."""
        namespace = pod["metadata"]["namespace"]
        names = self.claim_names(pod)
        claims = {entry: self.read_claim(namespace, name) for entry, name in names.items()}
        by_driver: dict[str, list[Mapping[str, Any]]] = {}
        for claim in claims.values():
            allocation = (claim.get("status") or {}).get("allocation")
            if not allocation:
                raise PrepareError(f"claim {namespace}/{claim['metadata']['name']} is not allocated")
            reserved = [r.get("uid") for r in (claim.get("status") or {}).get("reservedFor") or []]
            if pod["metadata"].get("uid") not in reserved:
                raise PrepareError(f"claim {namespace}/{claim['metadata']['name']} is not reserved for pod {pod['metadata']['name']}")
            for driver in sorted({r["driver"] for r in allocation["devices"]["results"]}):
                by_driver.setdefault(driver, []).append(claim)
        for driver, driver_claims in sorted(by_driver.items()):
            plugin = self.plugins.get(driver)
            if plugin is None:
                raise PrepareError(f"failed to prepare dynamic resources: DRA driver {driver} is not registered")
            refs = [dra_pb2.Claim(namespace=namespace, uid=c["metadata"]["uid"], name=c["metadata"]["name"]) for c in driver_claims]
            with grpc.insecure_channel(f"unix://{plugin.endpoint}") as channel:
                response = dra_grpc.DRAPluginStub(channel).NodePrepareResources(
                    dra_pb2.NodePrepareResourcesRequest(claims=refs), timeout=self.timeout
                )
            for ref in refs:
                result = response.claims.get(ref.uid)
                if result is None:
                    raise PrepareError(f"NodePrepareResources skipped claim {namespace}/{ref.name}")
                if result.error:
                    raise PrepareError(f"NodePrepareResources failed for claim {namespace}/{ref.name}: {result.error}")
                self.prepared[ref.uid] = {
                    "driver": driver,
                    "namespace": namespace,
                    "name": ref.name,
                    "devices": [
                        {
                            "request_names": list(d.request_names),
                            "pool_name": d.pool_name,
                            "device_name": d.device_name,
                            "cdi_device_ids": list(d.cdi_device_ids),
                            "share_id": d.share_id,
                        }
                        for d in result.devices
                    ],
                }
        out: dict[str, list[str]] = {}
        for container in (pod.get("spec") or {}).get("containers") or []:
            ids: list[str] = []
            for use in (container.get("resources") or {}).get("claims") or []:
                used = claims.get(use["name"])
                if used is None:
                    continue
                for device in self.prepared[used["metadata"]["uid"]]["devices"]:
                    if use.get("request") and use["request"] not in device["request_names"]:
                        continue
                    ids.extend(i for i in device["cdi_device_ids"] if i not in ids)
            out[container["name"]] = ids
        return out

    def unprepare(self, pod: Mapping[str, Any]) -> None:
        namespace = pod["metadata"]["namespace"]
        uids = [uid for uid, p in self.prepared.items() if p["namespace"] == namespace and p["name"] in set(self.claim_names(pod).values())]
        for uid in uids:
            entry = self.prepared[uid]
            plugin = self.plugins[entry["driver"]]
            with grpc.insecure_channel(f"unix://{plugin.endpoint}") as channel:
                request = dra_pb2.NodeUnprepareResourcesRequest(claims=[dra_pb2.Claim(namespace=namespace, uid=uid, name=entry["name"])])
                error = dra_grpc.DRAPluginStub(channel).NodeUnprepareResources(request, timeout=self.timeout).claims[uid].error
            if error:
                raise PrepareError(f"NodeUnprepareResources failed for claim {namespace}/{entry['name']}: {error}")
            del self.prepared[uid]
