"""Kubelet's side of the driver: plugin registration (``pluginregistration/v1``) and the DRA service
(``dra/v1`` ``NodePrepareResources`` / ``NodeUnprepareResources``).

Prepare reads the claim's allocation from the API server (results of our driver in this node's
pool), turns each result into a :class:`~hami.plugin.model.Grant` (consumed ``memory``/``cores``, or
the whole device when the device is not shared), calls the owning backend's ``hami_prepare`` and
``hami_container_edits`` with the granted devices and the node context, writes one CDI spec per claim,
and remembers the claim in ``<state>/hami-dra/claims.json`` so that unprepare (which kubelet sends
with the claim's uid only, possibly after a restart) releases exactly what was prepared. Both calls
are idempotent, as kubelet retries them. A claim that fails gets its error in the response, the
others are still prepared (kubelet's per-claim contract).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import grpc

from hami.dra import DRA_SERVICE, DRIVER, PLUGIN_TYPE, cdi
from hami.dra.pluginregistration import api_pb2 as reg_pb2
from hami.dra.pluginregistration import api_pb2_grpc as reg_grpc
from hami.dra.slices import device_name, quantity_value
from hami.dra.v1 import api_pb2 as dra_pb2
from hami.dra.v1 import api_pb2_grpc as dra_grpc
from hami.errors import HamiError
from hami.node.devices import Discovery, NodeDevice
from hami.plugin.manager import BackendManager
from hami.plugin.model import MAX_REQUEST_CORES, ContainerEdits, Grant

log = logging.getLogger(__name__)

ClaimReader = Callable[[str, str], Mapping[str, Any]]
"""(namespace, name) -> the ResourceClaim as the API server has it."""
PodReader = Callable[[str, str], Mapping[str, Any] | None]


class ClaimError(HamiError):
    """One claim cannot be prepared (not allocated, not ours, device gone …): its response's error."""


@attrs.frozen
class PreparedClaim:
    namespace: str
    name: str
    uid: str
    pod: Mapping[str, Any] = attrs.field(hash=False)
    container: Mapping[str, Any] = attrs.field(hash=False)
    grants: tuple[Grant, ...]
    results: tuple[Mapping[str, Any], ...] = attrs.field(hash=False)
    """The allocation results we prepared (request, pool, device, shareID) with their CDI ids."""

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "pod": dict(self.pod),
            "container": dict(self.container),
            "grants": [attrs.asdict(g) for g in self.grants],
            "results": [dict(r) for r in self.results],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparedClaim:
        return cls(
            data["namespace"],
            data["name"],
            data["uid"],
            data["pod"],
            data["container"],
            tuple(Grant(**g) for g in data["grants"]),
            tuple(data["results"]),
        )


def grant_for(result: Mapping[str, Any], device: NodeDevice) -> Grant:
    """A Grant from one allocation result: consumed capacity on a shared device, else the whole device."""
    consumed = result.get("consumedCapacity") or {}
    if device.schedulable.count > 1 and consumed:
        memory = quantity_value(str(consumed.get("memory", f"{device.schedulable.memory}Mi"))) >> 20
        cores = quantity_value(str(consumed.get("cores", "0")))
    else:
        memory, cores = device.schedulable.memory, MAX_REQUEST_CORES
    return Grant(device.id, device.vendor, memory, min(cores, MAX_REQUEST_CORES))


def _claim_container(pod: Mapping[str, Any], claim: Mapping[str, Any]) -> Mapping[str, Any]:
    """The first container of ``pod`` that uses ``claim`` (through the pod's resourceClaims), else a stub."""
    spec = pod.get("spec") or {}
    claim_name = claim["metadata"]["name"]
    generated = {s.get("name"): s.get("resourceClaimName") for s in (pod.get("status") or {}).get("resourceClaimStatuses") or []}
    local = {
        rc["name"] for rc in spec.get("resourceClaims") or [] if claim_name in (rc.get("resourceClaimName"), generated.get(rc["name"]))
    }
    for container in spec.get("containers") or []:
        if any(c.get("name") in local for c in (container.get("resources") or {}).get("claims") or []):
            return container
    return {"name": claim_name}


