"""The one list-and-watch loop (hami.listwatch) behind the scheduler cache and the agent's pod watch:
resume from the last resourceVersion, relist on 410 Gone, bookmarks, backoff, selectors — against the
in-memory API server over real HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from kubernetes import client

from hami.fakes.kubeapi import KubeAPIServer
from hami.listwatch import ListWatch


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lists: list[list[str]] = []
        self.changed = threading.Condition()

    def on_event(self, kind: str, obj: Mapping[str, Any]) -> None:
        with self.changed:
            self.events.append((kind, obj["metadata"]["name"]))
            self.changed.notify_all()

    def on_list(self, items: list[Mapping[str, Any]]) -> None:
        with self.changed:
            self.lists.append(sorted(i["metadata"]["name"] for i in items))
            self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), f"timed out waiting for {what}: events={self.events} lists={self.lists}"


def config_map(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


def start(core_v1: client.CoreV1Api, recorder: Recorder, **kwargs: Any) -> ListWatch:
    kwargs.setdefault("backoff", (0.05, 0.2))
    loop = ListWatch("configmaps", core_v1.list_config_map_for_all_namespaces, recorder.on_event, recorder.on_list, **kwargs).start()
    assert loop.wait_synced(5)
    return loop


def wait_for_watch(srv: KubeAPIServer, resource: str = "configmaps") -> None:
    deadline = time.monotonic() + 5
    while srv.store.watcher_count(resource) < 1:
        assert time.monotonic() < deadline, "the loop never opened its watch"
        time.sleep(0.01)


def test_lists_then_watches_every_change(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    core_v1.create_namespaced_config_map("default", config_map("before"))
    recorder = Recorder()
    loop = start(core_v1, recorder)
    try:
        assert recorder.lists == [["before"]]
        wait_for_watch(kube_apiserver)
        core_v1.create_namespaced_config_map("default", config_map("a"))
        core_v1.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
        core_v1.delete_namespaced_config_map("a", "default")
        recorder.wait(lambda: len(recorder.events) == 3, "three events")
        assert recorder.events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    finally:
        loop.stop()


@pytest.mark.parametrize("abrupt", [False, True])
def test_a_cut_stream_resumes_from_its_version_without_relisting(
    kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api, abrupt: bool
) -> None:
    recorder = Recorder()
    loop = start(core_v1, recorder, resync_seconds=None)
    try:
        wait_for_watch(kube_apiserver)
        # watches fail for a while: the changes made meanwhile must arrive once the watch resumes
        kube_apiserver.faults.fail(503, count=3, method="GET")
        kube_apiserver.faults.cut_watches(abrupt=abrupt)
        kube_apiserver.store.create("configmaps", config_map("during"), "default")
        recorder.wait(lambda: ("ADDED", "during") in recorder.events, "the change made during the outage")
        assert loop.lists == 1 and recorder.lists == [[]]
        assert kube_apiserver.faults.injected == 3
    finally:
        loop.stop()


def test_410_gone_relists() -> None:
    with KubeAPIServer(history_size=2, bookmark_interval=60) as srv, srv.api_client() as api:
        core_v1 = client.CoreV1Api(api)
        recorder = Recorder()
        loop = start(core_v1, recorder, resync_seconds=None)
        try:
            wait_for_watch(srv)
            srv.faults.fail(503, path="configmaps", method="GET")  # keep the loop away while history moves on
            srv.faults.cut_watches()
            for i in range(5):
                srv.store.create("configmaps", config_map(f"c{i}"), "default")
            srv.faults.clear()
            recorder.wait(lambda: len(recorder.lists) == 2, "a relist after 410")
            assert recorder.lists[1] == ["c0", "c1", "c2", "c3", "c4"]
            assert loop.lists == 2
        finally:
            loop.stop()


def test_bookmarks_advance_the_version(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    recorder = Recorder()
    loop = ListWatch(
        "web",
        core_v1.list_config_map_for_all_namespaces,
        recorder.on_event,
        recorder.on_list,
        selector={"label_selector": "app=web"},
        resync_seconds=None,
    ).start()
    try:
        assert loop.wait_synced(5)
        wait_for_watch(kube_apiserver)
        listed = int(loop.resource_version or 0)
        core_v1.create_namespaced_config_map("default", config_map("other"))  # outside the selection
        deadline = time.monotonic() + 10
        while int(loop.resource_version or 0) <= listed:
            assert time.monotonic() < deadline, "no bookmark moved the version on"
            time.sleep(0.05)
        assert recorder.events == []  # a bookmark is not an event, and the selector kept "other" out
    finally:
        loop.stop()


def test_failures_back_off_exponentially_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    waits: list[float] = []

    def failing_list(**kwargs: Any) -> Any:
        calls.append(kwargs)
        raise client.exceptions.ApiException(status=503, reason="Service Unavailable")

    loop = ListWatch("x", failing_list, lambda *_: None, lambda _: None, backoff=(1.0, 4.0), request_timeout=2.5)
    monkeypatch.setattr("hami.listwatch.random.uniform", lambda low, high: 1.0)

    def fake_wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 5:
            loop._stop.set()
        return loop._stop.is_set()

    monkeypatch.setattr(loop._stop, "wait", fake_wait)
    loop._run()
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(c.get("_request_timeout") == 2.5 and "watch" not in c for c in calls)  # every retry is a list


def test_bad_backoff_is_refused() -> None:
    with pytest.raises(ValueError, match=r"backoff=\(0, 1\)"):
        ListWatch("x", lambda **_: None, lambda *_: None, lambda _: None, backoff=(0, 1))


def test_stop_ends_an_idle_watch_promptly(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    recorder = Recorder()
    loop = start(core_v1, recorder, watch_timeout=60)
    wait_for_watch(kube_apiserver)
    loop.stop()
    assert loop._thread is not None and not loop._thread.is_alive()
