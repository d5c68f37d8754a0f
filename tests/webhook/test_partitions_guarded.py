"""HAMi's partition-instance annotation (``hami.io/vgpu-mig-allocations``, hami.wire.partitions) is
hami's to write: the node agent records there which instance each container got, the scheduler and
agent export it as ``hami_node_gpu_mig_instance_info`` / ``hami_mig_device_info``
(Project-HAMi/HAMi cmd/scheduler/metrics.go, cmd/vGPUmonitor/metrics.go). A pod owner who forged it
would show instances the pod does not hold; the webhook denies that at creation and later, and lets
hami's own service accounts write it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hami.webhook.config import WebhookConfig
from hami.wire import partitions

from .conftest import make_review

AGENT = "system:serviceaccount:hami-system:hami-agent"
FORGED = '[{"containerIndex":0,"deviceIndex":0,"gpuUUID":"GPU-0","profile":"7g.80gb","placement":{"start":0,"size":8},"migUUID":"MIG-x","gpuInstanceID":0,"computeInstanceID":0}]'


@pytest.fixture
def guarded(start_webhook: Any) -> Any:
    return start_webhook(WebhookConfig(system_writers=AGENT))


def _pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-1", "annotations": dict(annotations)},
        "spec": {"containers": [{"name": "main", "image": "cuda", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
    }


def _review(post: Any, server: Any, document: dict[str, Any], user: str) -> dict[str, Any]:
    document["request"]["userInfo"] = {"username": user, "groups": ["system:authenticated"]}
    status, answer = post(server, json.dumps(document).encode())
    assert status == 200, answer
    return answer["response"]


def test_forging_it_at_creation_is_denied(guarded: Any, post: Any) -> None:
    response = _review(post, guarded, make_review(_pod({partitions.ANNOTATION: FORGED})), "alice")
    assert response["allowed"] is False
    assert f"the pod sets annotation(s) {partitions.ANNOTATION}, which only hami" in response["status"]["message"]


def test_only_hami_changes_it_later(guarded: Any, post: Any) -> None:
    old = _pod({})
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][partitions.ANNOTATION] = FORGED
    denied = _review(post, guarded, make_review(new, operation="UPDATE", old=old), "alice")
    assert denied["allowed"] is False and partitions.ANNOTATION in denied["status"]["message"]
    assert _review(post, guarded, make_review(new, operation="UPDATE", old=old), AGENT)["allowed"] is True
