"""Issue 19 item 2 for the keys a backend writes beside an allocation (``hami_allocation_annotations``,
declared in ``BackendInfo.pod_annotations``): what a vendor's device plugin or runtime reads to
learn the pod's share (upstream HAMi's ``PatchAnnotations`` in pkg/device/*/device.go: the
ascend-device-plugin's ``huawei.com/<chip>`` and ``predicate-time``, Cambricon's
``CAMBRICON_DSMLU_PROFILE``). A pod owner who forges one at creation, or edits one later, would hand
the runtime a share the scheduler never granted; the webhook denies both, and lets hami's own
service accounts write them. Which keys are protected comes from the backends, not from the core."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hami.webhook.config import WebhookConfig

from .conftest import make_review

SCHEDULER = "system:serviceaccount:hami-system:hami-scheduler"
AGENT = "system:serviceaccount:hami-system:hami-agent"
FORGED = {
    "huawei.com/Ascend910B3": '[{"UUID":"npu-0","temp":"","memory":65536,"core":100}]',
    "predicate-time": "1700000000",
    "CAMBRICON_DSMLU_PROFILE": "0_100_256",
}


@pytest.fixture
def guarded(start_webhook: Any) -> Any:
    return start_webhook(WebhookConfig(system_writers=f"{SCHEDULER}, {AGENT}"))


def _pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-1", "annotations": dict(annotations)},
        "spec": {"containers": [{"name": "main", "image": "cuda", "resources": {"limits": {"cambricon.com/vmlu": "1"}}}]},
    }


def _review(post: Any, server: Any, document: dict[str, Any], user: str) -> dict[str, Any]:
    document["request"]["userInfo"] = {"username": user, "groups": ["system:authenticated"]}
    status, answer = post(server, json.dumps(document).encode())
    assert status == 200, answer
    return answer["response"]


def test_the_manager_collects_every_backends_declared_keys(manager: Any) -> None:
    declared = manager.pod_annotations
    assert {"huawei.com/Ascend910B3", "predicate-time", "CAMBRICON_DSMLU_PROFILE", "CAMBRICON_DSMLU_ASSIGNED"} <= set(declared)


@pytest.mark.parametrize("key", sorted(FORGED))
def test_forging_one_at_creation_is_denied(guarded: Any, post: Any, key: str) -> None:
    response = _review(post, guarded, make_review(_pod({key: FORGED[key]})), "alice")
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert f"the pod sets annotation(s) {key}, which only hami" in response["status"]["message"]


@pytest.mark.parametrize("key", sorted(FORGED))
@pytest.mark.parametrize("edit", ["changed", "added", "removed"])
def test_editing_one_later_is_denied_to_the_owner_and_allowed_to_hami(guarded: Any, post: Any, key: str, edit: str) -> None:
    old = _pod({} if edit == "added" else {key: FORGED[key]})
    new = copy.deepcopy(old)
    annotations = new["metadata"]["annotations"]
    if edit == "removed":
        annotations.pop(key)
    else:
        annotations[key] = FORGED[key] + "0"
    denied = _review(post, guarded, make_review(new, operation="UPDATE", old=old), "alice")
    assert denied["allowed"] is False
    assert f"user 'alice' may not add, change or remove annotation(s) {key} of an existing pod" in denied["status"]["message"]
    for user in (SCHEDULER, AGENT):
        assert _review(post, guarded, make_review(new, operation="UPDATE", old=old), user)["allowed"] is True


def test_keys_no_backend_declares_stay_free(guarded: Any, post: Any) -> None:
    old = _pod({})
    new = _pod({"team.example.com/predicate-time": "1", "huawei.com/owner": "bob"})
    assert _review(post, guarded, make_review(new, operation="UPDATE", old=old), "alice")["allowed"] is True
