"""Fixtures for the webhook tests: the four real backends in a fresh manager, webhook servers on
127.0.0.1 (port 0), and helpers that build AdmissionReviews and talk to a server over real HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import hami_ascend.plugin
import hami_cambricon.plugin
import hami_hygon.plugin
import hami_nvidia.plugin
from hami.plugin.manager import BackendManager
from hami.webhook.config import WebhookConfig
from hami.webhook.server import WebhookServer


@pytest.fixture
def manager(hami_manager: BackendManager, register_backend: Callable[..., Any]) -> BackendManager:
    for plugin in (hami_nvidia.plugin.plugin, hami_cambricon.plugin.plugin, hami_ascend.plugin.plugin, hami_hygon.plugin.plugin):
        register_backend(plugin)
    return hami_manager


@pytest.fixture
def start_webhook(manager: BackendManager) -> Iterator[Callable[..., WebhookServer]]:
    """``start_webhook(config=None, quota=None, **server_kwargs)``: a started server, stopped after the test."""
    servers: list[WebhookServer] = []

    def start(config: WebhookConfig | None = None, quota: Any = None, **kwargs: Any) -> WebhookServer:
        server = WebhookServer(manager, config or WebhookConfig(), quota, host="127.0.0.1", port=0, **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def webhook(start_webhook: Callable[..., WebhookServer]) -> WebhookServer:
    return start_webhook()


def _post(server: WebhookServer, body: bytes, path: str = "/webhook", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


@pytest.fixture
def post() -> Callable[..., tuple[int, Any]]:
    """``post(server, body_bytes, path="/webhook", headers=None) -> (status, parsed JSON or raw bytes)``."""
    return _post


def make_review(
    obj: Any,
    *,
    operation: str = "CREATE",
    namespace: str = "default",
    kind: dict[str, str] | None = None,
    uid: str | None = None,
    sub_resource: str | None = None,
    old: Any = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()),
        "kind": kind or {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": kind or {"group": "", "version": "v1", "kind": "Pod"},
        "name": "p",
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "alice"},
        "object": obj,
        "oldObject": old,
        "dryRun": False,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


@pytest.fixture
def admit(post: Callable[..., tuple[int, Any]]) -> Callable[..., dict[str, Any]]:
    """``admit(server, pod, **review_kwargs)``: POST a review over HTTP; returns the checked ``response``
    with the decoded JSON Patch under ``"_ops"`` (None when the response has no patch)."""

    def run(server: WebhookServer, pod: Any, **kwargs: Any) -> dict[str, Any]:
        document = make_review(pod, **kwargs)
        status, answer = post(server, json.dumps(document).encode())
        assert status == 200, answer
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        response = answer["response"]
        assert response["uid"] == document["request"]["uid"]
        if "patch" in response:
            assert response["patchType"] == "JSONPatch"
            response["_ops"] = json.loads(base64.b64decode(response["patch"]))
        else:
            assert "patchType" not in response
            response["_ops"] = None
        return response

    return run
