"""The dashboard's HTTP server: pages rendered with Jinja2, a JSON API, server-sent events, static files.

Read-only by construction: only GET and HEAD are answered (405 otherwise), the Kubernetes client only
lists and watches. Pages are whole HTML documents (they work without JavaScript); ``app.js`` listens
on ``/events`` and swaps in ``/fragment/<page>`` when the cluster changes, so the page stays live
without reloading. Bound to a loopback address, requests whose ``Host`` is not a loopback name are
refused (a web page elsewhere cannot reach the dashboard through DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import jinja2

from hami.errors import HamiError
from hami.serving import HardenedHandler, Limits, ThreadedHTTPServer, end_headers_with
from hami.ui.model import Filters
from hami.ui.watch import ClusterWatch

log = logging.getLogger(__name__)

PAGES = {"/": "overview", "/nodes": "nodes", "/pods": "pods", "/simulation": "simulation"}
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_SIZES = {"nodes": 25, "pods": 100}
"""Rows per page: a 500-node cluster's devices on one page are megabytes of HTML (docs/ui.md, bench/ui.py)."""
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
HEARTBEAT_SECONDS = 15.0
"""An SSE comment this often keeps proxies from closing a quiet stream."""


def _mib(value: Any) -> str:
    """MiB as people read them: 81920 → '80 GiB', 1536 → '1.5 GiB', 300 → '300 MiB'."""
    mib = float(value)
    if mib >= 1024:
        gib = mib / 1024
        return f"{gib:.0f} GiB" if gib == int(gib) or gib >= 100 else f"{gib:.1f} GiB"
    return f"{mib:.0f} MiB"


def _percent(ratio: Any) -> str:
    return f"{float(ratio) * 100:.0f} %"


