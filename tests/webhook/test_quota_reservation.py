"""Issue 19 item 8: quota is reserved at admission, not just checked. Parallel admissions over real
HTTP never exceed a ResourceQuota on device shares; a reservation ends when the admitted pod shows up
in the pod list (counted once), or after its TTL when the pod never does."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonpatch
import pytest

from hami.webhook.quota import RESERVATION_ANNOTATION, KubeQuotaSource, QuotaReservations, StaticQuotaSource, reserve_quota

NS = "team"
N = 5


def _pod(name: str, mem: str = "1000") -> dict[str, Any]:
    limits = {"nvidia.com/gpu": "1", "nvidia.com/gpumem": mem}
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "cuda", "resources": {"limits": limits}}]},
    }


@pytest.fixture
def source(core_v1: Any) -> KubeQuotaSource:
    core_v1.create_namespaced_resource_quota(
        NS, {"metadata": {"name": "gpu-mem"}, "spec": {"hard": {"limits.nvidia.com/gpumem": str(N * 1000)}}}
    )
    return KubeQuotaSource(core_v1)


def _admit_retrying_refused_connections(admit: Any, server: Any, pod: dict[str, Any]) -> dict[str, Any]:
    """40 connects at once overflow the server's listen backlog (socketserver's default of 5): a
    connection reset before the request was read is tried again, as a client would."""
    for _ in range(20):
        try:
            return admit(server, pod, namespace=NS)
        except (ConnectionResetError, http.client.RemoteDisconnected):
            continue
    raise AssertionError(f"the webhook kept resetting connections for {pod['metadata']['name']}")


def test_forty_parallel_admissions_allow_exactly_the_quota(start_webhook: Any, admit: Any, source: KubeQuotaSource) -> None:
    server = start_webhook(quota=source)
    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda i: _admit_retrying_refused_connections(admit, server, _pod(f"p{i}")), range(40)))
    allowed = [a for a in answers if a["allowed"]]
    assert len(allowed) == N, f"{len(allowed)} of 40 admitted against a quota for {N}"
    assert all("exceeded quota: gpu-mem" in a["status"]["message"] for a in answers if not a["allowed"])
    tokens = {jsonpatch.apply_patch(_pod("x"), a["_ops"])["metadata"]["annotations"][RESERVATION_ANNOTATION] for a in allowed}
    assert len(tokens) == N


def test_created_pods_end_their_reservation_and_count_once(start_webhook: Any, admit: Any, source: KubeQuotaSource, core_v1: Any) -> None:
    server = start_webhook(quota=source)
    for i in range(N - 1):
        pod = _pod(f"made{i}")
        answer = admit(server, pod, namespace=NS)
        assert answer["allowed"], answer
        core_v1.create_namespaced_pod(NS, jsonpatch.apply_patch(pod, answer["_ops"]))  # what the API server stores
    # each admission listed the pods created before it, carrying their tokens: those reservations ended
    assert source.reservations.count(NS) == 1
    last = admit(server, _pod("last"), namespace=NS)  # 4 pods listed + this one = the quota, none counted twice
    assert last["allowed"], last
    assert source.reservations.count(NS) == 1, "only the last admission's reservation is in flight"
    over = admit(server, _pod("over"), namespace=NS)
    assert not over["allowed"] and "used: limits.nvidia.com/gpumem=5000" in over["status"]["message"]


def test_reservation_expires_when_the_pod_never_appears() -> None:
    from hami.plugin.manager import BackendManager
    from hami_nvidia.plugin import plugin as nvidia

    manager = BackendManager(strict=True, allow=(), deny=())
    manager.register(nvidia, distribution="in-process")
    now = [0.0]
    source = StaticQuotaSource(quotas={NS: [{"metadata": {"name": "q"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "1000"}}}]})
    source.reservations = QuotaReservations(ttl=30, clock=lambda: now[0])
    exceeded, token = reserve_quota(manager, _pod("a"), NS, source)
    assert exceeded is None and token
    assert "exceeded quota: q" in (reserve_quota(manager, _pod("b"), NS, source)[0] or "")
    now[0] = 31.0  # "a" was refused after us (another webhook, the API server): its reservation lapses
    assert reserve_quota(manager, _pod("b"), NS, source)[0] is None


def test_no_quota_no_reservation_and_no_patch(start_webhook: Any, admit: Any, core_v1: Any) -> None:
    source = KubeQuotaSource(core_v1)
    answer = admit(start_webhook(quota=source), _pod("free"), namespace=NS)
    assert answer["allowed"] and RESERVATION_ANNOTATION not in json.dumps(answer["_ops"])
    assert source.reservations.count(NS) == 0
