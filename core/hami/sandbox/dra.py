"""The sandbox as a DRA cluster (``hami sandbox --dra``): the in-memory API server with
``resource.k8s.io/v1``, one :class:`~hami.dra.driver.DraDriver` per inventory node publishing its
ResourceSlices and registered with that node's :class:`~hami.fakes.dra.kubelet.FakeDraKubelet`, the
DeviceClasses of every installed backend, and three Kubernetes parts played here:

* the resource claim controller: a ResourceClaim per pod claim that names a template
  (``<pod>-<claim>-<5 random>``, owned by the pod, ``status.resourceClaimStatuses`` on the pod);
* kube-scheduler's DynamicResources plugin: :class:`~hami.fakes.dra.allocator.Allocator` (CEL, consumable
  capacity) tries the nodes in inventory order and writes the allocation and ``reservedFor``; a pod
  no node can take stays Pending with kube-scheduler's message (``0/N nodes are available: N cannot
  allocate all claims``) and each node's reason;
* kubelet: NodePrepareResources over gRPC, the CDI edits read from the spec files the driver wrote.

No HAMi extender or device plugin is involved: DRA pods are scheduled by Kubernetes itself.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hami.backendkit.inventory import load_inventory
from hami.dra import DRIVER, cdi
from hami.dra.classes import device_classes
from hami.dra.driver import DraDriver
from hami.fakes.dra.allocator import AllocationError, Allocator, Usage, node_devices
from hami.fakes.dra.kubelet import FakeDraKubelet, PrepareError
from hami.fakes.kubeapi import KubeAPIServer
from hami.kube import release
from hami.plugin.manager import BackendManager, load_backends
from hami.sandbox.defaults import default_nodes_file
from hami.sandbox.outcome import expected_phase

GROUP, VERSION = "resource.k8s.io", "v1"
POD_CLAIM_NAME = "resource.kubernetes.io/pod-claim-name"


class DraSandbox:
    def __init__(self, nodes_file: str | Path | None = None, *, manager: BackendManager | None = None) -> None:
        self.nodes_file = Path(nodes_file) if nodes_file else default_nodes_file()
        self.inventory = load_inventory(self.nodes_file)
        self.manager = manager or load_backends()
        self.api = KubeAPIServer()
        self.drivers: dict[str, DraDriver] = {}
        self.kubelets: dict[str, FakeDraKubelet] = {}
        self._dirs: list[str] = []
        self._custom: client.CustomObjectsApi | None = None
        self._core: client.CoreV1Api | None = None

    # ------------------------------------------------------------ life cycle

    @property
    def custom(self) -> client.CustomObjectsApi:
        if self._custom is None:
            raise RuntimeError("the DRA sandbox is not started")
        return self._custom

    @property
    def core(self) -> client.CoreV1Api:
        if self._core is None:
            raise RuntimeError("the DRA sandbox is not started")
        return self._core

    def start(self) -> DraSandbox:
        self.api.start()
        api_client = self.api.api_client()
        self._custom, self._core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
        for backend in self.manager.backends:
            self.manager.configure(backend, {"inventory": str(self.nodes_file)})
        for body in device_classes(list(self.manager.kinds)):
            self.custom.create_cluster_custom_object(GROUP, VERSION, "deviceclasses", body)
        for node in self.inventory:
            base = Path(tempfile.mkdtemp(prefix="hd", dir="/tmp"))  # unix socket paths must stay short
            self._dirs.append(str(base))
            self.core.create_node({"metadata": {"name": node.name, "labels": dict(node.labels)}})  # type: ignore[arg-type]
            kubelet = FakeDraKubelet(base / "r", self._read_claim)
            driver = DraDriver(
                self.manager,
                node.name,
                api_client,
                registry_dir=base / "r",
                plugin_dir=base / "p",
                cdi_dir=base / "cdi",
                state_root=base / "state",
                interval=3600,
            ).start()
            if DRIVER not in kubelet.scan():
                raise PrepareError(f"sandbox: the DRA driver of node {node.name!r} did not register: {kubelet.refused}")
            self.drivers[node.name], self.kubelets[node.name] = driver, kubelet
        return self

    def stop(self) -> None:
        for driver in self.drivers.values():
            driver.stop()
        self.api.stop()
        for directory in self._dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> DraSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        claim: Mapping[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "resourceclaims", name)  # type: ignore[assignment]
        return claim

    # ------------------------------------------------------------ objects

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a ResourceClaimTemplate or ResourceClaim; a Pod is :meth:`submit`-ted instead (None)."""
        kind = obj.get("kind")
        namespace = (obj.get("metadata") or {}).get("namespace", "default")
        plural = {"ResourceClaimTemplate": "resourceclaimtemplates", "ResourceClaim": "resourceclaims"}.get(str(kind))
        if plural is None:
            return None
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, dict(obj))  # type: ignore[assignment]
        return created

    def submit(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        """One pod: claims from templates, allocation, binding, prepare; the outcome as JSON."""
        body: dict[str, Any] = json.loads(json.dumps(pod))
        meta = body.setdefault("metadata", {})
        namespace = meta.setdefault("namespace", "default")
        meta.setdefault("name", f"pod-{uuid.uuid4().hex[:5]}")
        out: dict[str, Any] = {
            "namespace": namespace,
            "name": meta["name"],
            "expected": expected_phase(body),
            "node": "",
            "reason": "",
            "claims": [],
            "containers": [],
        }
        try:
            created = self.core.api_client.sanitize_for_serialization(self.core.create_namespaced_pod(namespace, body))  # type: ignore[arg-type]
        except ApiException as exc:
            return {**out, "phase": "Rejected", "reason": f"API server: {json.loads(exc.body or '{}').get('message', exc.reason)}"}
        try:
            claims = self._claims_for(created)
        except ApiException as exc:
            message = json.loads(exc.body or "{}").get("message", exc.reason)
            return {**out, "phase": "Pending", "reason": f"resource claim controller: {message}"}
        node, reason = self._allocate(created, claims)
        out["claims"] = [self._claim_json(self._read_claim(namespace, c["metadata"]["name"])) for c in claims]
        if not node:
            return {**out, "phase": "Pending", "reason": reason}
        binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]}, "target": {"kind": "Node", "name": node}}
        release(self.core.create_namespaced_pod_binding(meta["name"], namespace, binding, _preload_content=False))  # type: ignore[arg-type]
        bound = self.core.api_client.sanitize_for_serialization(self.core.read_namespaced_pod(meta["name"], namespace))
        try:
            ids = self.kubelets[node].prepare(bound)
        except PrepareError as exc:  # kubelet keeps the pod in ContainerCreating and retries
            return {**out, "phase": "Pending", "node": node, "reason": f"kubelet: FailedPrepareDynamicResources: {exc}"}
        self.core.patch_namespaced_pod_status(meta["name"], namespace, {"status": {"phase": "Running"}})
        cdi_dir = self.drivers[node].service.cdi_dir
        out["containers"] = [{"name": name, "cdi_devices": cdi_ids, **_cdi_edits(cdi_dir, cdi_ids)} for name, cdi_ids in ids.items()]
        return {**out, "phase": "Running", "node": node}

    def _claims_for(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        """The resource claim controller: a claim per template entry, named on the pod's status."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        statuses, claims = [], []
        for entry in pod["spec"].get("resourceClaims") or []:
            if entry.get("resourceClaimName"):
                claims.append(dict(self._read_claim(namespace, entry["resourceClaimName"])))
                continue
            template: dict[str, Any] = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, namespace, "resourceclaimtemplates", entry["resourceClaimTemplateName"]
            )
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ResourceClaim",
                "metadata": {
                    "name": f"{name}-{entry['name']}-{uuid.uuid4().hex[:5]}",
                    "annotations": {POD_CLAIM_NAME: entry["name"]},
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": name,
                            "uid": pod["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                    **{k: v for k, v in (template["spec"].get("metadata") or {}).items() if k in ("labels", "annotations")},
                },
                "spec": template["spec"]["spec"],
            }
            claim: dict[str, Any] = self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "resourceclaims", body)  # type: ignore[assignment]
            claims.append(claim)
            statuses.append({"name": entry["name"], "resourceClaimName": claim["metadata"]["name"]})
        if statuses:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": {"resourceClaimStatuses": statuses}})
        return claims

    def _allocate(self, pod: dict[str, Any], claims: list[dict[str, Any]]) -> tuple[str, str]:
        """kube-scheduler's DynamicResources filter and reserve: the first node that can take every claim."""
        if not claims:
            return self.inventory[0].name, ""
        slices = self.custom.list_cluster_custom_object(GROUP, VERSION, "resourceslices")["items"]  # type: ignore[index]
        classes = {c["metadata"]["name"]: c for c in self.custom.list_cluster_custom_object(GROUP, VERSION, "deviceclasses")["items"]}  # type: ignore[index]
        allocator = Allocator(classes)
        every = self.custom.list_cluster_custom_object(GROUP, VERSION, "resourceclaims")["items"]  # type: ignore[index]
        reasons: dict[str, str] = {}
        for node in self.inventory:
            devices = node_devices(slices, node.name)
            usage = Usage.of(every, devices)
            allocations = []
            try:
                for claim in claims:
                    allocation = allocator.allocate(claim, node.name, devices, usage)
                    allocations.append(allocation)
                    usage = Usage.of([*every, {"status": {"allocation": allocation}}], devices)
                    every = [*every, {"status": {"allocation": allocation}}]
            except AllocationError as exc:
                reasons[node.name] = str(exc)
                every = every[: len(every) - len(allocations)]
                continue
            for claim, allocation in zip(claims, allocations, strict=True):
                claim["status"] = {
                    "allocation": allocation,
                    "reservedFor": [{"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}],
                }
                self.custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, claim["metadata"]["namespace"], "resourceclaims", claim["metadata"]["name"], claim
                )
            return node.name, ""
        count = len(self.inventory)
        detail = "; ".join(f"{n}: {r}" for n, r in reasons.items())
        return "", f"0/{count} nodes are available: {count} cannot allocate all claims. ({detail})"

    @staticmethod
    def _claim_json(claim: Mapping[str, Any]) -> dict[str, Any]:
        allocation = (claim.get("status") or {}).get("allocation") or {}
        return {
            "name": claim["metadata"]["name"],
            "allocated": bool(allocation),
            "results": [dict(r) for r in (allocation.get("devices") or {}).get("results") or []],
        }

    def nodes(self) -> list[dict[str, Any]]:
        """Each node's published devices with what the claims consume of them."""
        slices = self.custom.list_cluster_custom_object(GROUP, VERSION, "resourceslices")["items"]  # type: ignore[index]
        every = self.custom.list_cluster_custom_object(GROUP, VERSION, "resourceclaims")["items"]  # type: ignore[index]
        out = []
        for node in self.inventory:
            devices = node_devices(slices, node.name)
            usage = Usage.of(every, devices)
            out.append(
                {
                    "name": node.name,
                    "devices": [
                        {
                            "name": d.name,
                            "vendor": d.device["attributes"]["vendor"]["string"],
                            "shared": d.shared,
                            "capacity": {k: v["value"] for k, v in (d.device.get("capacity") or {}).items()},
                            "consumed": {k: str(v) for k, v in (usage.consumed.get(d.key) or {}).items()},
                            "exclusive": d.key in usage.exclusive,
                        }
                        for d in devices
                    ],
                }
            )
        return out


def _cdi_edits(cdi_dir: Path, ids: list[str]) -> dict[str, Any]:
    """The container edits the runtime would apply for ``ids`` (ours, read back from the spec files)."""
    envs: dict[str, str] = {}
    mounts: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for spec_file in sorted(cdi_dir.glob(f"{DRIVER}-claim_*.json")):
        spec = json.loads(spec_file.read_text())
        for device in spec["devices"]:
            if f"{cdi.KIND}={device['name']}" not in ids:
                continue
            edits = device["containerEdits"]
            envs.update(e.split("=", 1) for e in edits.get("env") or [])
            mounts.extend(edits.get("mounts") or [])
            nodes.extend(edits.get("deviceNodes") or [])
    return {"envs": envs, "mounts": mounts, "device_nodes": nodes}


def example_files() -> list[Path]:
    """The packaged DRA examples (``hami/sandbox/examples/dra``, the copy of deploy/examples/dra)."""
    from hami.sandbox.defaults import examples_dir

    directory = examples_dir()
    return sorted((directory / "dra").glob("*.yaml")) if directory is not None else []


def run(nodes_file: str | Path | None, files: list[Path]) -> dict[str, Any]:
    """``hami sandbox --dra``: every object of ``files`` (templates and claims first, then the pods in
    order) through a DRA sandbox; ``{"pods": [...], "nodes": [...], "device_classes": [...]}``."""
    import yaml

    from hami.errors import HamiError

    documents: list[dict[str, Any]] = []
    for path in files:
        try:
            documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
        except (OSError, yaml.YAMLError) as exc:
            raise HamiError(f"cannot read {str(path)!r}: {exc}") from None
    bad = [
        d.get("kind") if isinstance(d, dict) else type(d).__name__
        for d in documents
        if not isinstance(d, dict) or d.get("kind") not in ("Pod", "ResourceClaimTemplate", "ResourceClaim")
    ]
    if bad:
        raise HamiError(f"hami sandbox --dra reads Pods, ResourceClaimTemplates and ResourceClaims, not {bad}")
    with DraSandbox(nodes_file) as sandbox:
        for doc in documents:
            sandbox.apply(doc)
        pods = [sandbox.submit(doc) for doc in documents if doc["kind"] == "Pod"]
        classes = sandbox.custom.list_cluster_custom_object(GROUP, VERSION, "deviceclasses")["items"]  # type: ignore[index]
        return {"pods": pods, "nodes": sandbox.nodes(), "device_classes": sorted(c["metadata"]["name"] for c in classes)}
