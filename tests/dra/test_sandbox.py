"""DRA end to end: the fake kubelet's plugin watcher and DRA manager over gRPC, and
``hami sandbox --dra --json`` running the example claims (allocated, prepared, CDI edits reported)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hami.dra import DRIVER
from hami.dra.kubelet import RegistrationService, serve
from hami.dra.pluginregistration import api_pb2_grpc as reg_grpc
from hami.fakes.dra.kubelet import FakeDraKubelet, PrepareError
from hami.sandbox.dra import DraSandbox, example_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dra", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_watcher_refuses_a_plugin_without_the_v1_service(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = RegistrationService(str(short_dir / "dra.sock"))
    monkeypatch.setattr("hami.dra.kubelet.DRA_SERVICE", "v1beta1.DRAPlugin")  # a plugin that only speaks the old API
    server = serve([(reg_grpc.add_RegistrationServicer_to_server, service)], short_dir / "reg" / "old.sock")
    try:
        kubelet = FakeDraKubelet(short_dir / "reg", lambda ns, name: {})
        assert kubelet.scan() == []
        assert "v1.DRAPlugin" in kubelet.refused[str(short_dir / "reg" / "old.sock")]
        assert not service.registered.is_set() and "v1beta1.DRAPlugin" in service.error
        assert kubelet.scan() == []  # a socket is looked at once
    finally:
        server.stop(0)


def test_prepare_needs_a_registered_driver_and_a_reserved_claim() -> None:
    claim = {
        "metadata": {"name": "c", "namespace": "default", "uid": "cu"},
        "status": {
            "allocation": {"devices": {"results": [{"request": "r", "driver": DRIVER, "pool": "n", "device": "d"}]}},
            "reservedFor": [{"resource": "pods", "name": "p", "uid": "pu"}],
        },
    }
    kubelet = FakeDraKubelet("/nonexistent", lambda ns, name: claim)
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "pu"},
        "spec": {"resourceClaims": [{"name": "x", "resourceClaimName": "c"}], "containers": [{"name": "a"}]},
    }
    with pytest.raises(PrepareError, match=f"DRA driver {DRIVER} is not registered"):
        kubelet.prepare(pod)
    with pytest.raises(PrepareError, match="not reserved for pod q"):
        kubelet.prepare({**pod, "metadata": {"name": "q", "namespace": "default", "uid": "qu"}})
    with pytest.raises(PrepareError, match="no ResourceClaim was created"):
        kubelet.prepare({**pod, "spec": {"resourceClaims": [{"name": "x", "resourceClaimTemplateName": "t"}]}})


def _documents() -> list[dict[str, Any]]:
    return [d for path in example_files() for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_packaged_examples_are_the_dra_examples() -> None:
    assert [p.name for p in example_files()] == sorted(p.name for p in (REPO / "deploy" / "examples" / "dra").glob("*.yaml"))
    for doc in _documents():
        kubernetes_validate.validate(doc, "1.34", strict=True)


def test_sandbox_allocates_prepares_and_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    with DraSandbox() as sandbox:
        for doc in _documents():
            sandbox.apply(doc)
        share = next(d for d in _documents() if d["kind"] == "Pod" and d["metadata"]["name"] == "dra-gpu-share")
        outcomes = []
        for i in range(4):  # four 30 % shares: three fit the first GPU, the fourth goes to the next one
            pod = json.loads(json.dumps(share))
            pod["metadata"]["name"] = f"share-{i}"
            outcomes.append(sandbox.submit(pod))
        assert [o["phase"] for o in outcomes] == ["Running"] * 4
        devices = [o["claims"][0]["results"][0]["device"] for o in outcomes]
        assert devices[0] == devices[1] == devices[2] != devices[3]
        first = outcomes[0]["containers"][0]
        assert first["envs"]["CUDA_DEVICE_SM_LIMIT"] == "30" and first["cdi_devices"][0].startswith(f"{DRIVER}/claim=")
        # every claim the sandbox wrote, and every slice the drivers wrote, is valid for a 1.34 API server
        for claim in sandbox.custom.list_namespaced_custom_object("resource.k8s.io", "v1", "default", "resourceclaims")["items"]:
            body = {k: claim[k] for k in ("apiVersion", "kind", "spec", "status")}
            body["metadata"] = {k: claim["metadata"][k] for k in ("name", "namespace", "annotations", "ownerReferences")}
            kubernetes_validate.validate(body, "1.34", strict=True)
        used = next(d for n in sandbox.nodes() for d in n["devices"] if d["name"] == devices[0])
        assert used["consumed"]["cores"] == "90"
        # the driver on that node prepared the claims and remembers them for unprepare
        assert len(sandbox.drivers[outcomes[0]["node"]].service.prepared()) == 4


def test_hami_sandbox_dra_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    command = [sys.executable, "-m", "hami.cli", "sandbox", "--dra", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    pods = {p["name"]: p for p in report["pods"]}
    assert set(pods) == {"dra-gpu-whole", "dra-gpu-share", "dra-ascend-share", "dra-mlu-share", "dra-gpu-too-large"}
    for name in ("dra-gpu-whole", "dra-gpu-share", "dra-ascend-share", "dra-mlu-share"):
        pod = pods[name]
        assert pod["phase"] == "Running", pod
        assert pod["claims"][0]["allocated"] and pod["containers"][0]["cdi_devices"] and pod["containers"][0]["envs"]
    assert pods["dra-gpu-whole"]["claims"][0]["results"][0]["consumedCapacity"] == {"memory": "81920Mi", "cores": "100", "shares": "1"}
    assert pods["dra-gpu-share"]["containers"][0]["envs"]["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"
    assert pods["dra-mlu-share"]["node"] == "mlu-370" and pods["dra-ascend-share"]["node"] == "npu-910b3"
    pending = pods["dra-gpu-too-large"]
    assert pending["phase"] == "Pending" and "cannot allocate all claims" in pending["reason"] and "204800Mi" in pending["reason"]
    assert "nvidia.hami.io" in report["device_classes"] and DRIVER in report["device_classes"]
