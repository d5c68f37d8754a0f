"""OpenAPI, Table printing, field validation and server-side apply through the ``kubernetes`` client and
raw HTTP (the same paths tests/harness/test_kubeapi_kubectl.py drives with kubectl), plus property
tests for the Accept parser and the age printer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hami.fakes.kubeapi import KubeAPIServer, apply, tables
from hami.fakes.kubeapi.resources import by_key
from hami.fakes.kubeapi.strategy import canonical_number

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def _get(srv: KubeAPIServer, path: str, accept: str = "application/json") -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(srv.url + path, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def _send(srv: KubeAPIServer, method: str, path: str, body: Any, ctype: str) -> tuple[int, Any, list[str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(srv.url + path, data=data, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers.get_all("Warning") or []
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), []


# ---------------------------------------------------------------- OpenAPI


def test_openapi_v3_root_lists_every_group_version_with_a_hash(kube_apiserver: KubeAPIServer) -> None:
    code, root, _ = _get(kube_apiserver, "/openapi/v3")
    assert code == 200
    assert set(root["paths"]) == {
        "api/v1",
        "apis/coordination.k8s.io/v1",
        "apis/events.k8s.io/v1",
        "apis/admissionregistration.k8s.io/v1",
        "apis/resource.k8s.io/v1",
    }
    url = root["paths"]["apis/coordination.k8s.io/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/coordination.k8s.io/v1?hash=")
    code, doc, _ = _get(kube_apiserver, url)
    assert code == 200 and doc["info"]["version"] == client.VersionApi(kube_apiserver.api_client()).get_code().git_version
    lease = doc["components"]["schemas"]["io.k8s.api.coordination.v1.Lease"]
    assert lease["x-kubernetes-group-version-kind"] == [{"group": "coordination.k8s.io", "kind": "Lease", "version": "v1"}]
    patch = doc["paths"]["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/apply-patch+yaml" in patch["requestBody"]["content"]


def test_openapi_v3_core_schema_has_refs_descriptions_and_merge_keys(kube_apiserver: KubeAPIServer) -> None:
    _, doc, _ = _get(kube_apiserver, "/openapi/v3/api/v1")
    schemas = doc["components"]["schemas"]
    spec = schemas["io.k8s.api.core.v1.PodSpec"]
    containers = spec["properties"]["containers"]
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert containers["x-kubernetes-patch-merge-key"] == "name" and "containers" in spec["required"]
    assert spec["properties"]["nodeName"]["type"] == "string" and spec["properties"]["nodeName"]["description"]
    meta = schemas["io.k8s.api.core.v1.Pod"]["properties"]["metadata"]
    assert meta["allOf"] == [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["finalizers"]["x-kubernetes-list-type"] == "set"
    assert _get(kube_apiserver, "/openapi/v3/apis/apps/v1")[0] == 404


def test_openapi_v2_is_json_and_refuses_a_protobuf_only_client(kube_apiserver: KubeAPIServer) -> None:
    code, doc, _ = _get(kube_apiserver, "/openapi/v2")
    assert code == 200 and doc["swagger"] == "2.0"
    assert doc["definitions"]["io.k8s.api.core.v1.Node"]["x-kubernetes-group-version-kind"][0]["kind"] == "Node"
    code, status, _ = _get(kube_apiserver, "/openapi/v2", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
    assert code == 406 and status["reason"] == "NotAcceptable" and "application/json only" in status["message"]


# ---------------------------------------------------------------- field validation


def test_strict_field_validation_names_each_unknown_field(kube_apiserver: KubeAPIServer) -> None:
    body = {**POD, "spec": {"containers": [{"name": "c", "image": "busybox", "imagex": "y"}], "nodeNam": "n"}}
    code, status, _ = _send(kube_apiserver, "POST", "/api/v1/namespaces/default/pods?fieldValidation=Strict", body, "application/json")
    assert code == 400
    assert status["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].imagex", unknown field "spec.nodeNam"'
    )
    code, _, warnings = _send(kube_apiserver, "POST", "/api/v1/namespaces/default/pods?fieldValidation=Warn", body, "application/json")
    assert code == 201 and warnings == ['299 - "unknown field \\"spec.containers[0].imagex\\""', '299 - "unknown field \\"spec.nodeNam\\""']
    code, status, _ = _send(kube_apiserver, "POST", "/api/v1/namespaces/default/pods?fieldValidation=Loose", body, "application/json")
    assert code == 400 and "'Loose'" in status["message"]


# ---------------------------------------------------------------- tables


def test_table_for_pods_has_every_column_and_metadata_rows(kube_apiserver: KubeAPIServer, core_v1: Any) -> None:
    core_v1.create_namespaced_pod("default", POD)
    code, table, _ = _get(kube_apiserver, "/api/v1/namespaces/default/pods", TABLE)
    assert code == 200 and table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
        "IP",
        "Node",
        "Nominated Node",
        "Readiness Gates",
    ]
    assert [c["priority"] for c in table["columnDefinitions"]] == [0] * 5 + [1] * 4
    row = table["rows"][0]
    assert row["cells"][:4] == ["p", "0/1", "Pending", "0"]
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["name"] == "p"
    assert table["metadata"]["resourceVersion"]
    _, full, _ = _get(kube_apiserver, "/api/v1/namespaces/default/pods/p?includeObject=Object", TABLE)
    assert full["rows"][0]["object"]["spec"]["containers"][0]["image"] == "busybox"
    _, bare, _ = _get(kube_apiserver, "/api/v1/namespaces/default/pods?includeObject=None", TABLE)
    assert "object" not in bare["rows"][0]
    code, status, _ = _get(kube_apiserver, "/api/v1/pods?includeObject=All", TABLE)
    assert code == 400 and "includeObject" in status["message"]


def test_plain_json_and_unservable_accepts(kube_apiserver: KubeAPIServer) -> None:
    assert _get(kube_apiserver, "/api/v1/nodes", "application/json")[1]["kind"] == "NodeList"
    assert _get(kube_apiserver, "/api/v1/nodes", "*/*")[1]["kind"] == "NodeList"
    code, status, _ = _get(kube_apiserver, "/api/v1/nodes", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
    assert code == 406 and status["reason"] == "NotAcceptable"


def test_default_table_for_kinds_without_a_printer(kube_apiserver: KubeAPIServer, core_v1: Any) -> None:
    core_v1.create_namespaced_event("default", {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}})
    _, table, _ = _get(kube_apiserver, "/api/v1/namespaces/default/events", TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Created At"]
    assert table["rows"][0]["cells"][0] == "e" and table["rows"][0]["cells"][1].endswith("Z")


NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _pod(status: dict[str, Any], spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": "2025-12-31T23:59:00Z", **meta},
        "spec": spec or {"containers": [{"name": "a"}, {"name": "b"}]},
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "spec", "meta", "cells"),
    [
        ({"phase": "Pending"}, None, {}, ["0/2", "Pending", "0", "60s"]),
        (
            {"phase": "Pending", "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]},
            None,
            {},
            ["0/2", "ContainerCreating", "0", "60s"],
        ),
        (
            {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": "a",
                        "ready": True,
                        "restartCount": 1,
                        "state": {"running": {}},
                        "lastState": {"terminated": {"finishedAt": "2025-12-31T23:55:00Z"}},
                    },
                    {"name": "b", "ready": True, "restartCount": 2, "state": {"running": {}}},
                ],
            },
            None,
            {},
            ["2/2", "Running", "3 (5m ago)", "60s"],
        ),
        (
            {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]},
            {"containers": [{"name": "a"}]},
            {},
            ["0/1", "Completed", "0", "60s"],
        ),
        (
            {"phase": "Failed", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 3}}}]},
            {"containers": [{"name": "a"}]},
            {},
            ["0/1", "ExitCode:3", "0", "60s"],
        ),
        (
            {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {"waiting": {"reason": "PodInitializing"}}}]},
            {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            {},
            ["0/1", "Init:0/1", "0", "60s"],
        ),
        ({"phase": "Pending", "reason": "UnexpectedAdmissionError"}, None, {}, ["0/2", "UnexpectedAdmissionError", "0", "60s"]),
        ({"phase": "Running"}, None, {"deletionTimestamp": "2026-01-01T00:00:00Z"}, ["0/2", "Terminating", "0", "60s"]),
        (
            {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]},
            None,
            {},
            ["0/2", "SchedulingGated", "0", "60s"],
        ),
    ],
)
def test_pod_printer_follows_kube_apiservers(
    status: dict[str, Any], spec: dict[str, Any] | None, meta: dict[str, Any], cells: list[str]
) -> None:
    got, conditions = tables.print_pod(_pod(status, spec, **meta), NOW)
    assert got[1:5] == cells
    assert bool(conditions) == (status["phase"] in ("Succeeded", "Failed"))


def test_node_printer_status_roles_and_wide_cells() -> None:
    node = {
        "metadata": {
            "name": "n",
            "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "gpu", "node-role.kubernetes.io/": "x"},
        },
        "spec": {"unschedulable": True},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}], "addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}]},
    }
    cells, _ = tables.print_node(node, NOW)
    assert cells[1:3] == ["NotReady,SchedulingDisabled", "control-plane,gpu"]
    assert cells[3] == "<unknown>" and cells[5:7] == ["<none>", "1.2.3.4"] and cells[7] == "<unknown>"
    assert tables.print_node({"metadata": {"name": "m"}}, NOW)[0][1:3] == ["Unknown", "<none>"]


def test_watch_as_table_sends_one_row_per_event(kube_apiserver: KubeAPIServer, core_v1: Any) -> None:
    core_v1.create_node({"metadata": {"name": "n1"}})
    request = urllib.request.Request(kube_apiserver.url + "/api/v1/nodes?watch=1&timeoutSeconds=1", headers={"Accept": TABLE})
    with urllib.request.urlopen(request, timeout=30) as response:
        events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ADDED"]
    table = events[0]["object"]
    assert table["kind"] == "Table" and table["rows"][0]["cells"][:3] == ["n1", "Unknown", "<none>"]
    assert table["columnDefinitions"][1]["name"] == "Status"


# ---------------------------------------------------------------- server-side apply


def _apply(srv: KubeAPIServer, path: str, body: Any, manager: str | None = "m1", force: bool = False) -> tuple[int, Any]:
    query = "&".join(q for q in (f"fieldManager={manager}" if manager else "", "force=true" if force else "") if q)
    code, obj, _ = _send(srv, "PATCH", f"{path}?{query}", body, "application/apply-patch+yaml")
    return code, obj


def test_server_side_apply_through_the_python_client(kube_apiserver: KubeAPIServer, core_v1: Any) -> None:
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "1"}}}
    node = core_v1.patch_node("n1", body, field_manager="tool", _content_type="application/apply-patch+yaml")
    assert node.metadata.labels == {"a": "1"}
    assert [(m.manager, m.operation) for m in node.metadata.managed_fields] == [("tool", "Apply")]
    # an ordinary update by someone else takes the field it changes; a re-apply then conflicts
    core_v1.patch_node("n1", {"metadata": {"labels": {"a": "2"}}}, field_manager="editor")
    with pytest.raises(ApiException) as exc:
        core_v1.patch_node("n1", body, field_manager="tool", _content_type="application/apply-patch+yaml")
    assert exc.value.status == 409
    status = json.loads(exc.value.body or "{}")
    assert status["reason"] == "Conflict"
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "editor" using v1', "field": ".metadata.labels.a"}
    ]
    forced = core_v1.patch_node("n1", body, field_manager="tool", force=True, _content_type="application/apply-patch+yaml")
    assert forced.metadata.labels == {"a": "1"}
    assert {m.manager for m in forced.metadata.managed_fields} == {"tool"}


def test_apply_removes_fields_the_manager_dropped_and_keeps_shared_ones(kube_apiserver: KubeAPIServer) -> None:
    path = "/api/v1/namespaces/default/configmaps/c"
    code, cm = _apply(kube_apiserver, path, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "1", "y": "2"}})
    assert code == 201 and cm["metadata"]["name"] == "c"
    assert _apply(kube_apiserver, path, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"y": "2"}}, "m2")[0] == 200
    code, cm = _apply(kube_apiserver, path, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"z": "3"}})
    assert code == 200 and cm["data"] == {"y": "2", "z": "3"}  # x dropped, y still m2's
    rv = cm["metadata"]["resourceVersion"]
    code, again = _apply(kube_apiserver, path, {"apiVersion": "v1", "kind": "ConfigMap", "data": {"z": "3"}})
    assert again["metadata"]["resourceVersion"] == rv  # a no-op apply changes nothing


def test_first_apply_to_an_unmanaged_object_conflicts_with_before_first_apply(kube_apiserver: KubeAPIServer, core_v1: Any) -> None:
    core_v1.create_namespaced_pod("default", POD)
    config = {**POD, "spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}
    code, status = _apply(kube_apiserver, "/api/v1/namespaces/default/pods/p", config)
    assert code == 409
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "before-first-apply" using v1: .spec.containers[name="c"].image'
    )
    code, pod = _apply(kube_apiserver, "/api/v1/namespaces/default/pods/p", config, force=True)
    assert code == 200 and pod["spec"]["containers"][0]["image"] == "busybox:2"
    assert pod["status"]["phase"] == "Pending"  # apply to the main resource leaves status alone


@pytest.mark.parametrize(
    ("body", "manager", "message"),
    [
        ({"apiVersion": "v1", "kind": "ConfigMap"}, None, "fieldManager"),
        ({"kind": "ConfigMap"}, "m", "apiVersion must be set"),
        ({"apiVersion": "v1", "kind": "Secret"}, "m", "does not match the expected kind"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}, "m", "does not match the name"),
        (b"data: [unclosed", "m", "couldn't decode"),
    ],
)
def test_bad_apply_requests_are_400_naming_the_problem(kube_apiserver: KubeAPIServer, body: Any, manager: str | None, message: str) -> None:
    code, status = _apply(kube_apiserver, "/api/v1/namespaces/default/configmaps/c", body, manager)
    assert code == 400 and message in status["message"]


def test_force_outside_apply_is_refused(kube_apiserver: KubeAPIServer, core_v1: Any) -> None:
    core_v1.create_node({"metadata": {"name": "n"}})
    code, status, _ = _send(kube_apiserver, "PATCH", "/api/v1/nodes/n?force=true", {"metadata": {}}, "application/merge-patch+json")
    assert code == 400 and "only valid for apply" in status["message"]


def test_fields_v1_round_trip_and_readable_paths() -> None:
    pod = by_key("pods")
    obj = {
        "metadata": {"name": "p", "labels": {"a": "b"}, "finalizers": ["x/y"]},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}], "tolerations": [{"key": "k"}]},
    }
    paths = set(apply.leaves(obj, pod))
    assert ("f:spec", "f:tolerations") in paths  # atomic list: one leaf
    assert ("f:metadata", "f:finalizers", 'v:"x/y"') in paths
    assert ("f:spec", "f:containers", 'k:{"name":"c"}', "f:ports", 'k:{"containerPort":80}', ".") in paths
    assert apply.from_fields_v1(apply.to_fields_v1(paths)) == paths
    assert apply.readable(("f:spec", "f:containers", 'k:{"name":"c"}', "f:image")) == '.spec.containers[name="c"].image'
    assert apply.readable(("f:metadata", "f:finalizers", 'v:"x/y"')) == '.metadata.finalizers[="x/y"]'


# ---------------------------------------------------------------- properties


_token = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789.+-*"), min_size=1, max_size=12)
_media = st.builds(lambda t, s, ps: (f"{t}/{s}", ps), _token, _token, st.lists(st.tuples(_token, _token), max_size=3))


@given(st.lists(_media, max_size=4))
def test_accept_parser_reads_back_what_was_written(entries: list[tuple[str, list[tuple[str, str]]]]) -> None:
    header = ", ".join(";".join([mime] + [f"{k}={v}" for k, v in params]) for mime, params in entries)
    parsed = tables.parse_accept(header)
    assert [(m.mime, list(m.params)) for m in parsed] == [(mime.lower(), [(k.lower(), v) for k, v in params]) for mime, params in entries]


@given(st.text(max_size=60))
def test_accept_parser_never_fails_other_than_by_naming_the_entry(header: str) -> None:
    try:
        tables.parse_accept(header)
    except ValueError as exc:
        assert "in Accept" in str(exc)


@pytest.mark.parametrize(
    ("header", "version"),
    [
        (TABLE, "v1"),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "v1beta1"),
        ("application/json", None),
        ("", None),
        ("application/json;as=Table;v=v2;g=meta.k8s.io, application/json", None),
    ],
)
def test_wants_table(header: str, version: str | None) -> None:
    assert tables.wants_table(header) == version


@given(st.integers(min_value=0, max_value=20 * 365 * 86400))
def test_human_duration_format_and_since_agree(seconds: int) -> None:
    text = tables.human_duration(seconds)
    assert text[0].isdigit() and text[-1] in "smhdy"
    assert tables.since((NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ"), NOW) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (9 * 3600, "9h"),
        (50 * 3600, "2d2h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
        (-1, "0s"),
        (-5, "<invalid>"),
    ],
)
def test_human_duration_examples(seconds: int, text: str) -> None:
    assert tables.human_duration(seconds) == text


@given(st.integers(min_value=-(10**20), max_value=10**20))
def test_canonical_number_reads_back_exactly(value: int) -> None:
    from hami.wire.quantity import parse_quantity

    assert parse_quantity(canonical_number(value)) == value
