"""The in-memory API server's copies: stored objects leave through a fast deep copy (``_clone``),
what callers hand in is normalised to JSON first (``_copy``), so the two agree and nothing is shared."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hami.fakes.kubeapi import KubeAPIServer
from hami.fakes.kubeapi.store import Store, _clone, _copy

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_clone_is_the_json_copy_and_shares_no_container(value: Any) -> None:
    normalised = _copy(value)
    cloned = _clone(normalised)
    assert cloned == normalised

    def containers(v: Any) -> list[int]:
        if isinstance(v, dict):
            return [id(v), *(i for x in v.values() for i in containers(x))]
        if isinstance(v, list):
            return [id(v), *(i for x in v for i in containers(x))]
        return []

    assert not set(containers(cloned)) & set(containers(normalised))


def test_an_in_process_patch_is_stored_as_json_and_not_shared() -> None:
    store = Store()
    store.create("nodes", {"metadata": {"name": "n"}})
    taints = [{"key": "k", "effect": "NoSchedule"}]
    store.patch("nodes", "n", {"spec": {"taints": taints, "podCIDRs": ("10.0.0.0/24",)}}, "application/merge-patch+json")
    taints[0]["key"] = "changed by the caller afterwards"
    node = store.get("nodes", "n")
    assert node["spec"] == {"taints": [{"key": "k", "effect": "NoSchedule"}], "podCIDRs": ["10.0.0.0/24"]}
    node["spec"]["taints"].clear()  # a reader's copy is its own
    assert store.get("nodes", "n")["spec"]["taints"] == [{"key": "k", "effect": "NoSchedule"}]


def test_watch_events_and_answers_are_separate_copies() -> None:
    with KubeAPIServer() as server:
        store = server.store
        created = store.create("nodes", {"metadata": {"name": "n", "labels": {"a": "1"}}})
        created["metadata"]["labels"]["a"] = "mutated answer"
        watcher, _, _ = store.open_watch("nodes", _all(store), created["metadata"]["resourceVersion"])
        try:
            store.patch("nodes", "n", {"metadata": {"labels": {"b": "2"}}}, "application/merge-patch+json")
            event = watcher.queue.get(timeout=5)
            assert event is not None
            event.obj["metadata"]["labels"]["b"] = "mutated event"
            assert store.get("nodes", "n")["metadata"]["labels"] == {"a": "1", "b": "2"}
        finally:
            store.close_watch(watcher)


def _all(store: Store) -> Any:
    from hami.fakes.kubeapi.store import make_filter

    return make_filter(store.resource("nodes"), None, None, None)
