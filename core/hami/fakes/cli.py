"""``hami dev apiserver``: run the in-memory API server by hand (for kubectl or a local agent).

It lives here, outside :mod:`hami.fakes.kubeapi` (whose package imports the server), so that
``hami dev apiserver --help`` imports only click; the server is imported when the command runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from hami.fakes.kubeapi.server import KubeAPIServer


@click.command("apiserver")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=int, help="Port; 0 picks a free one and prints it.")
@click.option("--kubeconfig", "kubeconfig", type=click.Path(dir_okay=False), default=None,
              help="Write a kubeconfig for the server to FILE.")
def apiserver_command(host: str, port: int, kubeconfig: str | None) -> None:
    """Serve an in-memory Kubernetes API (core/v1 subset, leases, events) until Ctrl-C."""
    from hami.fakes.kubeapi.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(srv: KubeAPIServer) -> None:
        click.echo(f"listening on {srv.url} (port {srv.port})")
        if kubeconfig:
            click.echo(f"kubeconfig: {kubeconfig}")

    serve(host, port, kubeconfig, on_ready=ready)
