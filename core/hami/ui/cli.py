"""``hami ui``: the read-only web dashboard, served from the API server's state."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from hami.ui.server import Dashboard, DashboardServer


def start_dashboard(
    api: Any,
    kinds: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    simulation: list[dict[str, Any]] | None = None,
    events: bool = True,
    title: str = "hami",
) -> tuple[Dashboard, DashboardServer]:
    """Watch the cluster through ``api`` (a kubernetes ``ApiClient``) and serve the dashboard; returns both."""
    from hami.ui.server import Dashboard, serve
    from hami.ui.watch import ClusterWatch

    watch = ClusterWatch(api, kinds, events=events).start()
    dashboard = Dashboard(watch, simulation=list(simulation or []), title=title)
    try:
        server, _ = serve(dashboard, host, port)
    except BaseException:
        watch.stop()
        raise
    return dashboard, server


def stop_dashboard(dashboard: Dashboard, server: DashboardServer) -> None:
    from hami.ui.server import shutdown

    shutdown(server, dashboard.watch)
    dashboard.watch.stop()


def url_of(server: DashboardServer) -> str:
    host, port = server.server_address[:2]
    shown = host if isinstance(host, str) else host.decode()
    return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"


@click.command("ui")
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    envvar="KUBECONFIG",
    help="Default: $KUBECONFIG, else the in-cluster service account.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (in a pod: 0.0.0.0 behind a Service).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
@click.option(
    "--simulation", "simulation_path", type=click.Path(exists=True, dir_okay=False), help="A 'hami simulate --json' output to plot."
)
@click.option(
    "--events/--no-events",
    default=True,
    show_default=True,
    help="Also watch pod events for the extender's reasons (needs list/watch on events).",
)
def ui_command(kubeconfig: str | None, host: str, port: int, simulation_path: str | None, events: bool) -> None:
    """Serve a read-only web dashboard of the cluster's devices, shares and Pending reasons."""
    from hami.errors import HamiError
    from hami.kube import api_client
    from hami.plugin.manager import load_backends
    from hami.ui.server import load_simulation

    simulation = load_simulation(Path(simulation_path).read_text(), simulation_path) if simulation_path else []
    manager = load_backends()
    if not manager.kinds:
        click.echo("warning: no hami backend is installed here, so no device annotation can be read (pip install hami-<vendor>)", err=True)
    try:
        dashboard, server = start_dashboard(
            api_client(kubeconfig), manager.kinds, host=host, port=port, simulation=simulation, events=events
        )
    except HamiError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"hami dashboard on {url_of(server)} (read-only; Ctrl-C to stop)")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_dashboard(dashboard, server)
