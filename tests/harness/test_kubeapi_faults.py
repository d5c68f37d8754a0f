"""In-memory API server: fault injection makes client calls fail visibly, then recover."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from hami.fakes.kubeapi import KubeAPIServer


def test_fail_until_cleared(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    kube_apiserver.faults.fail(503)
    for _ in range(3):
        with pytest.raises(ApiException) as exc:
            core_v1.list_node()
        assert exc.value.status == 503
        body = json.loads(exc.value.body)
        assert (body["kind"], body["status"], body["reason"], body["code"]) == ("Status", "Failure", "ServiceUnavailable", 503)
    kube_apiserver.faults.clear()
    assert core_v1.list_node().items == []


def test_fail_for_a_number_of_requests(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    kube_apiserver.faults.fail(500, count=2)
    codes = []
    for _ in range(4):
        try:
            core_v1.list_namespace()
            codes.append(200)
        except ApiException as exc:
            codes.append(exc.status)
            assert json.loads(exc.body)["reason"] == "InternalError"
    assert codes == [500, 500, 200, 200]


def test_fail_for_a_while(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    kube_apiserver.faults.fail(429, seconds=0.5)
    with pytest.raises(ApiException) as exc:
        core_v1.list_node()
    assert exc.value.status == 429 and json.loads(exc.value.body)["reason"] == "TooManyRequests"
    time.sleep(0.55)
    assert core_v1.list_node().items == []


def test_fail_only_matching_requests(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    core_v1.create_node({"metadata": {"name": "n1"}})
    kube_apiserver.faults.fail(503, method="PATCH", path=r"/nodes/")
    assert core_v1.read_node("n1").metadata.name == "n1"
    with pytest.raises(ApiException) as exc:
        core_v1.patch_node("n1", {"metadata": {"labels": {"a": "b"}}})
    assert exc.value.status == 503
    assert core_v1.read_node("n1").metadata.labels is None  # the failed write did nothing


def test_count_is_exact_under_concurrency(kube_apiserver: KubeAPIServer) -> None:
    kube_apiserver.faults.fail(503, count=10)
    failures: list[int] = []

    def worker() -> None:
        with kube_apiserver.api_client() as c:
            api = client.CoreV1Api(c)
            for _ in range(8):
                try:
                    api.list_node()
                except ApiException as exc:
                    failures.append(exc.status)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert failures == [503] * 10
    assert kube_apiserver.faults.injected == 10


def test_latency(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    core_v1.list_node()
    kube_apiserver.faults.latency(0.3)
    started = time.monotonic()
    core_v1.list_node()
    assert time.monotonic() - started >= 0.3
    kube_apiserver.faults.latency(0)
    started = time.monotonic()
    core_v1.list_node()
    assert time.monotonic() - started < 0.25
    kube_apiserver.faults.latency(0.3)
    kube_apiserver.faults.clear()
    started = time.monotonic()
    core_v1.list_node()
    assert time.monotonic() - started < 0.25


def test_faults_apply_to_watch_requests(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    kube_apiserver.faults.fail(503, count=1)
    with pytest.raises(ApiException) as exc:
        list(watch.Watch().stream(core_v1.list_node, timeout_seconds=1))
    assert exc.value.status == 503


def test_fault_arguments_are_checked(kube_apiserver: KubeAPIServer) -> None:
    with pytest.raises(ValueError):
        kube_apiserver.faults.fail(200)
    with pytest.raises(ValueError):
        kube_apiserver.faults.fail(503, count=0)
    with pytest.raises(ValueError):
        kube_apiserver.faults.latency(-1)
