"""ResourceQuota on shared-device resources, enforced at admission against the in-memory API server
(real HTTP through the official client), with kube-apiserver's "exceeded quota" wording."""

from __future__ import annotations

from typing import Any

import pytest

from hami.webhook.quota import (
    KubeQuotaSource,
    StaticQuotaSource,
    check_quota,
    pod_charge,
    quota_keys,
)

NS = "team"


def _pod(name: str, *containers: dict[str, Any], init: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {"metadata": {"name": name, "namespace": NS}, "spec": {"containers": list(containers), **spec}}
    if init:
        pod["spec"]["initContainers"] = init
    return pod


def gpu(name: str = "c", mem: str | None = None, count: str | None = None, cores: str | None = None) -> dict[str, Any]:
    limits = {}
    if count is not None:
        limits["nvidia.com/gpu"] = count
    if mem is not None:
        limits["nvidia.com/gpumem"] = mem
    if cores is not None:
        limits["nvidia.com/gpucores"] = cores
    return {"name": name, "image": "cuda", "resources": {"limits": limits}}


@pytest.fixture
def quota_webhook(start_webhook: Any, core_v1: Any) -> Any:
    return start_webhook(quota=KubeQuotaSource(core_v1))


def _quota(core_v1: Any, name: str, hard: dict[str, str], **spec: Any) -> None:
    core_v1.create_namespaced_resource_quota(NS, {"metadata": {"name": name}, "spec": {"hard": hard, **spec}})


def _existing(core_v1: Any, pod: dict[str, Any], phase: str | None = None) -> None:
    core_v1.create_namespaced_pod(NS, pod)
    if phase:
        core_v1.patch_namespaced_pod_status(pod["metadata"]["name"], NS, {"status": {"phase": phase}})


def test_exceeded_memory_quota_is_denied_with_kube_apiserver_wording(quota_webhook: Any, admit: Any, core_v1: Any) -> None:
    _quota(core_v1, "q1", {"limits.nvidia.com/gpumem": "8000"})
    _existing(core_v1, _pod("running", gpu(mem="4000", count="1")))
    _existing(core_v1, _pod("done", gpu(mem="4000", count="1")), phase="Succeeded")
    _existing(core_v1, _pod("failed", gpu(mem="4000", count="1")), phase="Failed")
    core_v1.create_namespaced_pod("elsewhere", {**_pod("other", gpu(mem="4000", count="1")), "metadata": {"name": "other"}})

    response = admit(quota_webhook, _pod("new", gpu(mem="6000")), namespace=NS)
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert response["status"]["message"] == (
        "exceeded quota: q1, requested: limits.nvidia.com/gpumem=6000, "
        "used: limits.nvidia.com/gpumem=4000, limited: limits.nvidia.com/gpumem=8000"
    )
    assert admit(quota_webhook, _pod("fits", gpu(mem="4000")), namespace=NS)["allowed"] is True  # exactly at the limit


def test_per_device_resources_are_charged_per_device(quota_webhook: Any, admit: Any, core_v1: Any) -> None:
    _quota(core_v1, "mem", {"limits.nvidia.com/gpumem": "10000", "limits.nvidia.com/gpucores": "100"})
    response = admit(quota_webhook, _pod("two", gpu(mem="3000", count="2", cores="60")), namespace=NS)
    assert response["status"]["message"] == (
        "exceeded quota: mem, requested: limits.nvidia.com/gpucores=120, "
        "used: limits.nvidia.com/gpucores=0, limited: limits.nvidia.com/gpucores=100"
    )
    assert admit(quota_webhook, _pod("ok", gpu(mem="3000", count="2", cores="50")), namespace=NS)["allowed"] is True


def test_count_quota_uses_the_defaulted_count(quota_webhook: Any, admit: Any, core_v1: Any) -> None:
    _quota(core_v1, "cards", {"limits.nvidia.com/gpu": "2"})
    _existing(core_v1, _pod("a", gpu(mem="1000", count="1"), gpu("b", count="1")))
    # only gpumem is given: the webhook's default nvidia.com/gpu: 1 is what the quota sees
    response = admit(quota_webhook, _pod("new", gpu(mem="1000")), namespace=NS)
    assert response["status"]["message"] == (
        "exceeded quota: cards, requested: limits.nvidia.com/gpu=1, used: limits.nvidia.com/gpu=2, limited: limits.nvidia.com/gpu=2"
    )


def test_init_containers_count_as_the_larger_of_init_and_app(quota_webhook: Any, admit: Any, core_v1: Any) -> None:
    _quota(core_v1, "q", {"limits.nvidia.com/gpumem": "5000"})
    # app containers sum to 3000, the init container needs 5000 alone: the pod is charged 5000
    fits = _pod("fits", gpu("a", mem="1000"), gpu("b", mem="2000"), init=[gpu("warm", mem="5000")])
    assert admit(quota_webhook, fits, namespace=NS)["allowed"] is True
    over = _pod("over", gpu("a", mem="3000"), gpu("b", mem="3000"), init=[gpu("warm", mem="1000")])
    assert "requested: limits.nvidia.com/gpumem=6000" in admit(quota_webhook, over, namespace=NS)["status"]["message"]


def test_several_quotas_and_resources(quota_webhook: Any, admit: Any, core_v1: Any) -> None:
    _quota(core_v1, "a-loose", {"limits.nvidia.com/gpumem": "100000", "pods": "10"})
    _quota(core_v1, "b-tight", {"limits.nvidia.com/gpumem": "1000", "limits.hygon.com/dcumem": "1000"})
    pod = _pod("new", gpu(mem="2000"), {"name": "d", "resources": {"limits": {"hygon.com/dcumem": "2000"}}})
    assert admit(quota_webhook, pod, namespace=NS)["status"]["message"] == (
        "exceeded quota: b-tight, requested: limits.hygon.com/dcumem=2000,limits.nvidia.com/gpumem=2000, "
        "used: limits.hygon.com/dcumem=0,limits.nvidia.com/gpumem=0, limited: limits.hygon.com/dcumem=1000,limits.nvidia.com/gpumem=1000"
    )


def test_scoped_quota_only_applies_to_selected_pods(quota_webhook: Any, admit: Any, core_v1: Any) -> None:
    _quota(
        core_v1,
        "high",
        {"limits.nvidia.com/gpumem": "1000"},
        scopeSelector={"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]},
    )
    _quota(core_v1, "batch", {"limits.nvidia.com/gpumem": "1000"}, scopes=["Terminating"])
    assert admit(quota_webhook, _pod("plain", gpu(mem="3000")), namespace=NS)["allowed"] is True
    response = admit(quota_webhook, _pod("vip", gpu(mem="3000"), priorityClassName="high"), namespace=NS)
    assert response["status"]["message"].startswith("exceeded quota: high,")
    response = admit(quota_webhook, _pod("job", gpu(mem="3000"), activeDeadlineSeconds=60), namespace=NS)
    assert response["status"]["message"].startswith("exceeded quota: batch,")


def test_quota_in_another_namespace_does_not_apply(quota_webhook: Any, admit: Any, core_v1: Any) -> None:
    core_v1.create_namespaced_resource_quota("elsewhere", {"metadata": {"name": "q"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "1"}}})
    assert admit(quota_webhook, _pod("p", gpu(mem="3000")), namespace=NS)["allowed"] is True


def test_api_server_failure_denies_clearly(quota_webhook: Any, admit: Any, core_v1: Any, kube_apiserver: Any) -> None:
    _quota(core_v1, "q1", {"limits.nvidia.com/gpumem": "8000"})
    kube_apiserver.faults.fail(503, path="resourcequotas")
    response = admit(quota_webhook, _pod("p", gpu(mem="1000")), namespace=NS)
    assert response["allowed"] is False and response["status"]["code"] == 500
    assert "cannot check ResourceQuota" in response["status"]["message"] and "resourcequotas" in response["status"]["message"]
    # a pod without our resources never asks the API server
    assert admit(quota_webhook, _pod("plain", {"name": "c", "image": "busybox"}), namespace=NS)["allowed"] is True
    kube_apiserver.faults.clear()
    assert admit(quota_webhook, _pod("p", gpu(mem="1000")), namespace=NS)["allowed"] is True


def test_pod_listing_is_paged(manager: Any, core_v1: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(7):
        core_v1.create_namespaced_pod(NS, _pod(f"p{i}", gpu(mem="1000", count="1")))
    source = KubeQuotaSource(core_v1)
    calls = []
    list_pods = core_v1.list_namespaced_pod
    monkeypatch.setattr(core_v1, "list_namespaced_pod", lambda *a, **kw: calls.append(kw) or list_pods(*a, **kw))
    monkeypatch.setattr("hami.webhook.quota._LIST_PAGE", 3)
    assert sorted(p["metadata"]["name"] for p in source.pods(NS)) == [f"p{i}" for i in range(7)]
    assert len(calls) == 3 and calls[0]["limit"] == 3
    core_v1.create_namespaced_resource_quota(NS, {"metadata": {"name": "q"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "7500"}}})
    assert "used: limits.nvidia.com/gpumem=7000" in (check_quota(manager, _pod("new", gpu(mem="1000", count="1")), NS, source) or "")


def test_pod_charge_rules(manager: Any) -> None:
    sidecar = {**gpu("proxy", mem="100", count="1"), "restartPolicy": "Always"}
    pod = _pod("p", gpu("a", mem="1000", count="2"), init=[sidecar, gpu("warm", mem="3000", count="1")])
    # app 2×1000 + sidecar 100 = 2100; init peak = sidecar 100 + warm 3000 = 3100
    assert {k: int(v) for k, v in pod_charge(manager, pod).items()} == {"limits.nvidia.com/gpumem": 3100, "limits.nvidia.com/gpu": 3}
    cambricon = _pod("m", {"name": "c", "resources": {"limits": {"cambricon.com/mlunum": "2", "cambricon.com/mlu.smlu.vmemory": "20"}}})
    assert {k: int(v) for k, v in pod_charge(manager, cambricon).items()} == {
        "limits.cambricon.com/mlunum": 2,
        "limits.cambricon.com/mlu.smlu.vmemory": 40,
    }
    assert "limits.nvidia.com/gpumem" in quota_keys(manager) and "limits.huawei.com/Ascend910B3-memory" in quota_keys(manager)


def test_terminating_and_unreadable_existing_pods(manager: Any) -> None:
    gone = _pod("gone", gpu(mem="4000", count="1"))
    gone["metadata"].update(deletionTimestamp="2000-01-01T00:00:00Z", deletionGracePeriodSeconds=30)
    bad = _pod("bad", gpu(mem="lots", count="1"))
    source = StaticQuotaSource(
        quotas={NS: [{"metadata": {"name": "q"}, "spec": {"hard": {"limits.nvidia.com/gpumem": "5000"}}}]},
        pods={NS: [gone, bad, _pod("live", gpu(mem="1000", count="1"))]},
    )
    assert check_quota(manager, _pod("new", gpu(mem="4000", count="1")), NS, source) is None
    assert "used: limits.nvidia.com/gpumem=1000" in (check_quota(manager, _pod("new", gpu(mem="4001", count="1")), NS, source) or "")
