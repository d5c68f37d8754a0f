"""The standalone webhook server: ``POST /webhook`` and ``GET /healthz`` over HTTP or HTTPS.

Standard library only (``ThreadingHTTPServer`` + ``ssl``): one thread per connection, HTTP/1.1
keep-alive (kube-apiserver reuses connections), bounded request bodies, and the TLS handshake done
in the connection's thread so a slow client never blocks ``accept``. Certificate files are re-read
when they change on disk (cert-manager rotates them under a running pod).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from hami.errors import HamiError
from hami.plugin.manager import BackendManager
from hami.serving import BodyError, ReloadingTLS, ServingError, end_headers_with, read_body
from hami.webhook.admission import review, status_body
from hami.webhook.config import WebhookConfig
from hami.webhook.quota import QuotaSource

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhook"
HEALTH_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
HANDSHAKE_TIMEOUT = 10.0
CONNECTION_TIMEOUT = 30.0
"""kube-apiserver gives a webhook at most 30 s; an idle or stalled connection is dropped after that."""
POLL_INTERVAL = 0.05
"""How often the accept loop checks for ``stop()``: stopping takes at most this long."""

Reviewer = Callable[[bytes], "tuple[int, bytes]"]


class ServerError(HamiError):
    """The server cannot start (address in use, unreadable certificate)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hami-webhook"
    timeout = CONNECTION_TIMEOUT
    server: _Server

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in HEALTH_PATHS:
            self._send(200, b"ok", "text/plain; charset=utf-8")
        elif path == WEBHOOK_PATH:
            self._method_not_allowed()
        else:
            self._send(404, status_body(404, f"no such path {urlsplit(self.path).path!r}; the webhook is POST {WEBHOOK_PATH}"))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path  # kube-apiserver appends ?timeout=10s
        try:
            body = read_body(self.rfile, self.headers, self.server.max_body_bytes)
        except BodyError as exc:  # every unreadable body is a 400 here, as kube-apiserver expects of a webhook
            self.close_connection = True
            self._send(400, status_body(400, str(exc)))
            return
        if path != WEBHOOK_PATH:
            self._send(404, status_body(404, f"no such path {path!r}; the webhook is POST {WEBHOOK_PATH}"))
            return
        try:
            status, answer = self.server.reviewer(body)
        except Exception as exc:  # review() never raises; a reviewer someone else passed might
            log.exception("event=webhook_reviewer_failed")
            status, answer = 500, status_body(500, f"internal error: {type(exc).__name__}")
        self._send(status, answer)

    def _method_not_allowed(self) -> None:
        self.close_connection = True
        self._send(405, status_body(405, f"method {self.command} is not allowed; the webhook is POST {WEBHOOK_PATH}"))

    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _method_not_allowed

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        end_headers_with(self, b"" if self.command == "HEAD" else body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=webhook_http client=%s %s", self.client_address[0], format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], reviewer: Reviewer, max_body_bytes: int, tls: ReloadingTLS | None) -> None:
        self.reviewer = reviewer
        self.max_body_bytes = max_body_bytes
        self.tls = tls
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            secure = self.tls.context().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.info("event=webhook_tls_handshake_failed client=%s error=%r", client_address[0], str(exc))
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            self.shutdown_request(secure)


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebhookServer:
    """``POST /webhook`` and ``GET /healthz`` on ``host:port`` (port 0: a free one), in a thread.

    >>> with WebhookServer(manager, WebhookConfig(), port=0) as srv:   # doctest: +SKIP
    ...     urllib.request.urlopen(srv.url + "/healthz")
    """

    def __init__(
        self,
        manager: BackendManager,
        config: WebhookConfig | None = None,
        quota: QuotaSource | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ServerError("TLS needs both a certificate and a key file")
        self.manager = manager
        self.config = config or WebhookConfig()
        self.quota = quota
        self.host = host
        self._requested_port = port
        self._tls_files = (os.fspath(tls_cert), os.fspath(tls_key)) if tls_cert is not None and tls_key is not None else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _review(self, body: bytes) -> tuple[int, bytes]:
        return review(self.manager, body, self.config, self.quota)

    def start(self) -> WebhookServer:
        if self._server is not None:
            return self
        try:
            tls = ReloadingTLS(*self._tls_files) if self._tls_files else None
        except ServingError as exc:
            raise ServerError(str(exc)) from None
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._server = server_class((self.host, self._requested_port), self._review, self.config.max_body_bytes, tls)
        except OSError as exc:
            raise ServerError(f"cannot listen on {self.host}:{self._requested_port}: {exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, args=(POLL_INTERVAL,), name="hami-webhook", daemon=True)
        self._thread.start()
        log.info("event=webhook_listening address=%s port=%d tls=%s", self.host, self.port, tls is not None)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        log.info("event=webhook_stopped")

    @property
    def port(self) -> int:
        if self._server is None:
            raise ServerError("the webhook server is not started")
        return int(self._server.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self._tls_files else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
