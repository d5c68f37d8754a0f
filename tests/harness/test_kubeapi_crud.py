"""In-memory API server: CRUD of every kind through the real kubernetes client, errors, bindings,
subresources, metadata rules, kubeconfig, discovery, and robustness against garbage requests."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from hami.fakes.kubeapi import KubeAPIServer


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def _raw(
    srv: KubeAPIServer, method: str, path: str, body: bytes | str | None = None, content_type: str = "application/json"
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        headers = {"Content-Type": content_type} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data
    finally:
        conn.close()


class Kind:
    """Typed-client methods for one resource kind, so one test body covers all of them."""

    def __init__(self, api: Callable[[client.ApiClient], Any], stem: str, namespaced: bool, body: Callable[[str], dict[str, Any]]) -> None:
        self.api, self.stem, self.namespaced, self.body = api, stem, namespaced, body

    def call(self, api: Any, verb: str, *args: Any, **kwargs: Any) -> Any:
        if self.namespaced:
            method = getattr(api, f"{verb}_namespaced_{self.stem}")
            if verb in ("create", "list"):
                return method("default", *args, **kwargs)
            return method(args[0], "default", *args[1:], **kwargs)
        return getattr(api, f"{verb}_{self.stem}")(*args, **kwargs)


_CONTAINERS = {"containers": [{"name": "main", "image": "busybox"}]}
KINDS = {
    "node": Kind(client.CoreV1Api, "node", False, lambda n: {"metadata": {"name": n}, "spec": {}}),
    "namespace": Kind(client.CoreV1Api, "namespace", False, lambda n: {"metadata": {"name": n}}),
    "pod": Kind(client.CoreV1Api, "pod", True, lambda n: {"metadata": {"name": n}, "spec": _CONTAINERS}),
    "configmap": Kind(client.CoreV1Api, "config_map", True, lambda n: {"metadata": {"name": n}, "data": {"k": "v"}}),
    "resourcequota": Kind(client.CoreV1Api, "resource_quota", True, lambda n: {"metadata": {"name": n}, "spec": {"hard": {"pods": "10"}}}),
    "event": Kind(
        client.CoreV1Api,
        "event",
        True,
        lambda n: {
            "metadata": {"name": n},
            "reason": "Test",
            "message": "hello",
            "type": "Normal",
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        },
    ),
    "lease": Kind(
        client.CoordinationV1Api,
        "lease",
        True,
        lambda n: {"metadata": {"name": n}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
    ),
    "events.k8s.io": Kind(
        client.EventsV1Api,
        "event",
        True,
        lambda n: {
            "metadata": {"name": n},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "reason": "Test",
            "note": "hi",
            "type": "Normal",
            "action": "Testing",
            "reportingController": "hami",
            "reportingInstance": "x",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        },
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crud_round_trip(kind: str, kube_client: client.ApiClient) -> None:
    k = KINDS[kind]
    api = k.api(kube_client)
    created = k.call(api, "create", k.body("obj-1"))
    meta = created.metadata
    assert meta.name == "obj-1" and meta.uid and meta.creation_timestamp is not None
    assert int(meta.resource_version) > 0 and meta.generation == 1
    if k.namespaced:
        assert meta.namespace == "default"

    got = k.call(api, "read", "obj-1")
    assert got.metadata.uid == meta.uid and got.metadata.resource_version == meta.resource_version

    listed = k.call(api, "list")
    assert "obj-1" in [i.metadata.name for i in listed.items]
    assert int(listed.metadata.resource_version) >= int(meta.resource_version)

    body = k.body("obj-1")
    body["metadata"]["labels"] = {"tier": "x"}
    body["metadata"]["resourceVersion"] = meta.resource_version
    replaced = k.call(api, "replace", "obj-1", body)
    assert replaced.metadata.labels == {"tier": "x"}
    assert int(replaced.metadata.resource_version) > int(meta.resource_version)
    assert replaced.metadata.uid == meta.uid

    patched = k.call(api, "patch", "obj-1", {"metadata": {"annotations": {"a": "b"}}})
    assert patched.metadata.annotations == {"a": "b"} and patched.metadata.labels == {"tier": "x"}

    with pytest.raises(ApiException) as dup:
        k.call(api, "create", k.body("obj-1"))
    assert dup.value.status == 409 and _status(dup.value)["reason"] == "AlreadyExists"

    k.call(api, "delete", "obj-1")
    with pytest.raises(ApiException) as gone:
        k.call(api, "read", "obj-1")
    assert gone.value.status == 404 and _status(gone.value)["reason"] == "NotFound"
    for verb, args in (("replace", ("obj-1", k.body("obj-1"))), ("patch", ("obj-1", {"metadata": {}})), ("delete", ("obj-1",))):
        with pytest.raises(ApiException) as missing:
            k.call(api, verb, *args)
        assert missing.value.status == 404, verb


def test_error_bodies_are_kubernetes_status(core_v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        core_v1.read_namespaced_pod("ghost", "default")
    assert _status(exc.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "ghost" not found',
        "reason": "NotFound",
        "details": {"name": "ghost", "kind": "pods"},
        "code": 404,
    }
    core_v1.create_node({"metadata": {"name": "n1"}})
    with pytest.raises(ApiException) as exc:
        core_v1.create_node({"metadata": {"name": "n1"}})
    body = _status(exc.value)
    assert (body["code"], body["reason"], body["message"]) == (409, "AlreadyExists", 'nodes "n1" already exists')
    assert body["details"] == {"name": "n1", "kind": "nodes"}

    lease_api = client.CoordinationV1Api(core_v1.api_client)
    with pytest.raises(ApiException) as exc:
        lease_api.read_namespaced_lease("l", "kube-system")
    assert _status(exc.value)["details"] == {"name": "l", "group": "coordination.k8s.io", "kind": "leases"}
    assert _status(exc.value)["message"] == 'leases.coordination.k8s.io "l" not found'


def test_stale_put_is_a_conflict(core_v1: client.CoreV1Api) -> None:
    node = core_v1.create_node({"metadata": {"name": "n1"}})
    stale = node.metadata.resource_version
    core_v1.patch_node("n1", {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(ApiException) as exc:
        core_v1.replace_node("n1", {"metadata": {"name": "n1", "resourceVersion": stale}})
    body = _status(exc.value)
    assert exc.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on nodes "n1": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    # without a resourceVersion the update is unconditional
    assert core_v1.replace_node("n1", {"metadata": {"name": "n1", "labels": {"b": "2"}}}).metadata.labels == {"b": "2"}


def test_resource_version_is_cluster_wide_and_increasing(core_v1: client.CoreV1Api, kube_apiserver: KubeAPIServer) -> None:
    versions = [
        int(core_v1.create_node({"metadata": {"name": "n"}}).metadata.resource_version),
        int(core_v1.create_namespaced_config_map("default", {"metadata": {"name": "c"}}).metadata.resource_version),
        int(core_v1.patch_node("n", {"metadata": {"labels": {"x": "y"}}}).metadata.resource_version),
        int(core_v1.create_namespaced_config_map("kube-system", {"metadata": {"name": "c"}}).metadata.resource_version),
    ]
    assert versions == sorted(versions) and len(set(versions)) == 4
    assert kube_apiserver.store.resource_version == versions[-1]
    # a write that changes nothing changes no version
    again = core_v1.patch_node("n", {"metadata": {"labels": {"x": "y"}}})
    assert int(again.metadata.resource_version) == versions[2]


def test_generation_bumps_on_spec_changes_only(core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.0.0.0/24"}})
    assert core_v1.patch_node("n", {"metadata": {"labels": {"a": "b"}}}).metadata.generation == 1
    assert core_v1.patch_node("n", {"spec": {"unschedulable": True}}).metadata.generation == 2
    assert core_v1.patch_node_status("n", {"status": {"phase": "Running"}}).metadata.generation == 2


def test_generate_name(core_v1: client.CoreV1Api) -> None:
    names = {core_v1.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}}).metadata.name for _ in range(5)}
    assert len(names) == 5
    assert all(n.startswith("cfg-") and len(n) == len("cfg-") + 5 for n in names)


def test_server_owned_metadata_cannot_be_forged(core_v1: client.CoreV1Api) -> None:
    made = core_v1.create_node({"metadata": {"name": "n", "uid": "forged", "generation": 7, "creationTimestamp": "2000-01-01T00:00:00Z"}})
    assert made.metadata.uid != "forged" and made.metadata.generation == 1
    assert made.metadata.creation_timestamp.year > 2000
    with pytest.raises(ApiException) as exc:
        core_v1.create_node({"metadata": {"name": "m", "resourceVersion": "5"}})
    assert exc.value.status == 400


def test_status_subresource_separates_spec_and_status(core_v1: client.CoreV1Api) -> None:
    created = core_v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": _CONTAINERS, "status": {"phase": "Running"}})
    assert created.status.phase == "Pending"  # a new pod always starts Pending
    status = core_v1.patch_namespaced_pod_status(
        "p", "default", {"status": {"phase": "Running"}, "metadata": {"labels": {"ignored": "yes"}}}
    )
    assert status.status.phase == "Running" and not status.metadata.labels
    main = core_v1.patch_namespaced_pod("p", "default", {"status": {"phase": "Failed"}, "metadata": {"labels": {"kept": "yes"}}})
    assert main.status.phase == "Running" and main.metadata.labels == {"kept": "yes"}

    core_v1.create_node({"metadata": {"name": "n"}})
    node = core_v1.read_node("n")
    node.status = client.V1NodeStatus(capacity={"cpu": "8"}, allocatable={"cpu": "8"})
    updated = core_v1.replace_node_status("n", node)
    assert updated.status.capacity == {"cpu": "8"}
    assert core_v1.read_node_status("n").status.allocatable == {"cpu": "8"}


def test_pod_spec_is_immutable_except_images(core_v1: client.CoreV1Api) -> None:
    core_v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": _CONTAINERS})
    ok = core_v1.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "main", "image": "v2"}]}})
    assert ok.spec.containers[0].image == "v2"
    for bad in (
        {"spec": {"nodeName": "n1"}},
        {"spec": {"containers": [{"name": "extra", "image": "x"}]}},
        {"spec": {"containers": [{"name": "main", "resources": {"limits": {"cpu": "1"}}}]}},
    ):
        with pytest.raises(ApiException) as exc:
            core_v1.patch_namespaced_pod("p", "default", bad)
        assert exc.value.status == 422 and _status(exc.value)["reason"] == "Invalid"


def test_binding_sets_node_name_once(core_v1: client.CoreV1Api) -> None:
    core_v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": _CONTAINERS})
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
    }
    resp = core_v1.create_namespaced_pod_binding("p", "default", binding, _preload_content=False)
    assert resp.status == 201 and json.loads(resp.data)["status"] == "Success"
    pod = core_v1.read_namespaced_pod("p", "default")
    assert pod.spec.node_name == "n1"
    assert [(c.type, c.status) for c in pod.status.conditions] == [("PodScheduled", "True")]
    binding["target"]["name"] = "n2"
    with pytest.raises(ApiException) as exc:
        core_v1.create_namespaced_pod_binding("p", "default", binding, _preload_content=False)
    assert exc.value.status == 409 and _status(exc.value)["reason"] == "Conflict"
    assert "already assigned" in _status(exc.value)["message"]
    assert core_v1.read_namespaced_pod("p", "default").spec.node_name == "n1"

    # the collection form the scheduler uses: POST /api/v1/namespaces/{ns}/bindings
    core_v1.create_namespaced_pod("default", {"metadata": {"name": "q"}, "spec": _CONTAINERS})
    core_v1.create_namespaced_binding(
        "default", {"metadata": {"name": "q"}, "target": {"kind": "Node", "name": "n2"}}, _preload_content=False
    )
    assert core_v1.read_namespaced_pod("q", "default").spec.node_name == "n2"
    with pytest.raises(ApiException) as exc:
        core_v1.create_namespaced_pod_binding(
            "ghost", "default", {"metadata": {"name": "ghost"}, "target": {"name": "n1"}}, _preload_content=False
        )
    assert exc.value.status == 404


def test_delete_returns_object_and_honours_finalizers(core_v1: client.CoreV1Api) -> None:
    core_v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": _CONTAINERS})
    deleted = core_v1.delete_namespaced_pod("p", "default", grace_period_seconds=30)
    assert deleted.metadata.name == "p"
    with pytest.raises(ApiException):
        core_v1.read_namespaced_pod("p", "default")

    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "c", "finalizers": ["hami.io/x"]}})
    core_v1.delete_namespaced_config_map("c", "default")
    pending = core_v1.read_namespaced_config_map("c", "default")
    assert pending.metadata.deletion_timestamp is not None
    core_v1.patch_namespaced_config_map("c", "default", {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json")
    with pytest.raises(ApiException) as exc:
        core_v1.read_namespaced_config_map("c", "default")
    assert exc.value.status == 404


def test_delete_preconditions(core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n"}})
    with pytest.raises(ApiException) as exc:
        core_v1.delete_node("n", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other")))
    assert exc.value.status == 409
    core_v1.read_node("n")


def test_any_namespace_works_without_creating_it(core_v1: client.CoreV1Api) -> None:
    names = {ns.metadata.name for ns in core_v1.list_namespace().items}
    assert {"default", "kube-system"} <= names
    core_v1.create_namespaced_config_map("never-created", {"metadata": {"name": "c"}})
    assert [c.metadata.name for c in core_v1.list_namespaced_config_map("never-created").items] == ["c"]
    with pytest.raises(ApiException) as exc:
        core_v1.create_namespaced_config_map("default", {"metadata": {"name": "c", "namespace": "other"}})
    assert exc.value.status == 400


def test_namespace_delete_removes_its_objects(core_v1: client.CoreV1Api) -> None:
    core_v1.create_namespace({"metadata": {"name": "team"}})
    core_v1.create_namespaced_config_map("team", {"metadata": {"name": "c"}})
    core_v1.delete_namespace("team")
    assert core_v1.list_namespaced_config_map("team").items == []


def test_delete_collection_with_selector(core_v1: client.CoreV1Api) -> None:
    for i in range(4):
        core_v1.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}", "labels": {"i": str(i % 2)}}})
    core_v1.delete_collection_namespaced_config_map("default", label_selector="i=0")
    assert sorted(c.metadata.name for c in core_v1.list_namespaced_config_map("default").items) == ["c1", "c3"]


def test_invalid_objects_are_422(core_v1: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as exc:
        core_v1.create_node({"metadata": {"name": "Not_A_Valid_Name"}})
    body = _status(exc.value)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as exc:
        core_v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        core_v1.create_node({"metadata": {}})
    assert exc.value.status == 422


def test_garbage_requests_get_clear_errors_and_server_keeps_serving(kube_apiserver: KubeAPIServer) -> None:
    ns = "/api/v1/namespaces/default/configmaps"
    kube_apiserver.store.create("configmaps", {"metadata": {"name": "c"}}, "default")
    cases = [
        ("POST", ns, b"{not json", "application/json", 400),
        ("POST", ns, b"", "application/json", 400),
        ("POST", ns, b"[1, 2]", "application/json", 400),
        ("POST", ns, b'{"metadata": "x"}', "application/json", 400),
        ("POST", ns, b'{"metadata": {"name": "x", "labels": {"a": 1}}}', "application/json", 400),
        ("POST", ns, b'{"kind": "Node", "metadata": {"name": "x"}}', "application/json", 400),
        ("POST", ns, b"\xff\xfe\x00garbage", "application/json", 400),
        ("POST", ns, b'{"metadata": {"name": "x"}}', "application/vnd.kubernetes.protobuf", 415),
        ("PUT", ns + "/c", b"nope", "application/json", 400),
        ("PATCH", ns + "/c", b"{}", "application/x-unknown", 415),
        ("PATCH", ns + "/c", b"{oops", "application/merge-patch+json", 400),
        ("PATCH", ns + "/c", b"[1]", "application/merge-patch+json", 400),
        ("PATCH", ns + "/c", b'{"op": "add"}', "application/json-patch+json", 400),
        ("PATCH", ns + "/c", b'[{"op": "test", "path": "/data/x", "value": 1}]', "application/json-patch+json", 422),
        ("PATCH", ns + "/c", b'{"metadata": {"name": "other"}}', "application/merge-patch+json", 422),
        ("PATCH", ns + "/c", b'{"spec": [1]}', "application/strategic-merge-patch+json", 400),
        ("GET", ns + "?limit=abc", None, "", 400),
        ("GET", ns + "?labelSelector=a%20in%20(", None, "", 400),
        ("GET", ns + "?fieldSelector=spec.bogus%3Dx", None, "", 400),
        ("GET", ns + "?continue=%%%", None, "", 400),
        ("GET", "/api/v1/widgets", None, "", 404),
        ("GET", "/api/v2", None, "", 404),
        ("DELETE", "/api", None, "", 405),
    ]
    for method, path, body, ctype, expected in cases:
        code, reply = _raw(kube_apiserver, method, path, body, ctype)
        assert code == expected, (method, path, body, reply)
        assert reply["kind"] == "Status" and reply["code"] == expected and reply["status"] == "Failure"
    code, reply = _raw(kube_apiserver, "GET", ns)
    assert code == 200 and [i["metadata"]["name"] for i in reply["items"]] == ["c"]


def test_discovery_and_version(kube_apiserver: KubeAPIServer, kube_client: client.ApiClient) -> None:
    assert client.VersionApi(kube_client).get_code().major == "1"
    groups = {g.name for g in client.ApisApi(kube_client).get_api_versions().groups}
    assert {"coordination.k8s.io", "events.k8s.io"} <= groups
    core = client.CoreV1Api(kube_client).get_api_resources()
    names = {r.name for r in core.resources}
    assert {"pods", "pods/status", "pods/binding", "nodes", "nodes/status", "events", "namespaces", "configmaps", "resourcequotas"} <= names
    leases = client.CoordinationV1Api(kube_client).get_api_resources()
    assert [r.name for r in leases.resources] == ["leases"]
    assert _raw(kube_apiserver, "GET", "/api")[1]["versions"] == ["v1"]
    assert _raw(kube_apiserver, "GET", "/healthz") == (200, b"ok")


def test_kubeconfig_loads_and_works(kube_apiserver: KubeAPIServer, tmp_path: Path) -> None:
    path = kube_apiserver.write_kubeconfig(tmp_path / "kube" / "config")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == kube_apiserver.url
    with client.ApiClient(configuration) as api_client:
        api = client.CoreV1Api(api_client)
        api.create_namespaced_config_map("default", {"metadata": {"name": "via-kubeconfig"}})
    assert kube_apiserver.store.get("configmaps", "via-kubeconfig", "default")["metadata"]["name"] == "via-kubeconfig"


def test_context_manager_and_store_access() -> None:
    with KubeAPIServer() as srv:
        srv.store.create("nodes", {"metadata": {"name": "n1"}})
        srv.store.mutate(
            "nodes",
            "n1",
            lambda n: n["status"].update(capacity={"cpu": "4"}) if "status" in n else n.update(status={"capacity": {"cpu": "4"}}),
            subresource="status",
        )
        with srv.api_client() as api_client:
            node = client.CoreV1Api(api_client).read_node("n1")
        assert node.status.capacity == {"cpu": "4"}
        url = srv.url
    assert not srv.running
    with pytest.raises(urllib3.exceptions.HTTPError):  # connection refused, after urllib3's retries
        client.CoreV1Api(client.ApiClient(client.Configuration(host=url))).read_node("n1", _request_timeout=2)


def test_cli_command_serves_and_writes_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    code = "from hami.fakes.cli import apiserver_command; apiserver_command()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.poll() else "")
        configuration = client.Configuration()
        deadline = time.monotonic() + 5
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        with client.ApiClient(configuration) as api_client:
            names = {n.metadata.name for n in client.CoreV1Api(api_client).list_namespace().items}
        assert "default" in names
    finally:
        proc.send_signal(2)  # SIGINT, like Ctrl-C
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


_FIELD_NAMES = [
    "metadata",
    "name",
    "namespace",
    "spec",
    "status",
    "kind",
    "apiVersion",
    "labels",
    "annotations",
    "containers",
    "image",
    "data",
    "finalizers",
    "resourceVersion",
    "generateName",
    "uid",
    "$patch",
    "$retainKeys",
    "op",
    "path",
    "value",
    "from",
]
_json_docs = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "c", "x", "/metadata/name", "add", "remove", "Pod", "v1", "replace", "delete"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_FIELD_NAMES) | st.text(max_size=3), inner, max_size=4),
    max_leaves=20,
)


def test_arbitrary_bodies_never_cause_a_server_error(kube_apiserver: KubeAPIServer) -> None:
    kube_apiserver.store.create("configmaps", {"metadata": {"name": "c"}}, "default")
    kube_apiserver.store.create("pods", {"metadata": {"name": "p"}, "spec": _CONTAINERS}, "default")
    conn = http.client.HTTPConnection("127.0.0.1", kube_apiserver.port, timeout=10)
    requests = [
        ("POST", "/api/v1/namespaces/default/configmaps", "application/json"),
        ("POST", "/api/v1/namespaces/default/pods", "application/json"),
        ("PUT", "/api/v1/namespaces/default/pods/p", "application/json"),
        ("PUT", "/api/v1/namespaces/default/pods/p/status", "application/json"),
        ("POST", "/api/v1/namespaces/default/pods/p/binding", "application/json"),
        ("DELETE", "/api/v1/namespaces/default/configmaps/absent", "application/json"),
    ]
    requests += [
        ("PATCH", path, ctype)
        for path in ("/api/v1/namespaces/default/configmaps/c", "/api/v1/namespaces/default/pods/p")
        for ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json")
    ]

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(doc=_json_docs, raw=st.binary(max_size=20), which=st.sampled_from(requests), use_raw=st.booleans())
    def check(doc: Any, raw: bytes, which: tuple[str, str, str], use_raw: bool) -> None:
        method, path, ctype = which
        body = raw if use_raw else json.dumps(doc).encode()
        conn.request(method, path, body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        reply = json.loads(resp.read())
        assert resp.status < 500, (method, path, ctype, body, reply)
        if resp.status >= 400:
            assert reply["kind"] == "Status" and reply["code"] == resp.status and reply["reason"]

    try:
        check()
        nested = b"[" * 5000 + b"]" * 5000
        conn.request("POST", "/api/v1/namespaces/default/configmaps", body=nested, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400 and json.loads(resp.read())["reason"] == "BadRequest"
    finally:
        conn.close()
    assert kube_apiserver.store.get("configmaps", "c", "default")["metadata"]["name"] == "c"


def test_restart_keeps_state_and_port() -> None:
    srv = KubeAPIServer().start()
    try:
        port = srv.port
        srv.store.create("nodes", {"metadata": {"name": "n"}})
        srv.stop()
        srv.start()  # an API server restart: same address, same cluster state
        assert srv.port == port
        with srv.api_client() as c:
            assert [n.metadata.name for n in client.CoreV1Api(c).list_node().items] == ["n"]
    finally:
        srv.stop()
