"""The threaded HTTP server every hami endpoint runs on (extender, webhook, test API server).

What a server exposed to a network needs and ``http.server`` lacks, in one place:

* per-connection TLS, the handshake done in the connection's own thread under a deadline (a client
  that connects and says nothing never blocks ``accept`` nor holds a thread for long);
* certificate hot reload: the cert/key (and client CA) files are checked before each handshake and
  reloaded when they changed (cert-manager rotates them under a running pod);
* an optional client CA: a client without a certificate signed by it is refused at the handshake;
* an idle timeout between keep-alive requests, and a deadline for reading one request (line, headers
  and body), so a slow-loris client cannot hold a thread by trickling bytes;
* :func:`read_body`: Content-Length or chunked bodies, refused over a size limit (413).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

from hami.errors import HamiError

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_DRAIN_LIMIT = 64 * 1024 * 1024
"""At most this much of an over-limit body is read and discarded (so the client sees our 413)."""


class ServingError(HamiError):
    """A server cannot start: unreadable certificate, key or CA file."""


@attrs.frozen
class Limits:
    """How long and how much one client may take."""

    handshake_timeout: float = 10.0
    """Seconds for the TLS handshake of a new connection."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive connection may wait for its next request (also the socket timeout of writes)."""
    request_timeout: float = 30.0
    """Seconds from a request's first byte to the end of its body (kube-apiserver gives a webhook 30 s)."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Larger request bodies are answered 413."""


class BodyError(Exception):
    """The request body cannot be read: ``status`` (400 or 413) and why. Close the connection after."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_body(rfile: io.BufferedIOBase, headers: Mapping[str, str] | Message, limit: int) -> bytes:
    """The request body (Content-Length or chunked), refusing more than ``limit`` bytes with a 413."""
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
        raise BodyError(400, f"Content-Length {raw!r:.40} is not a byte count") from None
    if length > limit:
        _drain(rfile, min(length, _DRAIN_LIMIT))
        raise BodyError(413, f"request body of {length} bytes is over the limit of {limit} bytes")
    body = rfile.read(length)
    if len(body) != length:
        raise BodyError(400, f"request body ended after {len(body)} of {length} bytes")
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
            if size < 0:
                raise ValueError
        except ValueError:
            raise BodyError(400, f"malformed chunk size line {line[:40]!r}") from None
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            if total > limit:
                raise BodyError(413, f"request body is over the limit of {limit} bytes")
            return b"".join(parts)
        total += size
        if total > _DRAIN_LIMIT:
            raise BodyError(413, f"request body is over the limit of {limit} bytes")
        if total > limit:  # read to the end, discarding: closing on unread data resets the connection
            _drain(rfile, size)
        else:
            chunk = rfile.read(size)
            if len(chunk) != size:
                raise BodyError(400, "request body ended inside a chunk")
            parts.append(chunk)
        rfile.readline(1024)


def end_headers_with(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """``end_headers()`` and ``body`` as one socket write. Two writes (headers, then body) are two
    packets; with Nagle on, the second waits for the peer's delayed ACK (up to 40 ms on Linux)."""
    buffered = getattr(handler, "_headers_buffer", None)  # what send_response/send_header collected
    if buffered is None or handler.request_version == "HTTP/0.9":  # no headers to send
        handler.wfile.write(body)
        return
    buffered.append(b"\r\n")
    if body:
        buffered.append(body)
    handler.flush_headers()


