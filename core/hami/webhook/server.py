"""The standalone webhook server: ``POST /webhook`` and ``GET /healthz`` over HTTP or HTTPS.

Standard library only (``ThreadingHTTPServer`` + ``ssl``): one thread per connection, HTTP/1.1
keep-alive (kube-apiserver reuses connections), bounded request bodies, and the TLS handshake done
in the connection's thread so a slow client never blocks ``accept``. Certificate files are re-read
when they change on disk (cert-manager rotates them under a running pod).
"""

from __future__ import annotations

import io
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
from hami.webhook.admission import BadReview, review, status_body
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
_DRAIN_LIMIT = 64 * 1024 * 1024
_CHUNK = 64 * 1024

Reviewer = Callable[[bytes], "tuple[int, bytes]"]


class ServerError(HamiError):
    """The server cannot start (address in use, unreadable certificate)."""


def read_request_body(rfile: io.BufferedIOBase, headers: Any, limit: int) -> bytes:
    """The request body (Content-Length or chunked), refusing more than ``limit`` bytes.

    Raises :class:`~hami.webhook.admission.BadReview`; after one, the connection must be closed.
    Reusable by any ``BaseHTTPRequestHandler`` that serves ``POST /webhook``.
    """
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return _read_chunked(rfile, limit)
    raw = headers.get("Content-Length")
    if raw is None:
        return b""
    try:
        length = int(raw)
        if length < 0:
            raise ValueError
    except ValueError:
        raise BadReview(f"Content-Length {raw!r:.40} is not a byte count") from None
    if length > limit:
        _drain(rfile, min(length, _DRAIN_LIMIT))
        raise BadReview(f"request body of {length} bytes is over the limit of {limit} bytes")
    body = rfile.read(length)
    if len(body) != length:
        raise BadReview(f"request body ended after {len(body)} of {length} bytes")
    return body


def _drain(rfile: io.BufferedIOBase, length: int) -> None:
    """Read and discard, so the client can finish sending and read our answer."""
    while length > 0:
        got = rfile.read(min(_CHUNK, length))
        if not got:
            return
        length -= len(got)


def _read_chunked(rfile: io.BufferedIOBase, limit: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(1024)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadReview(f"malformed chunk size line {line[:40]!r}") from None
        if size < 0:
            raise BadReview(f"malformed chunk size line {line[:40]!r}")
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            if total > limit:
                raise BadReview(f"request body is over the limit of {limit} bytes")
            return b"".join(parts)
        total += size
        if total > _DRAIN_LIMIT:
            raise BadReview(f"request body is over the limit of {limit} bytes")
        if total > limit:  # keep reading to the end, discarding: closing on unread data resets the connection
            _drain(rfile, size)
        else:
            chunk = rfile.read(size)
            if len(chunk) != size:
                raise BadReview("request body ended inside a chunk")
            parts.append(chunk)
        rfile.readline(1024)


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
            body = read_request_body(self.rfile, self.headers, self.server.max_body_bytes)
        except BadReview as exc:
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
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=webhook_http client=%s %s", self.client_address[0], format % args)


class _TLS:
    """A server SSL context for cert/key files, rebuilt when either file changes."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._stamp = self._mtimes()
        self._context = self._load()

    def _mtimes(self) -> tuple[float, float]:
        try:
            return os.stat(self.cert).st_mtime, os.stat(self.key).st_mtime
        except OSError as exc:
            raise ServerError(f"cannot read TLS files {self.cert!r} / {self.key!r}: {exc}") from None

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ServerError(f"cannot load TLS certificate {self.cert!r} with key {self.key!r}: {exc}") from None
        return context

    def context(self) -> ssl.SSLContext:
        with self._lock:
            try:
                stamp = self._mtimes()
                if stamp != self._stamp:
                    self._context, self._stamp = self._load(), stamp
                    log.info("event=webhook_tls_reloaded cert=%s", self.cert)
            except ServerError as exc:  # mid-rotation: keep serving the old pair
                log.warning("event=webhook_tls_reload_failed error=%r", str(exc))
            return self._context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], reviewer: Reviewer, max_body_bytes: int, tls: _TLS | None) -> None:
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
        tls = _TLS(*self._tls_files) if self._tls_files else None
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
