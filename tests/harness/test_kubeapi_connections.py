"""Connection reuse and one write per answer on the in-memory API server (issue 29: a new TCP
connection per request and headers written apart from the body were a third of a pod's cost)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any

import pytest
from kubernetes import client

from hami.fakes.kubeapi import KubeAPIServer
from hami.kube import api_client, release


class CountingSocket:
    """A server-side socket that counts the writes the handler makes."""

    def __init__(self, sock: socket.socket, writes: list[int]) -> None:
        self._sock = sock
        self._writes = writes

    def sendall(self, data: Any, *args: Any) -> None:
        self._writes.append(len(data))
        self._sock.sendall(data, *args)

    def send(self, data: Any, *args: Any) -> int:
        self._writes.append(len(data))
        return self._sock.send(data, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def count_writes(server: KubeAPIServer) -> list[int]:
    """Sizes of every write the server makes on connections accepted from now on."""
    writes: list[int] = []
    httpd = server._httpd
    assert httpd is not None
    original = httpd.finish_request
    httpd.finish_request = lambda request, client_address: original(CountingSocket(request, writes), client_address)  # type: ignore[method-assign]
    return writes


@pytest.fixture
def node(kube_apiserver: KubeAPIServer) -> str:
    kube_apiserver.store.create("nodes", {"metadata": {"name": "n1"}})
    return "n1"


def test_raw_responses_released_reuse_one_connection(kube_apiserver: KubeAPIServer, node: str) -> None:
    api = kube_apiserver.api_client(pool_size=1)
    v1 = client.CoreV1Api(api)
    before = kube_apiserver.connections_accepted
    for i in range(30):
        release(v1.patch_node(node, {"metadata": {"annotations": {"a": str(i)}}}, _preload_content=False))
        v1.read_node(node)
        release(v1.read_node(node, _preload_content=False))
    assert kube_apiserver.connections_accepted - before <= 1


def test_unread_raw_responses_each_cost_a_connection(kube_apiserver: KubeAPIServer, node: str) -> None:
    """Why :func:`hami.kube.release` exists: the pool cannot reuse a connection whose answer is unread."""
    v1 = client.CoreV1Api(kube_apiserver.api_client(pool_size=1))
    before = kube_apiserver.connections_accepted
    kept = [v1.patch_node(node, {"metadata": {"annotations": {"a": str(i)}}}, _preload_content=False) for i in range(10)]
    assert kube_apiserver.connections_accepted - before >= 10
    for response in kept:
        release(response)


def test_threads_sharing_a_client_open_at_most_the_pool_size(kube_apiserver: KubeAPIServer, node: str) -> None:
    threads, pool = 6, 6
    v1 = client.CoreV1Api(kube_apiserver.api_client(pool_size=pool))
    before = kube_apiserver.connections_accepted
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                release(v1.read_node(node, _preload_content=False))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert kube_apiserver.connections_accepted - before <= pool


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/nodes/n1", None),
        ("GET", "/api/v1/nodes/missing", None),  # a 404 Status
        ("HEAD", "/api/v1/nodes/n1", None),
        ("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"x": "y"}}}),
        ("GET", "/version", None),
        ("GET", "/healthz", None),
    ],
)
def test_each_answer_is_one_write(kube_apiserver: KubeAPIServer, node: str, method: str, path: str, body: Any) -> None:
    writes = count_writes(kube_apiserver)
    conn = http.client.HTTPConnection(kube_apiserver.host, kube_apiserver.port, timeout=10)
    headers = {"Content-Type": "application/merge-patch+json"} if body is not None else {}
    for _ in range(3):  # keep-alive: three answers on one connection
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        assert response.status in (200, 404)
        if method != "HEAD":
            assert response.getheader("Content-Length") == str(len(payload))
    conn.close()
    assert len(writes) == 3, writes


def test_a_binding_carries_its_annotations_onto_the_pod(kube_apiserver: KubeAPIServer, node: str) -> None:
    """kube-apiserver's BindingREST copies ``Binding.metadata.annotations`` onto the pod."""
    v1 = client.CoreV1Api(kube_apiserver.api_client())
    pod = {"metadata": {"name": "p", "annotations": {"keep": "1"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    kube_apiserver.store.create("pods", pod, namespace="default")
    binding: Any = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p", "annotations": {"hami.io/bind-phase": "allocating"}},
        "target": {"kind": "Node", "name": node},
    }
    release(v1.create_namespaced_pod_binding("p", "default", binding, _preload_content=False))
    bound = kube_apiserver.store.get("pods", "p", "default")
    assert bound["spec"]["nodeName"] == node
    assert bound["metadata"]["annotations"] == {"keep": "1", "hami.io/bind-phase": "allocating"}


def test_a_binding_with_non_string_annotations_is_refused(kube_apiserver: KubeAPIServer) -> None:
    kube_apiserver.store.create(
        "pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}, namespace="default"
    )
    conn = http.client.HTTPConnection(kube_apiserver.host, kube_apiserver.port, timeout=10)
    body = {"metadata": {"name": "p", "annotations": {"n": 3}}, "target": {"name": "n1"}}
    conn.request("POST", "/api/v1/namespaces/default/pods/p/binding", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    status = json.loads(response.read())
    assert response.status == 400
    assert "annotations" in status["message"] and "3" in status["message"]
    assert not kube_apiserver.store.get("pods", "p", "default")["spec"].get("nodeName")


def test_api_client_builds_its_pool_at_the_size_asked(kube_apiserver: KubeAPIServer, node: str, tmp_path: Any) -> None:
    """Setting ``connection_pool_maxsize`` on a client that exists changes nothing: hami.kube sets it first."""
    path = str(kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig"))
    threads = 12
    api = api_client(path, pool_size=threads)
    assert api.rest_client.pool_manager.connection_pool_kw["maxsize"] == threads
    v1 = client.CoreV1Api(api)
    before = kube_apiserver.connections_accepted
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(10):
            release(v1.read_node(node, _preload_content=False))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert kube_apiserver.connections_accepted - before <= threads
