"""The DRA driver over real gRPC (unix sockets) and the in-memory API server's HTTP: slices published
and validated strictly against Kubernetes 1.34's OpenAPI schema, kubelet registration, prepare writing a
CDI spec through the backends' hooks, unprepare releasing it, health changes republishing."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes
import kubernetes_validate
import pytest

from hami.dra import DRA_SERVICE, DRIVER, PLUGIN_TYPE
from hami.dra.driver import DraDriver
from hami.dra.pluginregistration import api_pb2 as reg_pb2
from hami.dra.pluginregistration import api_pb2_grpc as reg_grpc
from hami.dra.slices import device_name
from hami.dra.v1 import api_pb2 as dra_pb2
from hami.dra.v1 import api_pb2_grpc as dra_grpc
from hami.plugin.manager import load_backends

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
NODE = "gpu-a100"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths must stay under 108 bytes: a short temp dir, not pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="dra", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def driver(kube_apiserver: Any, kube_client: Any, short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DraDriver]:
    monkeypatch.setenv("HAMI_INVENTORY", str(EXAMPLES / "nodes.yaml"))
    kubernetes.client.CoreV1Api(kube_client).create_node({"metadata": {"name": NODE}})
    drv = DraDriver(
        load_backends(),
        NODE,
        kube_client,
        registry_dir=short_dir / "reg",
        plugin_dir=short_dir / "plugin",
        cdi_dir=short_dir / "cdi",
        state_root=short_dir / "state",
        interval=3600,
    ).start()
    yield drv
    drv.stop()


def _slices(client: Any) -> list[dict[str, Any]]:
    return kubernetes.client.CustomObjectsApi(client).list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices")["items"]


def test_slices_are_published_and_valid_strictly(driver: DraDriver, kube_client: Any) -> None:
    (published,) = _slices(kube_client)
    assert published["spec"]["driver"] == DRIVER and published["spec"]["nodeName"] == NODE
    assert published["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert published["metadata"]["ownerReferences"][0]["kind"] == "Node"
    devices = published["spec"]["devices"]
    assert len(devices) == 8  # nodes.yaml: eight A100-80GB
    first = devices[0]
    assert first["allowMultipleAllocations"] is True
    assert first["capacity"]["memory"]["value"] == "81920Mi"
    assert first["capacity"]["cores"]["requestPolicy"]["default"] == "0"
    assert first["attributes"]["uuid"] == {"string": "NVIDIA-gpu-a100-0"}
    body = {k: v for k, v in published.items() if k in ("apiVersion", "kind", "spec")}
    body["metadata"] = {k: published["metadata"][k] for k in ("name", "labels", "ownerReferences")}
    kubernetes_validate.validate(body, "1.34", strict=True)


def test_registration_over_the_socket(driver: DraDriver) -> None:
    with grpc.insecure_channel(f"unix://{driver.registry_socket}") as channel:
        stub = reg_grpc.RegistrationStub(channel)
        info = stub.GetInfo(reg_pb2.InfoRequest(), timeout=5)
        got = (info.type, info.name, info.endpoint, list(info.supported_versions))
        assert got == (PLUGIN_TYPE, DRIVER, str(driver.dra_socket), [DRA_SERVICE])
        stub.NotifyRegistrationStatus(reg_pb2.RegistrationStatus(plugin_registered=True), timeout=5)
    assert driver.registration.registered.is_set()


def _allocated_claim(client: Any, driver: DraDriver, *, memory: str | None, cores: str | None, index: int = 0) -> dict[str, Any]:
    api = kubernetes.client.CustomObjectsApi(client)
    claim = api.create_namespaced_custom_object(
        "resource.k8s.io",
        "v1",
        "default",
        "resourceclaims",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": f"share-{index}"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "nvidia.hami.io"}}]}},
        },
    )
    node_device = next(d for d in driver.discovery.devices if d.physical.index == index)
    result: dict[str, Any] = {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": device_name(node_device)}
    if memory is not None:
        result["shareID"] = "0e4c5a7a-6f0b-4a57-8f37-0a0f4c1d2e3f"
        result["consumedCapacity"] = {"memory": memory, "cores": cores or "0", "shares": "1"}
    claim["status"] = {"allocation": {"devices": {"results": [result]}}, "reservedFor": [{"resource": "pods", "name": "p", "uid": "u1"}]}
    name = claim["metadata"]["name"]
    return dict(api.replace_namespaced_custom_object_status("resource.k8s.io", "v1", "default", "resourceclaims", name, claim))


def _prepare(driver: DraDriver, claim: dict[str, Any]) -> Any:
    meta = claim["metadata"]
    with grpc.insecure_channel(f"unix://{driver.dra_socket}") as channel:
        claim_ref = dra_pb2.Claim(namespace=meta["namespace"], uid=meta["uid"], name=meta["name"])
        request = dra_pb2.NodePrepareResourcesRequest(claims=[claim_ref])
        return dra_grpc.DRAPluginStub(channel).NodePrepareResources(request, timeout=10).claims[meta["uid"]]


def test_prepare_writes_cdi_spec_and_unprepare_removes_it(driver: DraDriver, kube_client: Any) -> None:
    claim = _allocated_claim(kube_client, driver, memory="3000Mi", cores="30")
    uid = claim["metadata"]["uid"]
    prepared = _prepare(driver, claim)
    assert prepared.error == ""
    (device,) = prepared.devices
    assert device.pool_name == NODE and list(device.request_names) == ["gpu"]
    assert device.share_id == "0e4c5a7a-6f0b-4a57-8f37-0a0f4c1d2e3f"
    assert device.cdi_device_ids[0] == f"{DRIVER}/claim={uid}-nvidia"
    spec_file = driver.service.cdi_dir / f"{DRIVER}-claim_{uid}.json"
    spec = json.loads(spec_file.read_text())
    assert spec["cdiVersion"] == "0.6.0" and spec["kind"] == f"{DRIVER}/claim"
    env = dict(e.split("=", 1) for e in spec["devices"][0]["containerEdits"]["env"])
    # the backend's container edits carry the share: 3000 MiB and 30 % of the device
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m" and env["CUDA_DEVICE_SM_LIMIT"] == "30"
    grant = driver.service.prepared()[uid].grants[0]
    assert (grant.memory, grant.cores) == (3000, 30)
    assert _prepare(driver, claim).devices[0].cdi_device_ids == device.cdi_device_ids  # retried: same answer
    with grpc.insecure_channel(f"unix://{driver.dra_socket}") as channel:
        request = dra_pb2.NodeUnprepareResourcesRequest(claims=[dra_pb2.Claim(namespace="default", uid=uid, name="share-0")])
        assert dra_grpc.DRAPluginStub(channel).NodeUnprepareResources(request, timeout=10).claims[uid].error == ""
    assert not spec_file.exists()
    assert uid not in driver.service.prepared()


def test_claim_not_allocated_is_that_claims_error(driver: DraDriver, kube_client: Any) -> None:
    api = kubernetes.client.CustomObjectsApi(kube_client)
    claim = api.create_namespaced_custom_object(
        "resource.k8s.io",
        "v1",
        "default",
        "resourceclaims",
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "pending"},
            "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "nvidia.hami.io"}}]}},
        },
    )
    response = _prepare(driver, claim)
    assert "is not allocated" in response.error and not response.devices


def test_unhealthy_device_is_withdrawn_with_a_new_generation(driver: DraDriver, kube_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import hami.dra.driver as mod

    sick = driver.discovery.devices[0].id
    monkeypatch.setattr(mod, "current_health", lambda manager, discovery: {sick: False})
    assert driver.refresh() is True
    (published,) = _slices(kube_client)
    assert published["spec"]["pool"]["generation"] == 2
    assert sick not in [d["attributes"]["uuid"]["string"] for d in published["spec"]["devices"]]
    assert driver.refresh() is False  # nothing changed: nothing written


def test_deleted_slices_are_written_again(driver: DraDriver, kube_client: Any) -> None:
    api = kubernetes.client.CustomObjectsApi(kube_client)
    (published,) = _slices(kube_client)
    api.delete_cluster_custom_object("resource.k8s.io", "v1", "resourceslices", published["metadata"]["name"])
    assert driver.refresh() is True
    (again,) = _slices(kube_client)
    assert again["spec"]["devices"] == published["spec"]["devices"]
    assert again["spec"]["pool"]["generation"] == 1  # a new pool: no older generation is left to outrank
    assert driver.refresh() is False


def test_stop_deletes_the_slices(driver: DraDriver, kube_client: Any) -> None:
    driver.stop()
    assert _slices(kube_client) == []
    assert not driver.registry_socket.exists()
