"""``hami dev apiserver``: run the in-memory API server by hand (for kubectl or a local agent).

It lives here, outside :mod:`hami.fakes.kubeapi` (whose package imports the server), so that
``hami dev apiserver --help`` imports only click; the server is imported when the command runs.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from hami.fakes.kubeapi.server import KubeAPIServer


@click.command("apiserver")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=int, help="Port; 0 picks a free one and prints it.")
@click.option(
    "--kubeconfig",
    "kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the server's kubeconfig to FILE (default: a temporary file, removed on exit).",
)
def apiserver_command(host: str, port: int, kubeconfig: str | None) -> None:
    """Serve an in-memory Kubernetes API (core/v1 subset, leases, events) until Ctrl-C."""
    import shlex
    import shutil
    import signal
    import tempfile

    from hami.fakes.kubeapi.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scratch = None
    if kubeconfig is None:
        scratch = tempfile.mkdtemp(prefix="hami-apiserver-")
        kubeconfig = os.path.join(scratch, "kubeconfig")

    def ready(srv: KubeAPIServer) -> None:
        click.echo(f"listening on {srv.url} (port {srv.port})")
        click.echo(f"kubeconfig: {kubeconfig}")
        click.echo(f"try: kubectl --kubeconfig {shlex.quote(str(kubeconfig))} get pods,nodes")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: the server closes and the temp kubeconfig goes

    signal.signal(signal.SIGTERM, stop)
    try:
        serve(host, port, kubeconfig, on_ready=ready)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