def environment() -> jinja2.Environment:
    """Templates from the package (``hami/ui/templates``), every value HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("hami.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["mib"] = _mib
    env.filters["percent"] = _percent
    return env


def static_files() -> dict[str, bytes]:
    """Every file of ``hami/ui/static`` by name (the only files the server hands out)."""
    folder = resources.files("hami.ui").joinpath("static")
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file() and not entry.name.startswith(".")}


def load_simulation(text: str, source: str = "") -> list[dict[str, Any]]:
    """``hami simulate --json`` output (one JSON object per line) → the runs; a clear error for anything else."""
    runs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HamiError(f"{source or 'simulation'} line {number}: not JSON ({exc.msg}): {line[:80]!r}") from None
        if not isinstance(run, dict) or not isinstance(run.get("policy"), str) or not isinstance(run.get("alloc_at_arrived"), list):
            raise HamiError(
                f"{source or 'simulation'} line {number}: not a 'hami simulate --json' run "
                f"(needs policy and alloc_at_arrived): {line[:80]!r}"
            )
        runs.append(run)
    return runs


@attrs.define
class Dashboard:
    """What the handler serves: the cluster watch, the templates, the static files, an optional simulation."""

    watch: ClusterWatch
    simulation: list[dict[str, Any]] = attrs.field(factory=list)
    title: str = "hami"
    env: jinja2.Environment = attrs.field(factory=environment)
    static: dict[str, bytes] = attrs.field(factory=static_files)
    loopback: bool = True

    def page(self, name: str, query: Mapping[str, str], fragment: bool = False) -> str:
        filters = Filters.from_query(query)
        view = filters.apply(self.watch.view())
        pager = None
        if name in PAGE_SIZES:
            size, rows = PAGE_SIZES[name], view[name]
            pages = max(1, -(-len(rows) // size))
            try:
                number = min(max(int(query.get("page", "1")), 1), pages)
            except ValueError:
                number = 1
            view = {**view, name: rows[(number - 1) * size : number * size]}
            pager = {
                "page": number,
                "pages": pages,
                "total": len(rows),
                "first": (number - 1) * size + 1 if rows else 0,
                "last": min(number * size, len(rows)),
            }
        context = {
            "page": name,
            "view": view,
            "title": self.title,
            "query": filters.as_query(),
            "simulation": self.simulation,
            "pager": pager,
            "page_query": {**filters.as_query(), **({"page": str(pager["page"])} if pager else {})},
        }
        template = self.env.get_template(f"{name}.html")
        if fragment:
            return "".join(template.blocks["content"](template.new_context(context)))
        return template.render(context)


class Handler(HardenedHandler):
    """GET-only routes of the dashboard (see the module docstring)."""

    dashboard: Dashboard
    server_version = "hami-ui"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("event=ui_request client=%s " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        end_headers_with(self, b"" if self.command == "HEAD" else body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _refuse(self, status: int, message: str) -> None:
        self._send(status, message.encode() + b"\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD"} if status == 405 else None)

    def _host_allowed(self) -> bool:
        if not self.dashboard.loopback:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
        if name in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        path = url.path.rstrip("/") or "/"
        if not self._host_allowed():
            self._refuse(403, f"Host {self.headers.get('Host', '')!r} is not a loopback name; the dashboard listens on a loopback address")
            return
        dashboard = self.dashboard
        try:
            if path in PAGES:
                self._send(200, dashboard.page(PAGES[path], query).encode(), "text/html; charset=utf-8")
            elif path.startswith("/fragment/") and path.removeprefix("/fragment/") in PAGES.values():
                self._send(200, dashboard.page(path.removeprefix("/fragment/"), query, fragment=True).encode(), "text/html; charset=utf-8")
            elif path == "/api/view":
                view = Filters.from_query(query).apply(dashboard.watch.view())
                self._json(200, {**view, "build_seconds": round(dashboard.watch.build_seconds, 4)})
            elif path in ("/api/overview", "/api/nodes", "/api/pods"):
                self._json(200, Filters.from_query(query).apply(dashboard.watch.view())[path.removeprefix("/api/")])
            elif path == "/api/simulation":
                self._json(200, dashboard.simulation)
            elif path == "/events":
                self._events()
            elif path == "/healthz":
                self._send(200 if dashboard.watch.synced else 503, b"ok\n" if dashboard.watch.synced else b"not synced\n", "text/plain")
            elif path.startswith("/static/") and path.removeprefix("/static/") in dashboard.static:
                name = path.removeprefix("/static/")
                kind = STATIC_TYPES.get(name[name.rfind(".") :], "application/octet-stream")
                self._send(200, dashboard.static[name], kind)
            else:
                self._refuse(404, f"no page {url.path!r}")
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception:  # a rendering bug is a 500 for this request, not a dead thread
            log.exception("event=ui_render_failed path=%s", url.path)
            self._refuse(500, "the dashboard failed to render this page; see its log")

    do_HEAD = do_GET

    def _not_allowed(self) -> None:
        self._refuse(405, "the dashboard is read-only")

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def _events(self) -> None:
        """Server-sent events: ``version`` each time the cluster changes (at most twice a second)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        watch, seen = self.dashboard.watch, -1
        server: DashboardServer = self.server  # type: ignore[assignment]
        while not server.stopping.is_set():
            version = watch.wait_change(seen, HEARTBEAT_SECONDS)
            if version != seen:
                self.wfile.write(f"retry: 2000\nevent: version\ndata: {version}\n\n".encode())
                seen = version
            else:
                self.wfile.write(b": heartbeat\n\n")
            self.wfile.flush()
            server.stopping.wait(0.5)  # coalesce bursts of watch events into one page update


class DashboardServer(ThreadedHTTPServer):
    stopping: threading.Event


def serve(dashboard: Dashboard, host: str = "127.0.0.1", port: int = 8080) -> tuple[DashboardServer, threading.Thread]:
    """Start serving in a daemon thread; returns the server (``server_address`` has the bound port)."""
    handler = type("BoundHandler", (Handler,), {"dashboard": dashboard})
    try:
        server = DashboardServer((host, port), handler)
    except OSError as exc:
        raise HamiError(f"the dashboard cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.limits = Limits(idle_timeout=HEARTBEAT_SECONDS * 4)
    server.stopping = threading.Event()
    try:
        dashboard.loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        dashboard.loopback = host == "localhost"
    thread = threading.Thread(target=server.serve_forever, name="hami-ui", daemon=True)
    thread.start()
    return server, thread


def shutdown(server: DashboardServer, watch: ClusterWatch | None = None) -> None:
    """Stop serving; open event streams end within a second (``watch`` wakes them at once)."""
    server.stopping.set()
    if watch is not None:
        watch.wake()
    server.shutdown()
    server.server_close()
