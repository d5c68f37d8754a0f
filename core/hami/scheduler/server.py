"""The extender's HTTP servers: kube-scheduler's filter / prioritize / bind verbs, the admission
webhook, health and metrics.

Two listeners, as HAMi deploys its extender beside kube-scheduler in one pod (charts/hami/templates/
scheduler/configmapnew.yaml: kube-scheduler calls it on 127.0.0.1): the *extender listener* serves
the verbs on the pod's loopback (or, exposed, only to clients with a certificate from ``client_ca``);
the *webhook listener* serves ``/webhook`` to the API server and refuses the verbs. Both serve
``/healthz``, ``/readyz`` and ``/metrics``.

Requests only *name* the pod: filter, prioritize and bind decide on the API server's copy from the
informer (:mod:`hami.scheduler.informed`), never on the body. Envelopes are PascalCase as
kube-scheduler sends them (Go structs without json tags); any key case is accepted. A bad request
never crashes the server: non-JSON is a 400, an over-long body a 413, anything else a 200 whose
``Error`` names what was wrong, as kube-scheduler expects.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hami.scheduler.affinity import node_refusal
from hami.scheduler.core import Scheduler
from hami.scheduler.informed import Informed, UnknownPod
from hami.scheduler.metrics import SchedulerMetrics
from hami.serving import BodyError, HardenedHandler, Limits, ReloadingTLS, ThreadedHTTPServer, end_headers_with

log = logging.getLogger(__name__)

WebhookHandler = Callable[[bytes], tuple[int, bytes]]
VERBS = frozenset({"filter", "prioritize", "bind", "echo"})
POD_WAIT = 2.0
"""Seconds a verb waits for the informer to deliver a pod it does not know yet."""


class BadRequest(Exception):
    """The body is not what the verb needs; the message goes back to the caller."""


def field(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]`` in any letter case (kube-scheduler writes PascalCase, people write camelCase)."""
    if name in obj:
        return obj[name]
    lowered = name.lower()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == lowered), None)


