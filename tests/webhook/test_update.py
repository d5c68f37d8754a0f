"""Issue 19, item 2: a pod owner cannot change what the scheduler believes a pod holds. UPDATEs
that add, change or remove hami's pod annotations are denied over real HTTP unless the request's
user is one of the configured system writers (the scheduler's and the agents' service accounts)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from hami.fakes.extender import TEST_KEYS
from hami.plugin.model import Grant
from hami.webhook.config import WebhookConfig
from hami.wire.allocation import Allocation
from hami.wire.codec import encode_pod_devices

from .conftest import make_review

SCHEDULER = "system:serviceaccount:hami-system:hami-scheduler"
AGENT = "system:serviceaccount:hami-system:hami-agent"
ALLOCATED = "hami.io/vgpu-devices-allocated"


@pytest.fixture
def guarded(start_webhook: Any) -> Any:
    return start_webhook(WebhookConfig(system_writers=f"{SCHEDULER}, {AGENT}"))


def _running_pod(manager: Any) -> dict[str, Any]:
    grant = Allocation("gpu-a", {"NVIDIA": ((Grant("GPU-0", "NVIDIA", 12000, 0),),)})
    annotations = grant.annotations(manager.kinds, "uid-1", time.time(), TEST_KEYS)
    annotations["hami.io/bind-phase"] = "success"
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-1", "annotations": annotations},
        "spec": {
            "nodeName": "gpu-a",
            "containers": [{"name": "main", "image": "cuda", "resources": {"limits": {"nvidia.com/gpumem": "12000"}}}],
        },
    }


def _update(post: Any, server: Any, old: dict[str, Any], new: dict[str, Any], user: str) -> dict[str, Any]:
    document = make_review(new, operation="UPDATE", old=old)
    document["request"]["userInfo"] = {"username": user, "groups": ["system:authenticated"]}
    status, answer = post(server, json.dumps(document).encode())
    assert status == 200, answer
    return answer["response"]


def test_owner_shrinking_the_record_is_denied(guarded: Any, post: Any, manager: Any) -> None:
    old = _running_pod(manager)
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][ALLOCATED] = encode_pod_devices([[Grant("GPU-0", "NVIDIA", 4000, 0)]])
    response = _update(post, guarded, old, new, "alice")
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert f"user 'alice' may not add, change or remove annotation(s) {ALLOCATED} of an existing pod" in response["status"]["message"]


@pytest.mark.parametrize(
    ("change", "keys"),
    [
        pytest.param(lambda a: a.pop(ALLOCATED), ALLOCATED, id="removed"),
        pytest.param(lambda a: a.update({"hami.io/bind-phase": "allocating"}), "hami.io/bind-phase", id="bind-phase"),
        pytest.param(
            lambda a: a.update({"hami.io/allocation-signature": "hmac-sha256:" + "0" * 64}), "hami.io/allocation-signature", id="signature"
        ),
        pytest.param(lambda a: a.update({"hami.io/mlu-devices-allocated": "x"}), "hami.io/mlu-devices-allocated", id="any-vendor-record"),
    ],
)
def test_every_system_annotation_is_guarded(guarded: Any, post: Any, manager: Any, change: Any, keys: str) -> None:
    old = _running_pod(manager)
    new = copy.deepcopy(old)
    change(new["metadata"]["annotations"])
    response = _update(post, guarded, old, new, "alice")
    assert response["allowed"] is False and keys in response["status"]["message"]


@pytest.mark.parametrize("user", [SCHEDULER, AGENT])
def test_hamis_own_accounts_may_write_them(guarded: Any, post: Any, manager: Any, user: str) -> None:
    old = _running_pod(manager)
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["hami.io/bind-phase"] = "failed"
    assert _update(post, guarded, old, new, user)["allowed"] is True


def test_other_updates_pass_untouched(guarded: Any, post: Any, manager: Any) -> None:
    old = _running_pod(manager)
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["team.example.com/owner"] = "bob"
    new["metadata"]["labels"] = {"tier": "gold"}
    response = _update(post, guarded, old, new, "alice")
    assert response["allowed"] is True and "patch" not in response


def test_without_configured_writers_nobody_may(start_webhook: Any, post: Any, manager: Any) -> None:
    server = start_webhook(WebhookConfig())
    old = _running_pod(manager)
    new = copy.deepcopy(old)
    new["metadata"]["annotations"]["hami.io/bind-phase"] = "failed"
    assert _update(post, server, old, new, SCHEDULER)["allowed"] is False


def test_malformed_annotations_in_an_update_are_a_400(guarded: Any, post: Any, manager: Any) -> None:
    old = _running_pod(manager)
    new = copy.deepcopy(old)
    new["metadata"]["annotations"] = ["not", "a", "map"]
    response = _update(post, guarded, old, new, "alice")
    assert response["allowed"] is False and response["status"]["code"] == 400
    assert "request.object.metadata.annotations must be an object, got array" in response["status"]["message"]


@pytest.mark.parametrize("value", [42, [1], "bad name,ok"])
def test_system_writers_setting_names_a_bad_value(value: Any) -> None:
    from hami.errors import ValidationError

    with pytest.raises(ValidationError, match="system_writers"):
        WebhookConfig(system_writers=value)
