"""HTTPS serving with a self-signed certificate made by the openssl CLI (``cryptography`` is not a
dependency): reviews and health over TLS, bad clients do not stop it, rotated files are picked up."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hami.webhook.server import ServerError, WebhookServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a certificate")

REVIEW = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "tls-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": "default",
        "object": {
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "3000"}}}]},
        },
    },
}


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path, "webhook")


def _https(server: WebhookServer, cafile: Path, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        peer = conn.sock.getpeercert(binary_form=True)
        return response.status, response.read(), peer
    finally:
        conn.close()


def test_reviews_over_tls(start_webhook: Any, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    server = start_webhook(tls_cert=cert, tls_key=key)
    assert server.url.startswith("https://127.0.0.1:")
    status, body, _ = _https(server, cert, "GET", "/healthz")
    assert (status, body) == (200, b"ok")
    status, body, _ = _https(server, cert, "POST", "/webhook?timeout=10s", json.dumps(REVIEW).encode())
    response = json.loads(body)["response"]
    assert status == 200 and response["uid"] == "tls-1" and response["allowed"] is True
    assert {"op": "add", "path": "/spec/schedulerName", "value": "hami-scheduler"} in json.loads(base64.b64decode(response["patch"]))


def test_plain_http_and_silent_clients_do_not_stop_it(start_webhook: Any, pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    server = start_webhook(tls_cert=cert, tls_key=key)
    silent = socket.create_connection(("127.0.0.1", server.port))  # never says hello: handled in its own thread
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(1024)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")
    stranger, _ = make_cert(tmp_path, "stranger")
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that trusts another certificate
        _https(server, stranger, "GET", "/healthz")
    assert _https(server, cert, "GET", "/healthz")[0] == 200
    silent.close()


def test_rotated_certificate_is_picked_up(start_webhook: Any, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    cert, key = pair
    server = start_webhook(tls_cert=cert, tls_key=key)
    first = _https(server, cert, "GET", "/healthz")[2]
    new_cert, new_key = make_cert(tmp_path, "rotated")
    shutil.copy(new_key, key)
    shutil.copy(new_cert, cert)
    later = time.time() + 5  # make the change visible even on coarse mtime clocks
    os.utime(cert, (later, later))
    os.utime(key, (later, later))
    second = _https(server, cert, "GET", "/healthz")[2]
    assert second != first
    assert ssl.DER_cert_to_PEM_cert(second).strip() == new_cert.read_text().strip()


def test_tls_configuration_errors_are_clear(manager: Any, pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, _key = pair
    with pytest.raises(ServerError, match="both a certificate and a key"):
        WebhookServer(manager, tls_cert=cert)
    with pytest.raises(ServerError, match="cannot read TLS files"):
        WebhookServer(manager, tls_cert=cert, tls_key=tmp_path / "missing.key").start()
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(ServerError, match="cannot load TLS certificate"):
        WebhookServer(manager, tls_cert=cert, tls_key=garbage).start()