class ReloadingTLS:
    """A server SSL context for cert/key files (and a client CA), rebuilt when any file changes.

    Checked before each handshake: a stat per file per new connection, nothing per request
    (kube-scheduler and kube-apiserver keep their connections alive)."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._stamp = self._mtimes()
        self._context = self._load()
        self.reloads = 0

    def _files(self) -> list[str]:
        return [self.cert, self.key, *([self.client_ca] if self.client_ca else [])]

    def _mtimes(self) -> tuple[tuple[float, int], ...]:
        try:
            return tuple((s.st_mtime, s.st_size) for s in (os.stat(f) for f in self._files()))
        except OSError as exc:
            raise ServingError(f"cannot read TLS files {', '.join(map(repr, self._files()))}: {exc}") from None

    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ServingError(f"cannot load TLS certificate {self.cert!r} with key {self.key!r}: {exc}") from None
        if self.client_ca:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (OSError, ssl.SSLError) as exc:
                raise ServingError(f"cannot load client CA {self.client_ca!r}: {exc}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def context(self) -> ssl.SSLContext:
        with self._lock:
            try:
                stamp = self._mtimes()
                if stamp != self._stamp:
                    self._context, self._stamp = self._load(), stamp
                    self.reloads += 1
                    log.info("event=tls_reloaded cert=%s", self.cert)
            except ServingError as exc:  # mid-rotation (key written, cert not yet): keep serving the old pair
                log.warning("event=tls_reload_failed error=%r", str(exc))
            return self._context


class _DeadlineRaw(io.RawIOBase):
    """The socket as a raw stream whose reads honour a deadline: each read waits at most until the
    deadline (or the idle timeout when none is armed), then raises TimeoutError."""

    def __init__(self, sock: socket.socket, idle_timeout: float) -> None:
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wait = self.idle_timeout
        if self.deadline is not None:
            wait = min(wait, self.deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError("the request was not received in time")
        self.sock.settimeout(wait)
        try:
            return self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.idle_timeout)  # writes keep the idle timeout


class HardenedHandler(BaseHTTPRequestHandler):
    """A request handler under the server's :class:`Limits`: waits ``idle_timeout`` for each request,
    then gives the request ``request_timeout`` to arrive whole (line, headers and the body read with
    :meth:`body`)."""

    protocol_version = "HTTP/1.1"
    server: ThreadedHTTPServer

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the makefile() reader holds a reference on the socket: replaced below
        limits = self.server.limits
        self._raw = _DeadlineRaw(self.connection, limits.idle_timeout)
        self.connection.settimeout(limits.idle_timeout)
        self._reader = io.BufferedReader(self._raw, io.DEFAULT_BUFFER_SIZE)
        self.rfile = self._reader

    def handle_one_request(self) -> None:
        self._raw.deadline = None
        try:
            first = self._reader.peek(1)  # the idle wait: nothing counted against the request yet
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if not first:
            self.close_connection = True
            return
        self._raw.deadline = time.monotonic() + self.server.limits.request_timeout
        try:
            super().handle_one_request()
        except TimeoutError:
            self.close_connection = True
            log.debug("event=http_request_timeout client=%s", self.client_address[0])
        finally:
            self._raw.deadline = None

    def body(self) -> bytes:
        """The request body under the size limit; raises :class:`BodyError` (then close the connection)."""
        try:
            return read_body(self.rfile, self.headers, self.server.limits.max_body_bytes)
        except TimeoutError:
            raise BodyError(408, "the request body was not received in time") from None


class ThreadedHTTPServer(ThreadingHTTPServer):
    """A peer hanging up mid-request is routine (watch streams cut, clients timing out): it is logged
    at debug level instead of printing a traceback to stderr; anything else is logged as an error.

    With ``tls``, each accepted connection is wrapped in its own thread, the handshake bounded by
    ``limits.handshake_timeout``."""

    daemon_threads = True
    allow_reuse_address = True
    limits = Limits()
    tls: ReloadingTLS | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.limits.handshake_timeout)
        try:
            secure = self.tls.context().wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:  # timeouts, no client certificate, plain HTTP on the TLS port
            log.info("event=tls_handshake_failed client=%s error=%r", client_address[0], str(exc))
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            self.shutdown_request(secure)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError)):
            log.debug("event=client_disconnected client=%s error=%r", client_address, error)
            return
        log.error("event=http_handler_error client=%s", client_address, exc_info=True)