class ClaimLedger:
    """The prepared claims by uid, in one JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict[str, PreparedClaim]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {uid: PreparedClaim.from_json(entry) for uid, entry in data.items()}

    def update(self, change: Callable[[dict[str, PreparedClaim]], None]) -> None:
        with self._lock:
            claims = self.load()
            change(claims)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({uid: c.as_json() for uid, c in claims.items()}, indent=1, sort_keys=True))
            tmp.replace(self.path)


class DraService(dra_grpc.DRAPluginServicer):
    """``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin`` over the node's discovery."""

    def __init__(
        self,
        manager: BackendManager,
        node_name: str,
        discovery: Callable[[], Discovery],
        read_claim: ClaimReader,
        read_pod: PodReader,
        cdi_dir: Path,
        state_dir: Path,
    ) -> None:
        self.manager = manager
        self.node_name = node_name
        self.discovery = discovery
        self.read_claim = read_claim
        self.read_pod = read_pod
        self.cdi_dir = Path(cdi_dir)
        self.ledger = ClaimLedger(Path(state_dir) / "hami-dra" / "claims.json")
        self._lock = threading.Lock()

    # ------------------------------------------------------------ prepare

    def NodePrepareResources(self, request: Any, context: Any) -> Any:
        response = dra_pb2.NodePrepareResourcesResponse()
        for claim in request.claims:
            try:
                prepared = self.prepare(claim.namespace, claim.name, claim.uid)
            except Exception as exc:  # one claim's failure is its own error, never the whole call's
                log.warning("event=dra_prepare_failed claim=%s/%s uid=%s error=%r", claim.namespace, claim.name, claim.uid, str(exc))
                response.claims[claim.uid].error = f"{type(exc).__name__}: {exc}"
                continue
            out = response.claims[claim.uid]
            for result in prepared.results:
                device = out.devices.add(
                    request_names=[result["request"]], pool_name=result["pool"], device_name=result["device"], cdi_device_ids=result["cdi"]
                )
                if result.get("shareID"):
                    device.share_id = result["shareID"]
        return response

    def prepare(self, namespace: str, name: str, uid: str) -> PreparedClaim:
        with self._lock:
            known = self.ledger.load().get(uid)
            if known is not None:
                return known  # kubelet retried: prepared once, answered the same
            claim = self.read_claim(namespace, name)
            if claim["metadata"].get("uid") != uid:
                raise ClaimError(f"claim {namespace}/{name} has uid {claim['metadata'].get('uid')!r}, kubelet asked for {uid!r}")
            allocation = (claim.get("status") or {}).get("allocation")
            if not allocation:
                raise ClaimError(f"claim {namespace}/{name} is not allocated")
            results = [r for r in allocation["devices"]["results"] if r["driver"] == DRIVER and r["pool"] == self.node_name]
            if not results:
                raise ClaimError(f"claim {namespace}/{name} has no device of driver {DRIVER} in pool {self.node_name!r}")
            discovery = self.discovery()
            by_name = {device_name(d): d for d in discovery.devices}
            missing = [r["device"] for r in results if r["device"] not in by_name]
            if missing:
                found = sorted(by_name)
                raise ClaimError(f"claim {namespace}/{name}: device(s) {missing} are not on node {self.node_name!r} (found {found})")
            pod = self._pod(claim)
            container = _claim_container(pod, claim)
            grants = [grant_for(r, by_name[r["device"]]) for r in results]
            edits: dict[str, ContainerEdits] = {}
            extra: list[str] = []
            for vendor in sorted({g.vendor for g in grants}):
                group = [g for g in grants if g.vendor == vendor]
                backend = self.manager.owner(vendor).name
                node = discovery.contexts[backend]
                devices = discovery.granted(group)
                self.manager.prepare(group, pod, container, node=node, devices=devices)
                merged = self.manager.container_edits(group, pod, container, node=node, devices=devices)
                edits[_cdi_label(vendor)] = attrs.evolve(merged, cdi_devices=())
                extra.extend(merged.cdi_devices)
            spec = cdi.spec_for_claim(uid, edits)
            cdi.write_spec(self.cdi_dir, uid, spec)
            # one CDI device per vendor of the claim: a backend's edits cover all its granted devices at once
            ids = {g.vendor: cdi.qualified(uid, _cdi_label(g.vendor)) for g in grants}
            prepared_results = tuple(
                {
                    "request": r["request"],
                    "pool": r["pool"],
                    "device": r["device"],
                    "shareID": r.get("shareID", ""),
                    "cdi": [ids[g.vendor], *extra],
                }
                for r, g in zip(results, grants, strict=True)
            )
            prepared = PreparedClaim(namespace, name, uid, pod, container, tuple(grants), prepared_results)
            self.ledger.update(lambda claims: claims.__setitem__(uid, prepared))
            log.info("event=dra_prepared claim=%s/%s uid=%s devices=%s", namespace, name, uid, [g.id for g in grants])
            return prepared

    def _pod(self, claim: Mapping[str, Any]) -> Mapping[str, Any]:
        for ref in (claim.get("status") or {}).get("reservedFor") or []:
            if ref.get("resource") == "pods":
                pod = self.read_pod(claim["metadata"]["namespace"], ref["name"])
                if pod is not None:
                    return pod
                return {"metadata": {"name": ref["name"], "namespace": claim["metadata"]["namespace"], "uid": ref.get("uid", "")}}
        return {"metadata": {"name": claim["metadata"]["name"], "namespace": claim["metadata"]["namespace"]}}

    # ------------------------------------------------------------ unprepare

    def NodeUnprepareResources(self, request: Any, context: Any) -> Any:
        response = dra_pb2.NodeUnprepareResourcesResponse()
        for claim in request.claims:
            try:
                self.unprepare(claim.uid)
                response.claims[claim.uid].error = ""
            except Exception as exc:
                log.warning("event=dra_unprepare_failed uid=%s error=%r", claim.uid, str(exc))
                response.claims[claim.uid].error = f"{type(exc).__name__}: {exc}"
        return response

    def unprepare(self, uid: str) -> bool:
        """Release what prepare made; an unknown uid is already released (True when something was)."""
        with self._lock:
            prepared = self.ledger.load().get(uid)
            if prepared is None:
                cdi.remove_spec(self.cdi_dir, uid)
                return False
            discovery = self.discovery()
            for vendor in sorted({g.vendor for g in prepared.grants}):
                group = [g for g in prepared.grants if g.vendor == vendor]
                backend = self.manager.owner(vendor).name
                devices = discovery.granted(group, missing_ok=True)
                self.manager.release(group, prepared.pod, prepared.container, node=discovery.contexts[backend], devices=devices)
            cdi.remove_spec(self.cdi_dir, uid)

            def drop(claims: dict[str, PreparedClaim]) -> None:
                claims.pop(uid, None)

            self.ledger.update(drop)
            log.info("event=dra_unprepared claim=%s/%s uid=%s", prepared.namespace, prepared.name, uid)
            return True

    def prepared(self) -> dict[str, PreparedClaim]:
        return self.ledger.load()


def _cdi_label(vendor: str) -> str:
    """A vendor key as part of a CDI device name (letters, digits, ``_.-``)."""
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in vendor.lower())


class RegistrationService(reg_grpc.RegistrationServicer):
    """What kubelet's plugin watcher asks on our socket in ``plugins_registry``."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.registered = threading.Event()
        self.error = ""

    def GetInfo(self, request: Any, context: Any) -> Any:
        return reg_pb2.PluginInfo(type=PLUGIN_TYPE, name=DRIVER, endpoint=self.endpoint, supported_versions=[DRA_SERVICE])

    def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:
        self.error = request.error
        if request.plugin_registered:
            self.registered.set()
            log.info("event=dra_registered driver=%s endpoint=%s", DRIVER, self.endpoint)
        else:
            self.registered.clear()
            log.error("event=dra_registration_refused driver=%s error=%r", DRIVER, request.error)
        return reg_pb2.RegistrationStatusResponse()


def serve(servicers: Sequence[tuple[Callable[[Any, grpc.Server], None], Any]], socket: Path) -> grpc.Server:
    """A gRPC server on a unix socket (a stale socket file removed first)."""
    from concurrent import futures

    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for add, servicer in servicers:
        add(servicer, server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    return server
