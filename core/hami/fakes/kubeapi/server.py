"""HTTP front end: kube-apiserver's URL layout, verbs, status codes and watch streaming.

Runs on the standard library's ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1
keep-alive, chunked watch responses) so the unmodified ``kubernetes`` client, ``kubectl`` and any
HTTP code under test can talk to it. All state lives in :class:`~hami.fakes.kubeapi.store.Store`.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from hami.fakes.kubeapi import apply as ssa
from hami.fakes.kubeapi import errors, resources, tables
from hami.fakes.kubeapi.audit import RequestLog, RequestRecord, component_of, rbac_verb
from hami.fakes.kubeapi.errors import StatusError
from hami.fakes.kubeapi.faults import Faults
from hami.fakes.kubeapi.patch import PATCH_TYPES, normalize_content_type
from hami.fakes.kubeapi.resources import ResourceType
from hami.fakes.kubeapi.store import (
    Store,
    Watcher,
    WatchEvent,
    make_filter,
    status_success,
)
from hami.serving import ThreadedHTTPServer, end_headers_with

if TYPE_CHECKING:
    import kubernetes.client

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's request size limit
_TRUE = ("1", "true", "True", "TRUE")
# registries with ReturnDeletedObject (the others answer a DELETE with a Success Status)
_RETURNS_DELETED_OBJECT = frozenset({"pods", "resourcequotas", "namespaces"})


APPLY_PATCH = "application/apply-patch+yaml"
MAX_DEPTH = 64  # deeper documents are refused (400) instead of exhausting the recursion limit later


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise errors.bad_request(f"the request body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


class _Route:
    """What a resource URL names."""

    def __init__(
        self,
        info: ResourceType | None,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
        watch: bool = False,
        bindings: bool = False,
    ) -> None:
        self.info = info
        self.namespace = namespace
        self.name = name
        self.subresource = subresource
        self.watch = watch
        self.bindings = bindings  # POST /api/v1/namespaces/{ns}/bindings


def _split(tail: list[str]) -> tuple[str | None, str | None]:
    """``[name[, subresource]]`` of a resource path."""
    return (tail[0] if tail else None), (tail[1] if len(tail) > 1 else None)


def _route(group: str, version: str, rest: list[str]) -> _Route:
    watch = False
    if rest and rest[0] == "watch":
        watch, rest = True, rest[1:]
    if not rest:
        raise errors.path_not_found()
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, plural, tail = rest[1], rest[2], rest[3:]
        if group == "" and plural == "bindings" and not tail:
            return _Route(None, namespace, bindings=True)
        info = resources.lookup(group, version, plural)
        if info is None or not info.namespaced or len(tail) > 2:
            # /api/v1/namespaces/{name}/status is the namespace's own subresource
            if group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"):
                return _Route(resources.lookup("", "v1", "namespaces"), None, rest[1], rest[2], watch)
            raise errors.path_not_found()
        name, sub = _split(tail)
        return _Route(info, namespace, name, sub, watch)
    info = resources.lookup(group, version, rest[0])
    tail = rest[1:]
    if info is None or len(tail) > 2 or (info.namespaced and tail):
        raise errors.path_not_found()
    name, sub = _split(tail)
    return _Route(info, None, name, sub, watch)


_IDLE_CHECK = 2.0
"""Seconds an idle watch stream waits before checking that its client is still there (hundreds of
idle streams in a large sandbox: each check is a thread switch)."""


class _HTTPServer(ThreadedHTTPServer):
    request_queue_size = 1024
    """The listen backlog (socketserver's default is 5): while the accept loop waits for the
    interpreter lock, a 500-node sandbox's clients connecting at once overflowed 5, the kernel
    dropped their SYNs and each connect timed out after 5 s (255 urllib3 retries in a 500x5000 run,
    issue 29)."""

    def __init__(self, addr: tuple[str, int], api: KubeAPIServer) -> None:
        self.api = api
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.accepted = 0
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # watch events go out one chunk a write; don't wait for ACKs
    server: _HTTPServer
    server_version = "hami-kubeapi"
    _warnings: list[str]  # Warning headers for the answer being built
    _watch_table: tuple[ResourceType, str, str] | None = None  # a watch answered as Table rows

    # ------------------------------------------------------------ plumbing

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)
            self.server.accepted += 1

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    self.close_connection = True
                    raise errors.bad_request("malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    raise StatusError(413, "RequestEntityTooLarge", "the request body is too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise errors.bad_request("invalid Content-Length") from None
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise StatusError(413, "RequestEntityTooLarge", "the request body is too large")
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        for warning in self._warnings:
            self.send_header("Warning", '299 - "' + warning.replace('"', '\\"') + '"')
        self._warnings = []
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache, private")
        end_headers_with(self, body if self.command != "HEAD" else b"")  # one write per answer

    def _send_json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj, separators=(",", ":")).encode())

    def _dispatch(self, method: str) -> None:
        api = self.server.api
        self._warnings = []
        started = time.monotonic()
        code = 500
        try:
            try:
                body = self._read_body()
            except StatusError:
                raise
            except (OSError, ValueError):
                self.close_connection = True
                return
            api.faults.check(method, urlsplit(self.path).path)
            code = self._handle(method, body)
        except StatusError as exc:
            code = exc.code
            self._send_json(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        except Exception as exc:  # never let a bug kill the connection silently
            log.exception("internal error serving %s %s", method, self.path)
            code = 500
            try:
                self._send_json(500, StatusError(500, "InternalError", f"internal error: {exc!r}", {}).status())
            except OSError:
                self.close_connection = True
        finally:
            log.debug("%s %s -> %s (%.1f ms)", method, self.path, code, (time.monotonic() - started) * 1000)

    # ------------------------------------------------------------ request handling

    def _handle(self, method: str, body: bytes) -> int:
        url = urlsplit(self.path)
        segments = [unquote(s) for s in url.path.split("/") if s]
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if segments and segments[0] == "openapi":
            return self._openapi(method, segments[1:])
        meta = self._meta_document(segments)
        if meta is not None:
            if method not in ("GET", "HEAD"):
                raise errors.method_not_allowed()
            if isinstance(meta, bytes):
                self._send(200, meta, "text/plain; charset=utf-8")
            else:
                self._send_json(200, meta)
            return 200
        if segments[:2] == ["api", "v1"]:
            route = _route("", "v1", segments[2:])
        elif len(segments) >= 3 and segments[0] == "apis":
            route = _route(segments[1], segments[2], segments[3:])
        else:
            raise errors.path_not_found()
        self._log_request(method, route, query)
        if query.get("dryRun"):
            raise errors.bad_request("dryRun is not supported by the hami in-memory API server")
        if route.bindings:
            if method != "POST":
                raise errors.method_not_allowed()
            return self._bind(route.namespace or "default", None, body)
        return self._resource(method, route, query, body)

    def _log_request(self, method: str, route: _Route, query: dict[str, str]) -> None:
        """Record the request in RBAC's terms when the server has a request log (tests of RBAC rules)."""
        log_ = self.server.api.request_log
        if log_ is None:
            return
        watch = route.watch or query.get("watch") in _TRUE
        if route.bindings:
            group, resource = "", "bindings"
        else:
            assert route.info is not None
            group, resource = route.info.group, route.info.plural
        log_.record(
            RequestRecord(
                component_of(self.headers.get("Authorization")),
                rbac_verb(method, route.name is not None, watch),
                group,
                resource,
                route.subresource or "",
                route.namespace or "",
                route.name or "",
            )
        )

    def _meta_document(self, segments: list[str]) -> dict[str, Any] | bytes | None:
        n = len(segments)
        if n == 0:
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]
            paths += [f"/apis/{g}" for g in resources.groups()]
            paths += [f"/apis/{g}/{v}" for g, vs in resources.groups().items() for v in vs]
            return {"paths": sorted(paths)}
        head = segments[0]
        if n == 1 and head in ("healthz", "livez", "readyz"):
            return b"ok"
        if n == 1 and head == "version":
            return resources.version_info()
        if n == 1 and head == "api":
            return resources.api_versions(f"{self.server.api.host}:{self.server.api.port}")
        if n == 2 and head == "api":
            doc = resources.resource_list("", segments[1])
            if doc is None:
                raise errors.path_not_found()
            return doc
        if n == 1 and head == "apis":
            return resources.api_group_list()
        if n == 2 and head == "apis":
            doc = resources.api_group(segments[1])
            if doc is None:
                raise errors.path_not_found()
            return doc
        if n == 3 and head == "apis":
            doc = resources.resource_list(segments[1], segments[2])
            if doc is None:
                raise errors.path_not_found()
            return doc
        return None

    def _openapi(self, method: str, rest: list[str]) -> int:
        """``/openapi/v2`` (JSON; 406 to a client that accepts only protobuf) and ``/openapi/v3[/<gv>]``."""
        from hami.fakes.kubeapi import openapi

        if method not in ("GET", "HEAD"):
            raise errors.method_not_allowed()
        if rest == ["v2"]:
            try:
                accepted = tables.parse_accept(self.headers.get("Accept"))
            except ValueError as exc:
                raise StatusError(406, "NotAcceptable", str(exc)) from None
            if accepted and not any(m.mime in ("application/json", "application/*", "*/*") for m in accepted):
                raise StatusError(
                    406,
                    "NotAcceptable",
                    f"the OpenAPI v2 document is served as application/json only (asked for {self.headers.get('Accept')!r})",
                )
            self._send(200, openapi.v2_document())
            return 200
        if rest == ["v3"]:
            self._send(200, openapi.v3_root())
            return 200
        doc = None
        if len(rest) == 3 and rest[:2] == ["v3", "api"]:
            doc = openapi.v3_document("", rest[2])
        elif len(rest) == 4 and rest[:2] == ["v3", "apis"]:
            doc = openapi.v3_document(rest[2], rest[3])
        if doc is None:
            raise errors.path_not_found()
        self._send(200, doc)
        return 200

    def _table(self, query: dict[str, str]) -> str | None:
        """The Table version the request asks for (``Accept: …;as=Table;g=meta.k8s.io``), or None."""
        return tables.wants_table(self.headers.get("Accept"))

    def _manager(self, query: dict[str, str]) -> str:
        return query.get("fieldManager") or ssa.manager_from_user_agent(self.headers.get("User-Agent"))

    def _validate_fields(self, info: ResourceType, obj: Any, query: dict[str, str]) -> None:
        """``fieldValidation=Strict`` refuses unknown fields (400), ``Warn`` sends a Warning header;
        without the parameter nothing is checked (the schema is loaded only for clients that ask)."""
        mode = query.get("fieldValidation")
        if not mode or mode == "Ignore" or not isinstance(obj, dict):
            if mode not in (None, "", "Ignore", "Warn", "Strict"):
                raise errors.bad_request(f"fieldValidation must be one of Ignore, Warn or Strict, got {mode!r}")
            return
        if mode not in ("Warn", "Strict"):
            raise errors.bad_request(f"fieldValidation must be one of Ignore, Warn or Strict, got {mode!r}")
        from hami.fakes.kubeapi import openapi

        unknown = openapi.unknown_fields(info, obj)
        if not unknown:
            return
        text = ", ".join(f'unknown field "{f}"' for f in unknown)
        if mode == "Strict":
            raise errors.bad_request(
                f'{info.kind} in version "{info.version}" cannot be handled as a {info.kind}: strict decoding error: {text}'
            )
        self._warnings.extend(f'unknown field "{f}"' for f in unknown)

    def _decode(self, body: bytes, *, patch: bool = False) -> Any:
        if not body.strip():
            raise errors.bad_request("the request body is empty")
        ctype = normalize_content_type(self.headers.get("Content-Type"))
        try:
            if ctype in ("application/yaml", "text/yaml", "application/x-yaml") and not patch:
                decoded = yaml.safe_load(body.decode("utf-8"))
                json.dumps(decoded, allow_nan=False)  # only JSON-representable YAML is accepted
            elif ctype and not patch and ctype != "application/json" and not ctype.endswith("+json"):
                raise StatusError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json, application/yaml (got {ctype!r})",
                )
            else:
                decoded = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
            _check_depth(decoded)
            return decoded
        except StatusError:
            raise
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"couldn't decode the request body: {exc}") from None

    def _decode_yaml(self, body: bytes) -> Any:
        """An apply configuration: YAML (JSON is YAML too)."""
        if not body.strip():
            raise errors.bad_request("the request body is empty")
        try:
            decoded = yaml.safe_load(body.decode("utf-8"))
            json.dumps(decoded, allow_nan=False)
        except (ValueError, TypeError, UnicodeDecodeError, RecursionError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"couldn't decode the apply configuration: {exc}") from None
        _check_depth(decoded)
        return decoded

    def _int_param(self, query: dict[str, str], name: str) -> int | None:
        raw = query.get(name)
        if raw in (None, ""):
            return None
        try:
            value = int(raw)
        except ValueError:
            raise errors.bad_request(f"invalid value for {name}: {raw!r}: must be an integer") from None
        if value < 0:
            raise errors.bad_request(f"invalid value for {name}: {raw!r}: must be non-negative")
        return value

    def _resource(self, method: str, route: _Route, query: dict[str, str], body: bytes) -> int:
        api = self.server.api
        store = api.store
        info = route.info
        assert info is not None
        ns = route.namespace
        if route.name is None:  # collection
            if method == "GET":
                limit = self._int_param(query, "limit")
                timeout = self._int_param(query, "timeoutSeconds")
                if route.watch or query.get("watch") in _TRUE:
                    return self._watch(info, ns, query, timeout)
                table = self._table(query)
                listed = store.list(info, ns, query.get("labelSelector"), query.get("fieldSelector"), limit, query.get("continue"))
                if table:
                    self._send_json(
                        200,
                        tables.table(
                            info,
                            listed["items"],
                            version=table,
                            include_object=query.get("includeObject") or "Metadata",
                            list_meta=listed["metadata"],
                        ),
                    )
                else:
                    self._send_json(200, listed)
                return 200
            if route.watch:
                raise errors.method_not_allowed()
            if method == "POST":
                if ns is None and info.namespaced:
                    raise errors.method_not_allowed()
                obj = self._decode(body)
                self._validate_fields(info, obj, query)
                self._send_json(201, store.create(info, obj, ns))
                return 201
            if method == "DELETE":
                if ns is None and info.namespaced:
                    raise errors.method_not_allowed()
                deleted = store.delete_collection(info, ns, query.get("labelSelector"), query.get("fieldSelector"))
                self._send_json(
                    200,
                    {
                        "kind": f"{info.kind}List",
                        "apiVersion": info.api_version,
                        "metadata": {"resourceVersion": str(store.resource_version)},
                        "items": deleted,
                    },
                )
                return 200
            raise errors.method_not_allowed()
        name = route.name
        if route.watch:
            if method != "GET":
                raise errors.method_not_allowed()
            query = dict(query, fieldSelector=",".join(s for s in (query.get("fieldSelector"), f"metadata.name={name}") if s))
            return self._watch(info, ns, query, self._int_param(query, "timeoutSeconds"))
        sub = route.subresource
        if sub == "binding" and info.key == "pods":
            if method != "POST":
                raise errors.method_not_allowed()
            return self._bind(ns or "default", name, body)
        if sub not in (None, "status") or (sub == "status" and not info.status_subresource):
            raise errors.path_not_found()
        if method in ("GET", "HEAD"):
            table = self._table(query)
            obj = store.get(info, name, ns)
            if table:
                self._send_json(
                    200,
                    tables.table(
                        info,
                        [obj],
                        version=table,
                        include_object=query.get("includeObject") or "Metadata",
                        list_meta={"resourceVersion": obj["metadata"]["resourceVersion"]},
                    ),
                )
            else:
                self._send_json(200, obj)
            return 200
        if method == "PUT":
            obj = self._decode(body)
            self._validate_fields(info, obj, query)
            self._send_json(200, store.replace(info, obj, ns, name, sub, self._manager(query)))
            return 200
        if method == "PATCH":
            ctype = normalize_content_type(self.headers.get("Content-Type"))
            if ctype == APPLY_PATCH:
                config = self._decode_yaml(body)
                self._validate_fields(info, config, query)
                force = query.get("force") in _TRUE
                obj, created = store.apply(info, name, config, query.get("fieldManager") or "", force, ns, sub)
                self._send_json(201 if created else 200, obj)
                return 201 if created else 200
            if query.get("force"):
                raise errors.bad_request("force is only valid for apply (application/apply-patch+yaml) requests")
            if ctype not in PATCH_TYPES:
                raise errors.unsupported_media_type(ctype)
            patch = self._decode(body, patch=True)
            if ctype != "application/json-patch+json":
                self._validate_fields(info, patch, query)
            self._send_json(200, store.patch(info, name, patch, ctype, ns, sub, self._manager(query)))
            return 200
        if method == "DELETE" and sub is None:
            options = self._decode(body) if body.strip() else {}
            if not isinstance(options, dict):
                raise errors.bad_request("DeleteOptions must be a JSON object")
            pre = options.get("preconditions") or {}
            if not isinstance(pre, dict):
                raise errors.bad_request("preconditions must be a JSON object")
            result = store.delete(info, name, ns, pre)
            still_there = bool(result["metadata"].get("finalizers"))  # only marked for deletion
            if still_there or info.key in _RETURNS_DELETED_OBJECT:
                self._send_json(200, result)
            else:
                self._send_json(200, status_success(info, result))
            return 200
        raise errors.method_not_allowed()

    def _bind(self, namespace: str, name: str | None, body: bytes) -> int:
        binding = self._decode(body)
        if not isinstance(binding, dict):
            raise errors.bad_request("the Binding must be a JSON object")
        if binding.get("kind") not in (None, "", "Binding"):
            raise errors.bad_request(f"the kind in the data ({binding.get('kind')}) does not match the expected kind (Binding)")
        meta = binding.get("metadata") or {}
        target = binding.get("target") or {}
        if not isinstance(meta, dict) or not isinstance(target, dict):
            raise errors.bad_request("Binding metadata and target must be JSON objects")
        pod = name or meta.get("name") or ""
        if name and meta.get("name") not in (None, "", name):
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        if target.get("kind") not in (None, "", "Node"):
            raise errors.invalid(
                "Binding", "", pod, [("target.kind", "FieldValueNotSupported", f'Unsupported value: "{target.get("kind")}"')]
            )
        node = target.get("name")
        if not isinstance(node, str):
            node = ""
        annotations = meta.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            raise errors.bad_request(f"Binding metadata.annotations must map strings to strings, got {annotations!r:.200}")
        self.server.api.store.bind(namespace, pod, node, meta.get("uid"), annotations)
        self._send_json(201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
        return 201

    # ------------------------------------------------------------ watch

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        as_table = self._watch_table
        if as_table is not None and kind in ("ADDED", "MODIFIED", "DELETED"):
            info, version, include = as_table
            obj = tables.table(
                info,
                [obj],
                version=version,
                include_object=include,
                list_meta={"resourceVersion": obj["metadata"].get("resourceVersion", "")},
            )
        self._write_chunk(json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n")

    def _watch(self, info: ResourceType, namespace: str | None, query: dict[str, str], timeout: int | None) -> int:
        api = self.server.api
        flt = make_filter(info, namespace if info.namespaced else None, query.get("labelSelector"), query.get("fieldSelector"))
        version = self._table(query)
        include = query.get("includeObject") or "Metadata"
        if version:
            tables.table(info, [], include_object=include)  # a bad includeObject is a 400 before the stream
        self._watch_table = (info, version, include) if version else None
        bookmarks = query.get("allowWatchBookmarks") in _TRUE
        send_initial = query.get("sendInitialEvents") in _TRUE
        expired: StatusError | None = None
        watcher: Watcher | None = None
        try:
            watcher, initial, start = api.store.open_watch(info, flt, query.get("resourceVersion"), send_initial)
        except StatusError as exc:
            if exc.code != 410:
                raise
            expired = exc
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            if expired is not None or watcher is None:
                assert expired is not None
                self._event("ERROR", expired.status())
                self._write_chunk(b"")
                return 200
            self._stream(info, watcher, initial, start, timeout, bookmarks, send_initial)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            if watcher is not None:
                api.store.close_watch(watcher)
        return 200

    def _client_gone(self) -> bool:
        """Whether the client closed its end (readable with nothing to read) while the stream idled."""
        try:
            poller = select.poll()  # not select.select: it fails on descriptors past 1024 (a 200-node sandbox has them)
            poller.register(self.connection, select.POLLIN)
            return bool(poller.poll(0)) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _bookmark(self, info: ResourceType, rv: int, initial_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        self._event("BOOKMARK", {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta})

    def _stream(
        self,
        info: ResourceType,
        watcher: Watcher,
        initial: list[tuple[str, dict[str, Any]]],
        start: int,
        timeout: int | None,
        bookmarks: bool,
        send_initial: bool,
    ) -> None:
        api = self.server.api
        for kind, obj in initial:
            self._event(kind, obj)
        if send_initial and bookmarks:
            self._bookmark(info, start, initial_end=True)
        deadline = time.monotonic() + timeout if timeout else None
        interval = api.bookmark_interval
        next_bookmark = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            waits = [_IDLE_CHECK]
            if deadline is not None:
                waits.append(deadline - now)
            if bookmarks:
                waits.append(max(0.0, next_bookmark - now))
            item: WatchEvent | bool | None
            try:
                item = watcher.queue.get(timeout=max(0.001, min(waits)))
            except queue.Empty:
                item = False
            if item is None:  # closed: server stopping or cut_watches()
                if watcher.abrupt:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                break
            if item is False and self._client_gone():
                self.close_connection = True
                return
            if isinstance(item, WatchEvent):
                translated = watcher.filter.translate(item)
                if translated:
                    self._event(translated, item.obj)
            if bookmarks and time.monotonic() >= next_bookmark:
                rv = api.store.bookmark_version(watcher)
                if rv is not None:
                    self._bookmark(info, rv)
                    next_bookmark = time.monotonic() + interval
        self._write_chunk(b"")


class KubeAPIServer:
    """An in-memory Kubernetes API server on a real HTTP port, for tests.

    ``KubeAPIServer().start()`` (or ``with KubeAPIServer() as srv:``), then point any client at
    ``srv.url`` / ``srv.api_client()`` / ``srv.write_kubeconfig(path)``. ``srv.store`` gives direct
    in-process access, ``srv.faults`` injects failures.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        history_size: int = 1000,
        bookmark_interval: float = 5.0,
        store: Store | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.bookmark_interval = bookmark_interval
        self.store = store if store is not None else Store(history_size)
        self.faults = Faults(self.store.close_watchers)
        self.request_log: RequestLog | None = None
        """Set to a :class:`~hami.fakes.kubeapi.audit.RequestLog` to record every request (RBAC tests)."""
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> KubeAPIServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=f"kubeapi-{self.port}", daemon=True
        )
        self._thread.start()
        log.info("in-memory API server listening on %s", self.url)
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        self.store.close_watchers()
        with httpd.connections_lock:
            conns = list(httpd.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        log.info("in-memory API server on port %d stopped", self.port)

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted since start: with keep-alive, clients should open few (tests of reuse)."""
        httpd = self._httpd
        if httpd is None:
            return 0
        with httpd.connections_lock:
            return httpd.accepted

    @property
    def url(self) -> str:
        if self._httpd is None and self.port == 0:
            raise RuntimeError("the server has not been started")
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------ clients

    def api_client(self, pool_size: int | None = None) -> kubernetes.client.ApiClient:
        """A fresh ``kubernetes.client.ApiClient`` pointed at this server.

        ``pool_size``: connections kept for reuse; size it to the threads sharing the client (the
        default, 5 per CPU, warns "Connection pool is full" and reconnects when more share it)."""
        from kubernetes import client

        config = client.Configuration(host=self.url)
        if pool_size is not None:
            config.connection_pool_maxsize = pool_size
        config.api_key = {"BearerToken": "hami-kubeapi"}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(config)

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        name = "hami-kubeapi"
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": name, "user": {"token": "hami-kubeapi"}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
            "current-context": name,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> str | os.PathLike[str]:
        """Write a kubeconfig for this server (usable by kubectl and ``load_kube_config``); returns ``path``."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        return path


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    kubeconfig: str | None = None,
    on_ready: Callable[[KubeAPIServer], None] | None = None,
) -> None:
    """Run a server until KeyboardInterrupt; writes ``kubeconfig`` if given, then calls ``on_ready``."""
    srv = KubeAPIServer(host, port).start()
    try:
        if kubeconfig:
            srv.write_kubeconfig(kubeconfig)
            log.info("kubeconfig written to %s", kubeconfig)
        if on_ready is not None:
            on_ready(srv)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        srv.stop()
