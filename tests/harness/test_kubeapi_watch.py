"""In-memory API server: watch streams through ``kubernetes.watch.Watch`` — event types, resume from a
resourceVersion, 410 Expired, filtered-watch semantics, bookmarks, timeouts and cut streams."""

from __future__ import annotations

import http.client
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from hami.fakes.kubeapi import KubeAPIServer

_END = object()


class Collector:
    """Runs ``Watch().stream(func, ...)`` in a thread and queues what it yields (or raises)."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.watch = watch.Watch()
        self.events: queue.Queue[Any] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.events.put(event)
        except BaseException as exc:
            self.error = exc
        finally:
            self.events.put(_END)

    def next(self, timeout: float = 20) -> dict[str, Any]:
        item = self.events.get(timeout=timeout)
        assert item is not _END, f"stream ended early: {self.error!r}"
        return item

    def until(self, name: str, timeout: float = 5) -> list[tuple[str, str]]:
        """(type, name) of every event up to and including the first one for ``name``."""
        out = []
        while True:
            event = self.next(timeout)
            out.append((event["type"], event["object"].metadata.name))
            if out[-1][1] == name:
                return out

    def stop(self) -> None:
        self.watch.stop()


def _wait_for_watchers(srv: KubeAPIServer, resource: str, count: int = 1, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while srv.store.watcher_count(resource) < count:
        assert time.monotonic() < deadline, "watch never registered"
        time.sleep(0.005)


def test_watch_receives_added_modified_deleted(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    w = Collector(core_v1.list_namespaced_config_map, "default", timeout_seconds=20)
    _wait_for_watchers(kube_apiserver, "configmaps")
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "c"}, "data": {"a": "1"}})
    core_v1.create_namespaced_config_map("elsewhere", {"metadata": {"name": "other"}})
    core_v1.patch_namespaced_config_map("c", "default", {"data": {"a": "2"}})
    core_v1.delete_namespaced_config_map("c", "default")
    events = [w.next() for _ in range(3)]
    w.stop()
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "c"), ("MODIFIED", "c"), ("DELETED", "c")]
    assert isinstance(events[0]["object"], client.V1ConfigMap)
    assert events[1]["object"].data == {"a": "2"}
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == 3


def test_watch_without_a_version_starts_with_the_current_state(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n1"}})
    core_v1.create_node({"metadata": {"name": "n2"}})
    w = Collector(core_v1.list_node, timeout_seconds=20)
    assert w.until("n2") == [("ADDED", "n1"), ("ADDED", "n2")]
    _wait_for_watchers(kube_apiserver, "nodes")
    core_v1.create_node({"metadata": {"name": "n3"}})
    assert w.until("n3") == [("ADDED", "n3")]
    w.stop()


def test_watch_resumes_from_a_resource_version(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "old"}})
    rv0 = core_v1.list_namespaced_config_map("default").metadata.resource_version
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    core_v1.patch_namespaced_config_map("a", "default", {"data": {"x": "1"}})
    rv1 = core_v1.list_namespaced_config_map("default").metadata.resource_version
    core_v1.delete_namespaced_config_map("b", "default")
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "sentinel"}})

    w = Collector(core_v1.list_namespaced_config_map, "default", resource_version=rv0, timeout_seconds=20)
    assert w.until("sentinel") == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b"), ("ADDED", "sentinel")]
    w.stop()
    w = Collector(core_v1.list_namespaced_config_map, "default", resource_version=rv1, timeout_seconds=20)
    assert w.until("sentinel") == [("DELETED", "b"), ("ADDED", "sentinel")]
    w.stop()


def _raw_watch_lines(srv: KubeAPIServer, path: str, count: int | None = None) -> list[dict[str, Any]]:
    """Watch events read straight off the wire: ``count`` of them, or all until the stream ends."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
        lines: list[dict[str, Any]] = []
        while count is None or len(lines) < count:
            line = resp.readline()
            if not line:
                break
            if line.strip():
                lines.append(json.loads(line))
        return lines
    finally:
        conn.close()


def test_too_old_resource_version_is_410_expired() -> None:
    with KubeAPIServer(history_size=3) as srv, srv.api_client() as c:
        api = client.CoreV1Api(c)
        first = api.create_namespaced_config_map("default", {"metadata": {"name": "c0"}}).metadata.resource_version
        for i in range(1, 6):
            api.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as exc:
            for _ in watch.Watch().stream(api.list_namespaced_config_map, "default", resource_version=first, timeout_seconds=5):
                pytest.fail("no event may be delivered from an expired version")
        assert exc.value.status == 410
        lines = _raw_watch_lines(srv, f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={first}")
        assert len(lines) == 1 and lines[0]["type"] == "ERROR"
        status = lines[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        assert status["message"].startswith(f"too old resource version: {first} (")
        # the retained window still resumes
        recent = srv.store.history("configmaps")[0].rv
        lines = _raw_watch_lines(srv, f"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={recent}", count=2)
        assert [e["object"]["metadata"]["name"] for e in lines] == ["c4", "c5"]


def test_filtered_watch_reports_objects_entering_and_leaving_the_selection(
    kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api
) -> None:
    w = Collector(core_v1.list_namespaced_config_map, "default", label_selector="app=web", timeout_seconds=20)
    _wait_for_watchers(kube_apiserver, "configmaps")
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "x", "labels": {"app": "web"}}})
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "y", "labels": {"app": "db"}}})
    core_v1.patch_namespaced_config_map("y", "default", {"data": {"k": "v"}})  # never selected: nothing
    core_v1.patch_namespaced_config_map("x", "default", {"metadata": {"labels": {"app": "db"}}})
    core_v1.patch_namespaced_config_map("y", "default", {"metadata": {"labels": {"app": "web"}}})
    core_v1.create_namespaced_config_map("default", {"metadata": {"name": "z", "labels": {"app": "web"}}})
    assert w.until("z") == [("ADDED", "x"), ("DELETED", "x"), ("ADDED", "y"), ("ADDED", "z")]
    w.stop()