def _type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_object(value: Any, path: str, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{path} must be an object, got {_type(value)}")
    return value


def _check_strings(value: Any, path: str) -> None:
    for key, item in _check_object(value, path).items():
        if not isinstance(item, str):
            raise BadRequest(f"{path}[{key!r}] must be a string, got {_type(item)}")


def check_pod(pod: Any) -> tuple[str, str, str]:
    """The Pod's namespace, name and UID after checking the types of the fields hami reads; raises
    BadRequest naming the first wrongly typed field (``Pod.spec.containers[0].resources``…)."""
    pod = _check_object(pod, "Pod", required=True)
    meta = _check_object(pod.get("metadata"), "Pod.metadata", required=True)
    for key in ("name", "namespace", "uid"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise BadRequest(f"Pod.metadata.{key} must be a string, got {_type(meta[key])}")
    if not meta.get("name"):
        raise BadRequest("Pod.metadata.name is missing")
    _check_strings(meta.get("annotations"), "Pod.metadata.annotations")
    _check_strings(meta.get("labels"), "Pod.metadata.labels")
    spec = _check_object(pod.get("spec"), "Pod.spec")
    _check_strings(spec.get("nodeSelector"), "Pod.spec.nodeSelector")
    _check_object(spec.get("affinity"), "Pod.spec.affinity")
    for group in ("initContainers", "containers"):
        containers = spec.get(group)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise BadRequest(f"Pod.spec.{group} must be a list, got {_type(containers)}")
        for i, container in enumerate(containers):
            container = _check_object(container, f"Pod.spec.{group}[{i}]", required=True)
            if container.get("name") is not None and not isinstance(container["name"], str):
                raise BadRequest(f"Pod.spec.{group}[{i}].name must be a string, got {_type(container['name'])}")
            resources = _check_object(container.get("resources"), f"Pod.spec.{group}[{i}].resources")
            for kind in ("limits", "requests"):
                for name, quantity in _check_object(resources.get(kind), f"Pod.spec.{group}[{i}].resources.{kind}").items():
                    if not isinstance(quantity, (str, int, float)) or isinstance(quantity, bool):
                        raise BadRequest(f"Pod.spec.{group}[{i}].resources.{kind}[{name!r}] must be a quantity, got {_type(quantity)}")
    return meta.get("namespace") or "default", meta["name"], meta.get("uid") or ""


def _node_names(args: Mapping[str, Any]) -> tuple[list[str], list[Mapping[str, Any]] | None]:
    names = field(args, "NodeNames")
    if names is not None:
        if not isinstance(names, list) or not set(map(type, names)) <= {str}:  # one C-level pass: thousands of names per request
            raise BadRequest("NodeNames must be a list of node names")
        return names, None
    nodes = field(args, "Nodes")
    items = (field(nodes, "items") if isinstance(nodes, dict) else None) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadRequest("Nodes.items must be a list of Node objects")
    names = []
    for i, item in enumerate(items):
        name = _check_object(item.get("metadata"), f"Nodes.items[{i}].metadata").get("name") or ""
        if not isinstance(name, str):
            raise BadRequest(f"Nodes.items[{i}].metadata.name must be a string, got {_type(name)}")
        names.append(name)
    return names, items


class Extender:
    """The verbs as functions of parsed JSON, so tests and the sandbox can call them without HTTP.

    ``pods`` is the informer's view the verbs decide on. Without one the request body is used, which
    is allowed only for a scheduler that writes nothing (no API server): an allocation is never signed
    for a body alone."""

    def __init__(
        self,
        scheduler: Scheduler,
        metrics: SchedulerMetrics | None = None,
        webhook: WebhookHandler | None = None,
        ready: Callable[[], bool] = lambda: True,
        leading: Callable[[], bool] = lambda: True,
        pods: Informed | None = None,
        pod_wait: float = POD_WAIT,
    ) -> None:
        if pods is None and scheduler.core_v1 is not None:
            raise ValueError("an extender whose scheduler writes to the API server needs the informer's pods (pods=cache.informed)")
        self.scheduler = scheduler
        if pods is not None and scheduler.informed is None:
            scheduler.informed = pods  # the node lock is taken in one request when the informer saw it free
        self.metrics = metrics or SchedulerMetrics(scheduler.state)
        self.webhook = webhook
        self.synced = ready
        self.leading = leading
        self.pods = pods
        self.pod_wait = pod_wait

    def ready(self) -> bool:
        return self.synced() and self.leading()

    def _check_leader(self) -> None:
        if not self.leading():
            raise BadRequest("this replica is not the leader; kube-scheduler should reach the leader through the Service")

    def _pod(self, body: Any, names: tuple[str, str, str]) -> Mapping[str, Any]:
        """The API server's copy of the pod the request names (the body itself without an informer)."""
        if self.pods is None:
            return cast("Mapping[str, Any]", body)
        try:
            return self.pods.pod(*names, wait=self.pod_wait)
        except UnknownPod as exc:
            raise BadRequest(str(exc)) from None

    def filter(self, args: Mapping[str, Any]) -> dict[str, Any]:
        self._check_leader()
        body = field(args, "Pod")
        if body is None:
            raise BadRequest("ExtenderArgs has no Pod")
        identity = check_pod(body)
        names, items = _node_names(args)
        pod = self._pod(body, identity)  # node objects in the body are only echoed: the cache has the nodes
        outcome = self.scheduler.filter(pod, names)
        if not outcome.managed:
            nodes = {"items": items} if items is not None else None
            return {"Nodes": nodes, "NodeNames": names if items is None else None, "FailedNodes": {}, "Error": ""}
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
        body = field(args, "Pod")
        if body is None:
            raise BadRequest("ExtenderArgs has no Pod")
        identity = check_pod(body)
        names, _ = _node_names(args)
        try:  # scores sign nothing: the informer's copy when it has one, else the body (no waiting)
            pod = self.pods.pod(*identity) if self.pods is not None else body
        except UnknownPod:
            pod = body
        return [{"Host": name, "Score": score} for name, score in self.scheduler.prioritize(pod, names)]

    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        self._check_leader()
        values = {k: field(args, k) for k in ("PodName", "PodNamespace", "PodUID", "Node")}
        missing = [k for k in ("PodName", "PodNamespace", "Node") if not isinstance(values[k], str) or not values[k]]
        if missing:
            return {"Error": f"ExtenderBindingArgs is missing {', '.join(missing)}"}
        if values["PodUID"] is not None and not isinstance(values["PodUID"], str):
            return {"Error": f"ExtenderBindingArgs.PodUID must be a string, got {_type(values['PodUID'])}"}
        namespace, name, uid, node = values["PodNamespace"], values["PodName"], values["PodUID"] or "", values["Node"]
        if self.pods is not None:  # checked before the node lock is taken: a refusal holds nothing
            refusal = self._bind_refusal(namespace, name, uid, node)
            if refusal:
                log.warning("event=bind_refused pod=%s/%s node=%s reason=%r", namespace, name, node, refusal)
                return {"Error": refusal}
        return {"Error": self.scheduler.bind(namespace, name, uid, node)}

    def _bind_refusal(self, namespace: str, name: str, uid: str, node: str) -> str:
        """Why the pod may not be bound to ``node`` by the API server's copies of both ('' if it may)."""
        assert self.pods is not None
        try:
            pod = self.pods.pod(namespace, name, uid, wait=self.pod_wait)
        except UnknownPod as exc:
            return str(exc)
        labels = self.pods.node_labels(node)
        if labels is None:
            return f"pod {namespace}/{name}: node {node!r} is not a node the scheduler's informer knows"
        refusal = node_refusal(pod, node, labels)
        if refusal:
            return f"pod {namespace}/{name}: {refusal}"
        held = self.scheduler.state.pods.get(uid or str((pod.get("metadata") or {}).get("uid") or ""))
        if held is not None and held.node != node:
            return f"pod {namespace}/{name}: its devices were reserved on node {held.node!r}, not {node!r}"
        return ""


class _Handler(HardenedHandler):
    disable_nagle_algorithm = True  # each answer is one write (end_headers_with); no reason to hold small packets back
    server: ExtenderHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=http %s", format % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        end_headers_with(self, body)  # one write: a separate body write could wait 40 ms for a delayed ACK

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value, separators=(",", ":")).encode())

    def do_GET(self) -> None:
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

    def do_POST(self) -> None:
        extender = self.server.extender
        verb = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        started = time.perf_counter()
        try:
            body = self.body()
        except BodyError as exc:
            self.close_connection = True
            self._json(exc.status, {"Error": str(exc)})
            return
        if verb == "webhook":
            if extender.webhook is None or not self.server.serve_webhook:
                self._json(404, {"Error": "this listener serves no admission webhook"})
                return
            status, payload = extender.webhook(body)
            self._send(status, payload)
            return
        if verb in VERBS and not self.server.serve_verbs:
            where = "kube-scheduler reaches the extender on its own listener (--extender-bind)"
            self._json(404, {"Error": f"/{verb} is not served on this listener: {where}"})
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
        except Exception as exc:  # a bad pod must never take the extender down
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
    """One listener. ``serve_verbs``: filter/prioritize/bind (kube-scheduler's); ``serve_webhook``:
    ``POST /webhook`` (the API server's). With ``tls_cert`` it speaks HTTPS, the files reloaded when
    they change; with ``client_ca`` a client must present a certificate that CA signed."""

    def __init__(
        self,
        extender: Extender,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        client_ca: str | None = None,
        serve_verbs: bool = True,
        serve_webhook: bool = True,
        limits: Limits | None = None,
    ) -> None:
        if client_ca and not tls_cert:
            raise ValueError("a client CA needs TLS: give the server certificate and key too")
        self.tls = ReloadingTLS(tls_cert, tls_key or tls_cert, client_ca) if tls_cert else None
        self.limits = limits or Limits()
        super().__init__((host, port), _Handler)
        self.extender = extender
        self.serve_verbs = serve_verbs
        self.serve_webhook = serve_webhook
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
