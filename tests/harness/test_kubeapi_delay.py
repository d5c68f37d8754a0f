"""In-memory API server: ``faults.delay`` holds matching requests, so a write sent first lands after
one sent later (the late allocation write of issue 19, tests/scheduler/test_bind_failures.py)."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from hami.fakes.kubeapi import KubeAPIServer


def _pod(core_v1: client.CoreV1Api, name: str) -> None:
    body = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")])
    )
    core_v1.create_namespaced_pod("default", body)


def test_a_delayed_write_lands_after_a_later_one(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    _pod(core_v1, "slow")
    kube_apiserver.faults.delay(1.0, count=1, path=r"/pods/slow$", method="PATCH")
    early = threading.Thread(target=lambda: core_v1.patch_namespaced_pod("slow", "default", {"metadata": {"labels": {"try": "first"}}}))
    early.start()
    deadline = time.monotonic() + 10
    while kube_apiserver.faults.delayed == 0 and time.monotonic() < deadline:  # the first write has reached the server
        time.sleep(0.01)
    assert kube_apiserver.faults.delayed == 1
    core_v1.patch_namespaced_pod("slow", "default", {"metadata": {"labels": {"try": "second"}}})  # count used up: not held
    assert core_v1.read_namespaced_pod("slow", "default").metadata.labels == {"try": "second"}
    early.join(10)
    assert core_v1.read_namespaced_pod("slow", "default").metadata.labels == {"try": "first"}
    assert kube_apiserver.faults.delayed == 1 and kube_apiserver.faults.injected == 0


def test_only_matching_requests_are_held_and_clear_ends_it(kube_apiserver: KubeAPIServer, core_v1: client.CoreV1Api) -> None:
    kube_apiserver.faults.delay(5.0, path=r"/pods/never$", method="PATCH")
    _pod(core_v1, "other")
    core_v1.patch_namespaced_pod("other", "default", {"metadata": {"labels": {"a": "b"}}})
    core_v1.list_namespaced_pod("default")
    assert kube_apiserver.faults.delayed == 0
    kube_apiserver.faults.clear()
    _pod(core_v1, "never")
    core_v1.patch_namespaced_pod("never", "default", {"metadata": {"labels": {"a": "b"}}})
    assert kube_apiserver.faults.delayed == 0


@pytest.mark.parametrize(
    ("seconds", "count", "message"), [(-1, None, "delay must be non-negative, got -1"), (1, 0, "count must be positive, got 0")]
)
def test_bad_delays_are_refused_naming_the_value(kube_apiserver: KubeAPIServer, seconds: float, count: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kube_apiserver.faults.delay(seconds, count)