def test_field_selected_pod_watch_sees_binding(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    """What a node agent does: watch pods with spec.nodeName=<node>; a binding brings a pod in."""
    core_v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    w = Collector(core_v1.list_pod_for_all_namespaces, field_selector="spec.nodeName=n1", timeout_seconds=20)
    _wait_for_watchers(kube_apiserver, "pods")
    core_v1.create_namespaced_pod_binding("p", "default", {"metadata": {"name": "p"}, "target": {"name": "n1"}}, _preload_content=False)
    event = w.next()
    assert (event["type"], event["object"].spec.node_name) == ("ADDED", "n1")
    core_v1.delete_namespaced_pod("p", "default")
    assert w.next()["type"] == "DELETED"
    w.stop()


def test_bookmarks(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n1"}})
    current = str(kube_apiserver.store.resource_version)
    w = Collector(core_v1.list_node, allow_watch_bookmarks=True, resource_version=current, timeout_seconds=20)
    event = w.next(timeout=5)  # bookmark_interval is 0.5 s in the fixture
    assert event["type"] == "BOOKMARK"
    assert event["raw_object"]["metadata"]["resourceVersion"] == current
    assert event["raw_object"]["kind"] == "Node"
    assert w.watch.resource_version == current
    w.stop()


def test_send_initial_events_ends_with_a_marked_bookmark(kube_apiserver: KubeAPIServer) -> None:
    kube_apiserver.store.create("nodes", {"metadata": {"name": "n1"}})
    lines = _raw_watch_lines(
        kube_apiserver, "/api/v1/nodes?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan", count=2
    )
    assert lines[0]["type"] == "ADDED" and lines[0]["object"]["metadata"]["name"] == "n1"
    assert lines[1]["type"] == "BOOKMARK"
    assert lines[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_timeout_seconds_ends_the_stream(core_v1: client.CoreV1Api) -> None:
    started = time.monotonic()
    events = list(watch.Watch().stream(core_v1.list_namespaced_pod, "default", timeout_seconds=1))
    elapsed = time.monotonic() - started
    assert events == [] and 0.9 <= elapsed < 3


@pytest.mark.parametrize("abrupt", [False, True])
def test_cut_watches_ends_open_streams(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api, abrupt: bool) -> None:
    w = Collector(core_v1.list_namespaced_pod, "default", timeout_seconds=30)
    _wait_for_watchers(kube_apiserver, "pods")
    started = time.monotonic()
    assert kube_apiserver.faults.cut_watches(abrupt=abrupt) == 1
    w.thread.join(5)
    assert not w.thread.is_alive() and time.monotonic() - started < 3
    if abrupt:
        assert w.error is not None  # the client saw the connection drop mid-stream
    else:
        assert w.error is None
    assert kube_apiserver.store.watcher_count() == 0
    # the server keeps serving new watches
    w2 = Collector(core_v1.list_namespaced_pod, "default", timeout_seconds=20)
    _wait_for_watchers(kube_apiserver, "pods")
    core_v1.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert w2.next()["type"] == "ADDED"
    w2.stop()


def test_stopping_the_server_ends_watches() -> None:
    srv = KubeAPIServer().start()
    with srv.api_client() as c:
        w = Collector(client.CoreV1Api(c).list_node, timeout_seconds=30)
        _wait_for_watchers(srv, "nodes")
        srv.stop()
        w.thread.join(5)
        assert not w.thread.is_alive()


def test_watch_sees_every_concurrent_write_once_in_order(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    kube_apiserver.store.create("nodes", {"metadata": {"name": "n"}})
    w = Collector(core_v1.list_node, resource_version=str(kube_apiserver.store.resource_version), timeout_seconds=30)
    _wait_for_watchers(kube_apiserver, "nodes")

    def writer(i: int) -> None:
        with kube_apiserver.api_client() as c:
            api = client.CoreV1Api(c)
            for j in range(15):
                api.patch_node("n", {"metadata": {"labels": {f"w{i}": str(j)}}})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    events = [w.next() for _ in range(60)]
    w.stop()
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert all(e["type"] == "MODIFIED" for e in events)
    assert versions == sorted(versions) and len(set(versions)) == 60
    assert events[-1]["object"].metadata.labels == {f"w{i}": "14" for i in range(4)}
    leftovers = []
    while not w.events.empty():  # the stream's end marker and bookmarks may follow; no further write may
        item = w.events.get_nowait()
        if item is not _END and item.get("type") != "BOOKMARK":
            leftovers.append(item)
    assert leftovers == []
