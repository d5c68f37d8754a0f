"""In-memory API server: label and field selectors (hypothesis against a reference model) and
limit/continue pagination."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubeapi.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

KEYS = ["app", "tier", "hami.io/gpu", "x-1"]
VALUES = ["", "a", "b", "web", "1", "10"]
INTS = ["0", "1", "5", "10"]
OPS = ["exists", "!", "=", "==", "!=", "in", "notin", "gt", "lt"]

labels_st = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)
space = st.sampled_from(["", " ", "  "])


@st.composite
def requirement(draw: st.DrawFn) -> tuple[str, str, tuple[str, ...], str]:
    """(key, op, values, rendered text)."""
    key, op = draw(st.sampled_from(KEYS)), draw(st.sampled_from(OPS))
    s1, s2 = draw(space), draw(space)
    if op == "exists":
        return key, op, (), f"{s1}{key}{s2}"
    if op == "!":
        return key, op, (), f"{s1}!{s2}{key}"
    if op in ("=", "==", "!="):
        value = draw(st.sampled_from(VALUES))
        return key, op, (value,), f"{key}{s1}{op}{s2}{value}"
    if op in ("gt", "lt"):
        value = draw(st.sampled_from(INTS))
        return key, op, (value,), f"{key}{s1}{'>' if op == 'gt' else '<'}{s2}{value}"
    values = tuple(draw(st.lists(st.sampled_from([v for v in VALUES if v]), min_size=1, max_size=3)))
    return key, op, values, f"{key} {op}{s1}({s2}{(',' + s2).join(values)}{s1})"


selectors_st = st.lists(requirement(), min_size=0, max_size=4)


def reference(reqs: list[tuple[str, str, tuple[str, ...], str]], labels: dict[str, str]) -> bool:
    """Selector semantics as the Kubernetes documentation states them."""
    for key, op, values, _ in reqs:
        have = labels.get(key)
        if op == "exists":
            ok = have is not None
        elif op == "!":
            ok = have is None
        elif op in ("=", "=="):
            ok = have == values[0]
        elif op == "!=":
            ok = have != values[0]  # absent keys match
        elif op == "in":
            ok = have is not None and have in values
        elif op == "notin":
            ok = have not in values  # absent keys match
        else:
            ok = (
                have is not None
                and have.lstrip("-").isdigit()
                and (int(have) > int(values[0]) if op == "gt" else int(have) < int(values[0]))
            )
        if not ok:
            return False
    return True


def render(reqs: list[tuple[str, str, tuple[str, ...], str]], sep: str = ",") -> str:
    return sep.join(r[3] for r in reqs)


@settings(max_examples=200, deadline=None)
@given(reqs=selectors_st, labels=labels_st, sep=st.sampled_from([",", ", ", " ,"]))
def test_valid_label_selectors_parse_and_match_like_kubernetes(
    reqs: list[tuple[str, str, tuple[str, ...], str]], labels: dict[str, str], sep: str
) -> None:
    selector = parse_label_selector(render(reqs, sep))
    assert len(selector.requirements) == len(reqs)
    assert selector.matches(labels) == reference(reqs, labels)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab=!(),<> in notin/.-_1\t")), max_size=20) | st.text(max_size=15))
def test_arbitrary_selector_text_parses_or_fails_clearly(text: str) -> None:
    for parse in (parse_label_selector, parse_field_selector):
        try:
            parse(text)
        except SelectorError as exc:
            assert str(exc)


def test_label_selector_edge_cases() -> None:
    assert parse_label_selector("x in ()").matches({"x": ""})  # kube turns () into {""}
    assert not parse_label_selector("x in ()").matches({"x": "a"})
    assert parse_label_selector("").matches({}) and parse_label_selector("").empty
    for bad in ("a in (b", "a notin b", "=a", "a,", ",a", "a b", "!a=b", "a > x", "-a", "a=b c", "a==", "a in (b c)"):
        if bad == "a==":
            assert parse_label_selector(bad).matches({"a": ""})  # empty value is valid
            continue
        with pytest.raises(SelectorError):
            parse_label_selector(bad)


def test_field_selector_parsing() -> None:
    sel = parse_field_selector(r"metadata.name=a\,b,spec.nodeName!=,status.phase==Running")
    assert [(t.field, t.op, t.value) for t in sel.terms] == [
        ("metadata.name", "=", "a,b"),
        ("spec.nodeName", "!=", ""),
        ("status.phase", "=", "Running"),
    ]
    for bad in ("nothing", r"a=b\x", "=x", "a=b=c"):
        with pytest.raises(SelectorError):
            parse_field_selector(bad)


def test_label_selectors_through_the_server_match_the_model(kube_apiserver: KubeAPIServer) -> None:
    seeds = [
        {},
        {"app": "web"},
        {"app": "a", "tier": "1"},
        {"app": "", "tier": "10"},
        {"hami.io/gpu": "b"},
        {"app": "b", "hami.io/gpu": "a", "x-1": "5"},
        {"tier": "b"},
        {"x-1": "10", "app": "web"},
    ]
    for i, labels in enumerate(seeds):
        kube_apiserver.store.create("configmaps", {"metadata": {"name": f"c{i}", "labels": labels}}, "default")
    with kube_apiserver.api_client() as c:
        api = client.CoreV1Api(c)

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(reqs=selectors_st)
        def check(reqs: list[tuple[str, str, tuple[str, ...], str]]) -> None:
            listed = api.list_namespaced_config_map("default", label_selector=render(reqs))
            got = {i.metadata.name for i in listed.items}
            assert got == {f"c{i}" for i, labels in enumerate(seeds) if reference(reqs, labels)}

        check()

        @settings(max_examples=60, deadline=None)
        @given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20))
        def garbage(text: str) -> None:
            for kwargs in ({"label_selector": text}, {"field_selector": text}):
                try:
                    api.list_namespaced_config_map("default", **kwargs)
                except ApiException as exc:
                    assert exc.status == 400, (kwargs, exc.status, exc.body)
                    assert json.loads(exc.body)["reason"] == "BadRequest"

        garbage()


def test_set_based_selectors_with_the_client(core_v1: client.CoreV1Api) -> None:
    for name, labels in {"p1": {"env": "prod", "gpu": "yes"}, "p2": {"env": "dev"}, "p3": {"env": "qa", "gpu": "no"}, "p4": {}}.items():
        core_v1.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        return sorted(i.metadata.name for i in core_v1.list_namespaced_config_map("default", label_selector=selector).items)

    assert names("env=prod") == ["p1"]
    assert names("env==dev") == ["p2"]
    assert names("env!=prod") == ["p2", "p3", "p4"]
    assert names("env in (prod, qa)") == ["p1", "p3"]
    assert names("env notin (prod)") == ["p2", "p3", "p4"]
    assert names("gpu") == ["p1", "p3"]
    assert names("!gpu") == ["p2", "p4"]
    assert names("gpu,env in (qa,dev)") == ["p3"]


def test_field_selectors_with_the_client(core_v1: client.CoreV1Api, kube_apiserver: KubeAPIServer) -> None:
    spec = {"containers": [{"name": "c", "image": "i"}]}
    for ns, name in (("default", "a"), ("default", "b"), ("other", "a")):
        core_v1.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": spec})
    core_v1.create_namespaced_pod_binding("a", "default", {"metadata": {"name": "a"}, "target": {"name": "n1"}}, _preload_content=False)
    core_v1.patch_namespaced_pod_status("b", "default", {"status": {"phase": "Running"}})

    def pods(selector: str) -> list[str]:
        return sorted(
            f"{p.metadata.namespace}/{p.metadata.name}" for p in core_v1.list_pod_for_all_namespaces(field_selector=selector).items
        )

    assert pods("spec.nodeName=n1") == ["default/a"]
    assert pods("spec.nodeName=") == ["default/b", "other/a"]  # unscheduled pods
    assert pods("spec.nodeName!=") == ["default/a"]
    assert pods("status.phase=Running") == ["default/b"]
    assert pods("status.phase!=Running") == ["default/a", "other/a"]
    assert pods("metadata.name=a") == ["default/a", "other/a"]
    assert pods("metadata.namespace==other") == ["other/a"]
    assert pods("metadata.name=a,metadata.namespace!=other") == ["default/a"]
    with pytest.raises(ApiException) as exc:
        core_v1.list_namespaced_pod("default", field_selector="spec.bogus=1")
    assert exc.value.status == 400 and "field label not supported" in json.loads(exc.value.body)["message"]
    assert [n.metadata.name for n in core_v1.list_namespace(field_selector="metadata.name=kube-system").items] == ["kube-system"]


def test_limit_and_continue_cover_every_item_exactly_once(core_v1: client.CoreV1Api) -> None:
    expected = set()
    for i in range(23):
        ns = ("default", "kube-system", "team")[i % 3]
        core_v1.create_namespaced_config_map(ns, {"metadata": {"name": f"c{i:02d}", "labels": {"odd": str(i % 2)}}})
        expected.add(f"{ns}/c{i:02d}")
    seen: list[str] = []
    pages, token, list_rv = 0, None, None
    while True:
        page = core_v1.list_config_map_for_all_namespaces(limit=5, _continue=token)
        pages += 1
        assert len(page.items) <= 5
        list_rv = list_rv or page.metadata.resource_version
        assert page.metadata.resource_version == list_rv
        seen += [f"{c.metadata.namespace}/{c.metadata.name}" for c in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 23 - len(seen)
    assert pages == 5 and len(seen) == 23 and set(seen) == expected

    odd: list[str] = []
    token = None
    while True:
        page = core_v1.list_namespaced_config_map("default", limit=2, label_selector="odd=1", _continue=token)
        odd += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert odd == sorted(n.split("/")[1] for n in expected if n.startswith("default/") and int(n[-2:]) % 2)
    with pytest.raises(ApiException) as exc:
        core_v1.list_namespaced_config_map("default", limit=2, _continue="garbage!")
    assert exc.value.status == 400
