"""Bodies that are not AdmissionReviews get a 400 Status naming the problem, and the server keeps
serving; random JSON never produces a 500 or a crash; the HTTP edges (chunked bodies, bad lengths,
wrong paths and methods) behave."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hami.webhook.config import WebhookConfig

VALID = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": "default",
        "object": {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "3000"}}}]},
        },
    },
}


def _with(**request: Any) -> bytes:
    document = json.loads(json.dumps(VALID))
    for key, value in request.items():
        if value is ...:
            document["request"].pop(key)
        else:
            document["request"][key] = value
    return json.dumps(document).encode()


GARBAGE = [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"not json", "not JSON", id="not-json"),
    pytest.param(b"\xff\xfe\x00garbage", "not JSON", id="binary"),
    pytest.param(b'{"apiVersion": ', "not JSON", id="truncated"),
    pytest.param(b"[]", "got a JSON array", id="array"),
    pytest.param(b"42", "got a JSON number", id="number"),
    pytest.param(b"null", "got a JSON null", id="null"),
    pytest.param(b'{"apiVersion": NaN}', "not JSON", id="nan"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "not JSON", id="deeply-nested"),
    pytest.param(b'{"kind": "AdmissionReview"}', "apiVersion 'admission.k8s.io/v1'", id="no-api-version"),
    pytest.param(json.dumps({**VALID, "apiVersion": "admission.k8s.io/v1beta1"}).encode(), "'admission.k8s.io/v1beta1'", id="v1beta1"),
    pytest.param(json.dumps({**VALID, "kind": "Pod"}).encode(), "'Pod'", id="wrong-kind"),
    pytest.param(
        json.dumps({k: v for k, v in VALID.items() if k != "request"}).encode(), "request must be an object, got null", id="missing-request"
    ),
    pytest.param(json.dumps({**VALID, "request": []}).encode(), "request must be an object, got array", id="request-array"),
    pytest.param(_with(uid=...), "request.uid must be a non-empty string, got None", id="missing-uid"),
    pytest.param(_with(uid=""), "request.uid must be a non-empty string, got ''", id="empty-uid"),
    pytest.param(_with(uid=7), "request.uid must be a non-empty string, got 7", id="numeric-uid"),
    pytest.param(_with(operation=...), "request.operation must be a string", id="missing-operation"),
]


@pytest.mark.parametrize(("body", "fragment"), GARBAGE)
def test_garbage_gets_a_400_status_and_the_server_keeps_serving(webhook: Any, post: Any, body: bytes, fragment: str) -> None:
    status, answer = post(webhook, body)
    assert status == 400
    assert answer["kind"] == "Status" and answer["code"] == 400 and answer["reason"] == "BadRequest"
    assert fragment in answer["message"], answer["message"]
    status, answer = post(webhook, json.dumps(VALID).encode())
    assert status == 200 and answer["response"]["uid"] == "u-1" and answer["response"]["allowed"] is True


def test_huge_body_is_refused_unread(start_webhook: Any, post: Any) -> None:
    server = start_webhook(WebhookConfig(max_body_bytes=4096))
    status, answer = post(server, b" " * 200_000)
    assert status == 400 and "200000 bytes is over the limit of 4096 bytes" in answer["message"]
    status, answer = post(server, json.dumps(VALID).encode())
    assert status == 200


def test_chunked_body_is_read(webhook: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", webhook.port, timeout=5)
    body = json.dumps(VALID).encode()
    conn.request(
        "POST",
        "/webhook?timeout=10s",
        body=iter([body[:50], body[50:]]),
        encode_chunked=True,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["response"]["uid"] == "u-1"
    # the connection stays usable (keep-alive), as kube-apiserver expects
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok"
    conn.close()


def test_chunked_body_over_the_limit(start_webhook: Any) -> None:
    server = start_webhook(WebhookConfig(max_body_bytes=100))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request(
        "POST", "/webhook", body=iter([b"x" * 80, b"y" * 80000, b"z" * 80]), encode_chunked=True, headers={"Transfer-Encoding": "chunked"}
    )
    response = conn.getresponse()
    assert response.status == 400 and "over the limit of 100 bytes" in json.loads(response.read())["message"]
    conn.close()


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the client sent all it will send
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_content_length_and_short_body(webhook: Any, post: Any) -> None:
    answer = _raw(webhook.port, b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"'abc'" in answer
    answer = _raw(webhook.port, b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}")  # then the client goes away
    assert answer.startswith(b"HTTP/1.1 400") and b"ended after 2 of 100 bytes" in answer
    answer = _raw(webhook.port, b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"chunk size" in answer
    assert post(webhook, json.dumps(VALID).encode())[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/livez", 200),
        ("GET", "/readyz", 200),
        ("GET", "/webhook", 405),
        ("PUT", "/webhook", 405),
        ("DELETE", "/webhook", 405),
        ("GET", "/nope", 404),
        ("POST", "/mutate", 404),
    ],
)
def test_paths_and_methods(webhook: Any, method: str, path: str, status: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", webhook.port, timeout=5)
    conn.request(method, path, body=b"{}" if method in ("POST", "PUT") else None)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == status
    if status != 200:
        assert json.loads(body)["code"] == status


# ------------------------------------------------------------------ property: no body crashes the server

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=25,
)
_quantity = st.one_of(st.text(max_size=8), st.integers(-10, 10**6).map(str), st.integers(), st.floats(allow_nan=False), st.none(), _json)
_resources = st.dictionaries(
    st.sampled_from(
        [
            "nvidia.com/gpu",
            "nvidia.com/gpumem",
            "nvidia.com/gpumem-percentage",
            "nvidia.com/gpucores",
            "cambricon.com/vmlu",
            "huawei.com/Ascend910B3-memory",
            "hygon.com/dcucores",
            "cpu",
        ]
    ),
    _quantity,
    max_size=4,
)
_container = st.one_of(
    st.fixed_dictionaries(
        {"name": st.text(max_size=8)},
        optional={
            "resources": st.one_of(
                st.none(),
                _json,
                st.fixed_dictionaries({}, optional={"limits": st.one_of(_resources, _json), "requests": st.one_of(_resources, _json)}),
            ),
            "securityContext": st.one_of(st.none(), _json, st.fixed_dictionaries({"privileged": st.one_of(st.booleans(), _json)})),
            "restartPolicy": st.sampled_from(["Always", "Never"]),
        },
    ),
    _json,
)
_pod = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "metadata": st.one_of(
                _json,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.text(max_size=8),
                        "annotations": st.one_of(
                            _json,
                            st.dictionaries(st.sampled_from(["hami.io/vgpu-node", "nvidia.com/use-gputype", "a"]), st.text(max_size=5)),
                        ),
                    },
                ),
            ),
            "spec": st.one_of(
                _json,
                st.fixed_dictionaries(
                    {"containers": st.one_of(_json, st.lists(_container, max_size=3))},
                    optional={
                        "initContainers": st.one_of(_json, st.lists(_container, max_size=2)),
                        "schedulerName": st.one_of(st.sampled_from(["", "default-scheduler", "hami-scheduler", "volcano"]), _json),
                        "nodeName": st.one_of(st.none(), st.text(max_size=5), _json),
                    },
                ),
            ),
        }
    ),
)
_request = st.fixed_dictionaries(
    {"uid": st.one_of(st.text(min_size=1, max_size=10), _json)},
    optional={
        "operation": st.one_of(st.sampled_from(["CREATE", "UPDATE", "DELETE"]), _json),
        "kind": st.one_of(st.just({"group": "", "version": "v1", "kind": "Pod"}), _json),
        "namespace": st.one_of(st.text(max_size=6), _json),
        "object": _pod,
        "subResource": st.one_of(st.just(""), _json),
    },
)
_pod_create = st.fixed_dictionaries(
    {
        "uid": st.text(min_size=1, max_size=10),
        "operation": st.just("CREATE"),
        "kind": st.just({"group": "", "version": "v1", "kind": "Pod"}),
        "namespace": st.text(max_size=6),
        "object": _pod,
    }
)
_document = st.one_of(
    _json,
    st.fixed_dictionaries(
        {"apiVersion": st.just("admission.k8s.io/v1"), "kind": st.just("AdmissionReview"), "request": st.one_of(_request, _json)}
    ),
    # most examples: a well-formed envelope around a random pod, so the admission rules are exercised
    st.fixed_dictionaries({"apiVersion": st.just("admission.k8s.io/v1"), "kind": st.just("AdmissionReview"), "request": _pod_create}),
    st.fixed_dictionaries({"apiVersion": st.just("admission.k8s.io/v1"), "kind": st.just("AdmissionReview"), "request": _pod_create}),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(document=_document)
def test_random_json_is_answered_with_200_or_400_never_500(webhook: Any, post: Any, document: Any) -> None:
    status, answer = post(webhook, json.dumps(document).encode())
    assert status in (200, 400), answer
    if status == 400:
        assert answer["kind"] == "Status" and answer["code"] == 400
        return
    response = answer["response"]
    assert response["uid"] == document["request"]["uid"]
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        # a 500 inside the review would mean our own code failed on this input
        assert response["status"]["code"] in (400, 403), response["status"]["message"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.binary(max_size=300))
def test_random_bytes_are_answered(webhook: Any, post: Any, body: bytes) -> None:
    status, _ = post(webhook, body)
    assert status in (200, 400)
