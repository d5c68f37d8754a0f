"""``hami webhook``: the admission webhook on its own (the scheduler also serves ``POST /webhook``).

The lead attaches :data:`webhook_command` to the ``hami`` group. It runs until SIGTERM or Ctrl-C.
ResourceQuota enforcement reads the API server: through ``--kubeconfig`` when given, else the
in-cluster service account when running in a pod; without either, quotas are not enforced (logged).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import click

from hami.errors import HamiError
from hami.webhook.config import DEFAULT_SCHEDULER_NAME, SYSTEM_WRITERS_ENV, WebhookConfig

log = logging.getLogger(__name__)

DEFAULT_BIND = "0.0.0.0:9443"


def parse_bind(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[IPv6]:PORT``; raises ValueError naming the value."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdecimal() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--bind {value!r}: expected HOST:PORT with a port from 0 to 65535 (e.g. 0.0.0.0:9443)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"--bind {value!r}: write an IPv6 address in brackets, e.g. [::]:9443")
    return host or "0.0.0.0", int(port_text)


def _quota_source(kubeconfig: str | None, reservation_namespace: str = "kube-system") -> Any:
    from kubernetes import client, config

    from hami.webhook.quota import KubeQuotaSource
    from hami.webhook.reservations import LeaseReservations

    if kubeconfig:
        api = config.new_client_from_config(config_file=kubeconfig)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        api = client.ApiClient()
    else:
        log.warning("event=webhook_quota_disabled reason=%r", "no --kubeconfig and not running in a cluster")
        return None
    return KubeQuotaSource(client.CoreV1Api(api), reservations=LeaseReservations(client.CoordinationV1Api(api), reservation_namespace))


def _bind_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_bind(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("webhook")
@click.option("--bind", "address", default=DEFAULT_BIND, show_default=True, callback=_bind_option, help="HOST:PORT to listen on.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate (chain); serve HTTPS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key of --tls-cert.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="For ResourceQuota checks (default: in-cluster).")
@click.option("--scheduler-name", default=DEFAULT_SCHEDULER_NAME, show_default=True, help="Written into spec.schedulerName.")
@click.option(
    "--overwrite-default-scheduler/--keep-default-scheduler",
    default=True,
    show_default=True,
    help="Also take over pods that name default-scheduler.",
)
@click.option(
    "--system-writers",
    envvar=SYSTEM_WRITERS_ENV,
    default="",
    show_envvar=True,
    help="Comma-separated users (system:serviceaccount:<ns>:<name>) that may change hami's annotations of existing pods: "
    "the scheduler's and the agents' service accounts.",
)
@click.option(
    "--reservation-namespace",
    default="kube-system",
    show_default=True,
    help="Where quota reservations are kept, one Lease per admitted namespace, so every replica sees them "
    "(needs get, create, update on leases there).",
)
def webhook_command(
    address: tuple[str, int],
    tls_cert: str | None,
    tls_key: str | None,
    kubeconfig: str | None,
    scheduler_name: str,
    overwrite_default_scheduler: bool,
    system_writers: str = "",
    reservation_namespace: str = "kube-system",
) -> None:
    """Serve the mutating admission webhook (POST /webhook, GET /healthz)."""
    from hami.plugin.manager import load_backends
    from hami.webhook.server import WebhookServer

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        config = WebhookConfig(
            scheduler_name=scheduler_name, overwrite_default_scheduler=overwrite_default_scheduler, system_writers=system_writers
        )
    except HamiError as exc:
        raise click.BadParameter(str(exc), param_hint="--scheduler-name/--system-writers") from None
    if not config.system_writers:
        log.warning(
            "event=webhook_no_system_writers reason=%r", f"{SYSTEM_WRITERS_ENV} is empty: no UPDATE may change hami's pod annotations"
        )
    manager = load_backends()
    if not manager.kinds:
        log.warning("event=webhook_no_backends reason=%r", "no backend is installed: every pod passes untouched")
    server = WebhookServer(
        manager,
        config,
        _quota_source(kubeconfig, reservation_namespace),
        host=address[0],
        port=address[1],
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    server.start()
    click.echo(f"listening on {server.url} (port {server.port})")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):  # a timed wait keeps signal handlers responsive everywhere
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
