"""In-memory API server: the three patch dialects, optimistic concurrency under racing patchers,
and RFC 7386 properties of merge patch (hypothesis)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubeapi.patch import merge_patch, strategic_merge_patch

MERGE = "application/merge-patch+json"


def test_two_racing_patchers_with_the_same_stale_version_one_wins(kube_apiserver: KubeAPIServer) -> None:
    clients = [kube_apiserver.api_client() for _ in range(2)]
    apis = [client.CoreV1Api(c) for c in clients]
    apis[0].create_node({"metadata": {"name": "n1"}})
    try:
        for round_ in range(6):
            rv = apis[0].read_node("n1").metadata.resource_version
            barrier = threading.Barrier(2)
            outcomes: list[tuple[str, Any]] = [("", None), ("", None)]

            def patcher(i: int, rv: str, owner: str, barrier: threading.Barrier, outcomes: list[tuple[str, Any]]) -> None:
                body = {"metadata": {"resourceVersion": rv, "annotations": {"hami.io/owner": owner}}}
                barrier.wait()
                try:
                    node = apis[i].patch_node("n1", body)
                    outcomes[i] = ("ok", node.metadata.annotations["hami.io/owner"])
                except ApiException as exc:
                    outcomes[i] = ("err", (exc.status, json.loads(exc.body)["reason"]))

            threads = [threading.Thread(target=patcher, args=(i, rv, f"p{i}-{round_}", barrier, outcomes)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            kinds = sorted(o[0] for o in outcomes)
            assert kinds == ["err", "ok"], outcomes
            winner = next(o[1] for o in outcomes if o[0] == "ok")
            loser = next(o[1] for o in outcomes if o[0] == "err")
            assert loser == (409, "Conflict")
            assert apis[0].read_node("n1").metadata.annotations["hami.io/owner"] == winner
    finally:
        for c in clients:
            c.close()


def test_patch_without_resource_version_always_applies(kube_apiserver: KubeAPIServer) -> None:
    kube_apiserver.store.create("nodes", {"metadata": {"name": "n1"}})
    results: list[int] = []

    def bump(i: int) -> None:
        with kube_apiserver.api_client() as c:
            for j in range(5):
                client.CoreV1Api(c).patch_node("n1", {"metadata": {"labels": {f"t{i}-{j}": "x"}}})
                results.append(1)

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 20
    assert len(kube_apiserver.store.get("nodes", "n1")["metadata"]["labels"]) == 20


def test_merge_patch_null_deletes_an_annotation(core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n", "annotations": {"keep": "1", "drop": "2"}}})
    node = core_v1.patch_node("n", {"metadata": {"annotations": {"drop": None, "new": "3"}}}, _content_type=MERGE)
    assert node.metadata.annotations == {"keep": "1", "new": "3"}


def test_merge_patch_replaces_lists(core_v1: client.CoreV1Api) -> None:
    core_v1.create_node(
        {"metadata": {"name": "n"}, "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]}}
    )
    node = core_v1.patch_node("n", {"spec": {"taints": [{"key": "c", "effect": "NoExecute"}]}}, _content_type=MERGE)
    assert [t.key for t in node.spec.taints] == ["c"]


def test_strategic_merge_patches_containers_by_name(core_v1: client.CoreV1Api) -> None:
    core_v1.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}, {"name": "b", "image": "b:1"}]},
        },
    )
    # the python client sends a dict body as a strategic merge patch
    pod = core_v1.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "b", "image": "b:2"}]}})
    assert [(c.name, c.image) for c in pod.spec.containers] == [("a", "a:1"), ("b", "b:2")]
    assert pod.spec.containers[0].env[0].value == "1"
    # the same body as a merge patch replaces the list, which a pod's immutable spec rejects
    with pytest.raises(ApiException) as exc:
        core_v1.patch_namespaced_pod("p", "default", {"spec": {"containers": [{"name": "b", "image": "b:3"}]}}, _content_type=MERGE)
    assert exc.value.status == 422


def test_strategic_merge_node_conditions_merge_by_type(core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n"}})
    core_v1.patch_node_status(
        "n", {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "False"}]}}
    )
    node = core_v1.patch_node_status("n", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert {(c.type, c.status) for c in node.status.conditions} == {("Ready", "True"), ("MemoryPressure", "False")}


def test_json_patch(core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n", "labels": {"a": "1"}}})
    node = core_v1.patch_node(
        "n",
        [
            {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            {"op": "add", "path": "/metadata/annotations", "value": {"hami.io/x~y": "z"}},
            {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
            {"op": "add", "path": "/metadata/labels/b", "value": "3"},
            {"op": "remove", "path": "/metadata/labels/b"},
        ],
    )
    assert node.metadata.labels == {"a": "2"} and node.metadata.annotations == {"hami.io/x~y": "z"}
    node = core_v1.patch_node("n", [{"op": "add", "path": "/metadata/annotations/hami.io~1a~0b", "value": "1"}])
    assert node.metadata.annotations["hami.io/a~b"] == "1"
    with pytest.raises(ApiException) as exc:
        core_v1.patch_node(
            "n", [{"op": "test", "path": "/metadata/labels/a", "value": "nope"}, {"op": "remove", "path": "/metadata/labels/a"}]
        )
    assert exc.value.status == 422
    assert core_v1.read_node("n").metadata.labels == {"a": "2"}  # nothing applied


def test_json_patch_resource_version_is_a_precondition(core_v1: client.CoreV1Api) -> None:
    node = core_v1.create_node({"metadata": {"name": "n"}})
    core_v1.patch_node("n", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(ApiException) as exc:
        core_v1.patch_node(
            "n",
            [
                {"op": "replace", "path": "/metadata/resourceVersion", "value": node.metadata.resource_version},
                {"op": "add", "path": "/metadata/labels/c", "value": "d"},
            ],
        )
    assert exc.value.status == 409


# ---------------------------------------------------------------- strategic merge unit rules


def test_strategic_merge_rules() -> None:
    pod = {
        "spec": {
            "containers": [{"name": "a", "image": "1", "args": ["x", "y"], "ports": [{"containerPort": 80, "name": "http"}]}],
            "volumes": [{"name": "v1"}, {"name": "v2"}],
        },
        "metadata": {"finalizers": ["f1"], "labels": {"k": "v"}},
    }
    out = strategic_merge_patch(
        pod,
        {
            "spec": {
                "containers": [
                    {"name": "a", "args": ["z"], "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]},
                    {"name": "b", "image": "2", "env": None},
                ],
                "volumes": [{"name": "v1", "$patch": "delete"}],
            },
            "metadata": {"finalizers": ["f2"], "labels": {"k": None}},
        },
    )
    a, b = out["spec"]["containers"]
    assert a == {"name": "a", "image": "1", "args": ["z"], "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}]}
    assert b == {"name": "b", "image": "2"}
    assert out["spec"]["volumes"] == [{"name": "v2"}]
    assert out["metadata"] == {"finalizers": ["f1", "f2"], "labels": {}}
    assert pod["spec"]["volumes"] == [{"name": "v1"}, {"name": "v2"}]  # input untouched

    replaced = strategic_merge_patch(pod, {"spec": {"$patch": "replace", "volumes": []}})
    assert replaced["spec"] == {"volumes": []}
    replaced_list = strategic_merge_patch(pod, {"spec": {"volumes": [{"name": "only"}, {"$patch": "replace"}]}})
    assert replaced_list["spec"]["volumes"] == [{"name": "only"}]
    removed = strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}})
    assert removed["metadata"]["finalizers"] == []
    retained = strategic_merge_patch(pod, {"metadata": {"$retainKeys": ["labels"], "labels": {"n": "1"}}})
    assert retained["metadata"] == {"labels": {"k": "v", "n": "1"}}
    deleted_map = strategic_merge_patch(pod, {"metadata": {"$patch": "delete"}})
    assert "metadata" not in deleted_map


# ---------------------------------------------------------------- RFC 7386


RFC7386_EXAMPLES = [  # Appendix A
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_rfc7386_examples(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3)
_keys = st.text(alphabet="abcd", min_size=1, max_size=2)
json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4), max_leaves=12)
json_objects = st.dictionaries(_keys, json_values, max_size=4)


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    return value


def _diff(src: Any, dst: Any) -> Any:
    """A merge patch turning ``src`` into ``dst`` (``dst`` has no null object members)."""
    if not (isinstance(src, dict) and isinstance(dst, dict)):
        return dst
    patch: dict[str, Any] = {k: None for k in src if k not in dst}
    for k, v in dst.items():
        if k not in src or src[k] != v:
            patch[k] = _diff(src.get(k), v) if isinstance(src.get(k), dict) and isinstance(v, dict) else v
    return patch


@settings(max_examples=80, deadline=None)
@given(target=json_objects, patch=json_objects)
def test_merge_patch_properties(target: dict[str, Any], patch: dict[str, Any]) -> None:
    before = json.dumps(target, sort_keys=True)
    result = merge_patch(target, patch)
    assert json.dumps(target, sort_keys=True) == before  # input not modified
    assert merge_patch(result, patch) == result  # idempotent
    for key, value in patch.items():
        if value is None:
            assert key not in result
        elif not isinstance(value, dict):
            assert result[key] == value  # scalars and lists replace verbatim
        else:
            assert isinstance(result[key], dict)
    for key, value in target.items():
        if key not in patch:
            assert result[key] == value


@settings(max_examples=80, deadline=None)
@given(src=json_objects, dst=json_objects.map(_strip_nulls))
def test_merge_patch_of_a_diff_reaches_the_destination(src: dict[str, Any], dst: dict[str, Any]) -> None:
    assert merge_patch(src, _diff(src, dst)) == dst


def test_merge_patch_through_the_server_matches_the_model(kube_apiserver: KubeAPIServer) -> None:
    """The server's merge patch of a ConfigMap's ``data`` agrees with RFC 7386 for random patches."""
    store = kube_apiserver.store
    string_maps = st.dictionaries(_keys, st.text(alphabet="xyz", max_size=2), max_size=4)
    patches = st.dictionaries(_keys, st.none() | st.text(alphabet="xyz", max_size=2), max_size=4)
    with kube_apiserver.api_client() as c:
        api = client.CoreV1Api(c)

        @settings(max_examples=40, deadline=None)
        @given(data=string_maps, patch=patches)
        def check(data: dict[str, str], patch: dict[str, Any]) -> None:
            api.create_namespaced_config_map("default", {"metadata": {"name": "m"}, "data": data})
            try:
                out = api.patch_namespaced_config_map("m", "default", {"data": patch}, _content_type=MERGE)
                expected = merge_patch({"data": data}, {"data": patch}).get("data") or {}
                assert (out.data or {}) == expected
                assert (store.get("configmaps", "m", "default").get("data") or {}) == expected
            finally:
                store.delete("configmaps", "m", "default")

        check()
