"""The extender's HTTP server: kube-scheduler's filter / prioritize / bind verbs, the admission
webhook, health and metrics.

Envelopes are PascalCase as kube-scheduler sends them (Go structs without json tags); any key case is
accepted. A bad request never crashes the server: non-JSON is a 400, anything else a 200 whose
``Error`` says what was wrong, as kube-scheduler expects.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hami.scheduler.core import Scheduler
from hami.scheduler.metrics import SchedulerMetrics
from hami.serving import ThreadedHTTPServer

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024
WebhookHandler = Callable[[bytes], tuple[int, bytes]]


class BadRequest(Exception):
    """The body is not what the verb needs; the message goes back to the caller."""


def field(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]`` in any letter case (kube-scheduler writes PascalCase, people write camelCase)."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == lowered), None)


def _node_names(args: Mapping[str, Any]) -> tuple[list[str], list[Mapping[str, Any]] | None]:
    names = field(args, "NodeNames")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadRequest("NodeNames must be a list of node names")
        return names, None
    nodes = field(args, "Nodes")
    items = (field(nodes, "items") if isinstance(nodes, dict) else None) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest("Nodes.items must be a list of Node objects")
    return [((i.get("metadata") or {}).get("name") or "") for i in items], items


class Extender:
    """The verbs as functions of parsed JSON, so tests and the sandbox can call them without HTTP."""

    def __init__(self, scheduler: Scheduler, metrics: SchedulerMetrics | None = None, webhook: WebhookHandler | None = None,
                 ready: Callable[[], bool] = lambda: True, leading: Callable[[], bool] = lambda: True) -> None:
        self.scheduler = scheduler
        self.metrics = metrics or SchedulerMetrics(scheduler.state)
        self.webhook = webhook
        self.synced = ready
        self.leading = leading

    def ready(self) -> bool:
        return self.synced() and self.leading()

    def _check_leader(self) -> None:
        if not self.leading():
            raise BadRequest("this replica is not the leader; kube-scheduler should reach the leader through the Service")

    def filter(self, args: Mapping[str, Any]) -> dict[str, Any]:
        self._check_leader()
        pod = field(args, "Pod")
        if not isinstance(pod, dict):
            raise BadRequest("ExtenderArgs has no Pod")
        names, items = _node_names(args)
        if items is not None:
            for item in items:
                self.scheduler.state.apply_node(item)  # full-node mode: the freshest view there is
        outcome = self.scheduler.filter(pod, names)
        if not outcome.managed:
            return {"Nodes": {"items": items} if items is not None else None, "NodeNames": names if items is None else None, "FailedNodes": {}, "Error": ""}
        chosen = [outcome.node] if outcome.node else []
        result: dict[str, Any] = {"FailedNodes": dict(outcome.failed), "FailedAndUnresolvableNodes": {}, "Error": outcome.error}
        if items is None:
            result["NodeNames"] = chosen or None
            result["Nodes"] = None
        else:
            result["Nodes"] = {"items": [i for i in items if (i.get("metadata") or {}).get("name") in chosen]}
            result["NodeNames"] = None
        return result

    def prioritize(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        pod = field(args, "Pod")
        if not isinstance(pod, dict):
            raise BadRequest("ExtenderArgs has no Pod")
        names, _ = _node_names(args)
        return [{"Host": name, "Score": score} for name, score in self.scheduler.prioritize(pod, names)]

    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        self._check_leader()
        values = {k: field(args, k) for k in ("PodName", "PodNamespace", "PodUID", "Node")}
        missing = [k for k in ("PodName", "PodNamespace", "Node") if not isinstance(values[k], str) or not values[k]]
        if missing:
            return {"Error": f"ExtenderBindingArgs is missing {', '.join(missing)}"}
        return {"Error": self.scheduler.bind(values["PodNamespace"], values["PodName"], values["PodUID"] or "", values["Node"])}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: avoid 40 ms delayed ACKs
    server: ExtenderHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("event=http %s", format % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, separators=(",", ":")).encode())

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        extender = self.server.extender
        if self.path == "/healthz":
            self._send(200, b"ok", "text/plain")
        elif self.path == "/readyz":
            ready = extender.ready()
            self._send(200 if ready else 503, b"ok" if ready else b"not ready", "text/plain")
        elif self.path == "/metrics":
            self._send(200, generate_latest(extender.metrics.registry), CONTENT_TYPE_LATEST)
        else:
            self._json(404, {"Error": f"no such path {self.path!r}"})

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if length < 0 or length > MAX_BODY:
            raise BadRequest(f"body of {length} bytes is not acceptable (limit {MAX_BODY})")
        return self.rfile.read(length)

    def do_POST(self) -> None:  # noqa: N802
        extender = self.server.extender
        verb = self.path.rstrip("/").rsplit("/", 1)[-1]
        started = time.perf_counter()
        try:
            body = self._body()
        except BadRequest as exc:
            self._json(400, {"Error": str(exc)})
            return
        if verb == "webhook":
            if extender.webhook is None:
                self._json(404, {"Error": "this server has no admission webhook"})
                return
            status, payload = extender.webhook(body)
            self._send(status, payload)
            return
        handlers = {"filter": extender.filter, "prioritize": extender.prioritize, "bind": extender.bind, "echo": lambda args: args}
        handler = handlers.get(verb)
        if handler is None:
            self._json(404, {"Error": f"unknown verb {verb!r}; this extender serves filter, prioritize, bind"})
            return
        try:
            args = json.loads(body)
        except (ValueError, RecursionError) as exc:
            extender.metrics.requests.labels(verb, "bad_request").inc()
            self._json(400, {"Error": f"{verb}: the body is not JSON ({exc})"})
            return
        result = "ok"
        try:
            if not isinstance(args, dict):
                raise BadRequest(f"expected a JSON object, got {type(args).__name__}")
            answer = handler(args)
        except BadRequest as exc:
            result, answer = "bad_request", ({"Error": f"{verb}: {exc}"} if verb != "prioritize" else [])
        except Exception as exc:  # noqa: BLE001 - a bad pod must never take the extender down
            log.exception("event=extender_error verb=%s", verb)
            result, answer = "error", ({"Error": f"{verb}: internal error: {type(exc).__name__}: {exc}"} if verb != "prioritize" else [])
        if isinstance(answer, dict) and answer.get("Error"):
            result = "error" if result == "ok" else result
        if isinstance(answer, dict) and verb == "filter":
            extender.metrics.record_filter(answer)
        elif isinstance(answer, dict) and verb == "bind":
            extender.metrics.record_bind(answer)
        self._json(200, answer)
        extender.metrics.requests.labels(verb, result).inc()
        extender.metrics.latency.labels(verb).observe(time.perf_counter() - started)


class ExtenderHTTPServer(ThreadedHTTPServer):
    def __init__(self, extender: Extender, host: str = "127.0.0.1", port: int = 0, *, tls_cert: str | None = None, tls_key: str | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.extender = extender
        self.tls = bool(tls_cert)
        if tls_cert:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
            # The handshake happens on first read, in the connection's own thread: a stalled client
            # must not block the accept loop.
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{cast(str, self.server_address[0])}:{self.port}"

    def start(self) -> ExtenderHTTPServer:
        self._thread = threading.Thread(target=self.serve_forever, name="extender-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ExtenderHTTPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
