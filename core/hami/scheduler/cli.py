"""``hami scheduler`` and ``hami scheduler-config``.

The scheduler, kubernetes and the backends are imported inside the commands, so that ``hami
scheduler --help`` answers without loading them."""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from hami.errors import ValidationError
from hami.scheduler.config import DEFAULT_SCHEDULER_NAME, SchedulerConfig

if TYPE_CHECKING:
    from hami.plugin.manager import BackendManager
    from hami.scheduler.server import WebhookHandler

log = logging.getLogger(__name__)

API_POOL = 32
"""Connections the scheduler keeps to the API server: two watches, four allocation writers, the binds
kube-scheduler sends in parallel (16 by default), handshakes, metrics and the leader lease."""

DEFAULT_EXTENDER_BIND = "127.0.0.1:8444"


def _split_bind(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdecimal():
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)


@click.command("scheduler")
@click.option(
    "--bind",
    "bind_address",
    default="0.0.0.0:8443",
    show_default=True,
    help="HOST:PORT of the admission webhook, /healthz, /readyz and /metrics (the API server's and Prometheus' listener).",
)
@click.option(
    "--extender-bind",
    default=DEFAULT_EXTENDER_BIND,
    show_default=True,
    help="HOST:PORT of filter/prioritize/bind: the pod's loopback, where only kube-scheduler beside it reaches them.",
)
@click.option(
    "--client-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="Serve the extender over HTTPS and require a client certificate signed by this CA (needed to bind it beyond loopback).",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve HTTPS with this certificate (reloaded on change).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Private key of --tls-cert.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Default: the in-cluster service account.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="Backend settings (YAML).")
@click.option("--scheduler-name", default=DEFAULT_SCHEDULER_NAME, show_default=True)
@click.option("--node-policy", default="binpack", show_default=True)
@click.option("--device-policy", default="spread", show_default=True)
@click.option("--lock-expiry", default=300, show_default=True, help="Seconds after which a node lock may be taken over.")
@click.option(
    "--signing-key-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Mounted Secret with the Ed25519 private 'key' (and 'previous-public-key' during a rotation).",
)
@click.option(
    "--accept-legacy-hmac-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Also trust records signed with this HMAC key of a release before Ed25519 signatures (upgrades).",
)
@click.option("--insecure-skip-signature", is_flag=True, help="Do not sign allocations (development only).")
@click.option("--leader-elect/--no-leader-elect", default=False, show_default=True, help="Elect a leader on a Lease (replicas > 1).")
@click.option("--lease-namespace", default="kube-system", show_default=True)
@click.option(
    "--reservation-namespace",
    default="kube-system",
    show_default=True,
    help="Where the webhook keeps quota reservations every replica sees (a Lease per admitted namespace).",
)
@click.option(
    "--legacy-metrics",
    is_flag=True,
    help="Also export HAMi's pre-2.8 metric names (GPUDeviceMemoryLimit, nodeGPUOverview, ...), as HAMi's flag does.",
)
def scheduler_command(
    bind_address: str,
    extender_bind: str,
    client_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    kubeconfig: str | None,
    config_file: str | None,
    scheduler_name: str,
    node_policy: str,
    device_policy: str,
    lock_expiry: int,
    signing_key_dir: str | None,
    insecure_skip_signature: bool,
    leader_elect: bool,
    lease_namespace: str,
    legacy_metrics: bool = False,
    accept_legacy_hmac_key: str | None = None,
    reservation_namespace: str = "kube-system",
) -> None:
    """Serve the scheduler extender (filter, prioritize, bind) and the admission webhook."""
    host, port = _split_bind(bind_address)
    extender_host, extender_port = _extender_listener(extender_bind, (host, port), client_ca, tls_cert, tls_key)
    from hami.kube import api_client
    from hami.plugin.manager import load_backends
    from hami.scheduler.service import SchedulerService
    from hami.settings import configure_backends, load_settings, signing_keys

    manager = load_backends()
    configure_backends(manager, load_settings(config_file))
    keys = signing_keys(signing_key_dir, insecure_skip_signature, legacy_hmac_key=accept_legacy_hmac_key)
    if keys is None:
        log.warning("event=signing_disabled reason='--insecure-skip-signature': allocations are not signed")
    config = SchedulerConfig(
        scheduler_name=scheduler_name, node_policy=node_policy, device_policy=device_policy, lock_expiry=timedelta(seconds=lock_expiry)
    )
    manager.policies()  # fail now on a broken policy plugin
    from hami.scheduler.fit import device_choice

    for level, name in (("node", node_policy), ("device", device_policy)):
        try:
            if level == "device":
                device_choice(manager, name)  # a device policy may be a comma list (HAMi's binpack,numa)
            else:
                manager.policy(level, name)
        except ValidationError as exc:
            raise click.BadParameter(str(exc)) from None
    service = SchedulerService(
        manager,
        api_client(kubeconfig, pool_size=API_POOL),
        config,
        keys,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        leader_elect=leader_elect,
        lease_namespace=lease_namespace,
        webhook=_webhook_handler(manager, scheduler_name, kubeconfig, reservation_namespace),
        legacy_metrics=legacy_metrics,
        extender_host=extender_host,
        extender_port=extender_port,
        client_ca=client_ca,
    )
    service.start()
    click.echo(f"hami scheduler serving on {service.server.url}")
    click.echo(f"hami scheduler extender (kube-scheduler's) on {service.extender_server.url}")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _extender_listener(
    value: str, webhook: tuple[str, int], client_ca: str | None, tls_cert: str | None, tls_key: str | None
) -> tuple[str, int]:
    """The extender's HOST:PORT, refused where it would let anyone but kube-scheduler bind pods."""
    host, port = _split_bind(value)
    if (host, port) == webhook and port != 0:
        raise click.BadParameter(f"{value!r} is also --bind: the extender needs a listener of its own", param_hint="--extender-bind")
    if client_ca and not (tls_cert and tls_key):
        raise click.BadParameter("a client CA needs --tls-cert and --tls-key (the extender then speaks HTTPS)", param_hint="--client-ca")
    if not client_ca and not _is_loopback(host):
        raise click.BadParameter(
            f"{value!r} is reachable from outside the pod: anyone reaching it could bind pods. "
            "Bind it to 127.0.0.1 (kube-scheduler runs beside it) or give --client-ca",
            param_hint="--extender-bind",
        )
    return host, port


def _webhook_handler(
    manager: BackendManager, scheduler_name: str, kubeconfig: str | None, reservation_namespace: str = "kube-system"
) -> WebhookHandler:
    """The admission webhook served beside the extender (``POST /webhook``), quota read from the API
    and reserved in Leases of ``reservation_namespace`` (shared by every scheduler replica)."""
    from kubernetes.client import CoordinationV1Api, CoreV1Api

    from hami.kube import api_client
    from hami.webhook.admission import review
    from hami.webhook.config import SYSTEM_WRITERS_ENV, WebhookConfig
    from hami.webhook.quota import KubeQuotaSource
    from hami.webhook.reservations import LeaseReservations

    # who may change hami's annotations of existing pods (the chart sets its two service accounts)
    config = WebhookConfig(scheduler_name=scheduler_name, system_writers=os.environ.get(SYSTEM_WRITERS_ENV, ""))
    client = api_client(kubeconfig)
    quota = KubeQuotaSource(CoreV1Api(client), reservations=LeaseReservations(CoordinationV1Api(client), reservation_namespace))
    return lambda body: review(manager, body, config, quota)


@click.command("scheduler-config")
@click.option(
    "--url",
    default=f"http://{DEFAULT_EXTENDER_BIND}",
    show_default=True,
    help="Where kube-scheduler reaches the extender (hami scheduler --extender-bind).",
)
@click.option("--scheduler-name", default=DEFAULT_SCHEDULER_NAME, show_default=True)
@click.option("--ca-file", help="Verify the extender's certificate with this CA (default: insecure TLS to localhost).")
@click.option("--client-cert", help="kube-scheduler's client certificate for an extender run with --client-ca.")
@click.option("--client-key", help="Private key of --client-cert.")
def scheduler_config_command(
    url: str, scheduler_name: str, ca_file: str | None, client_cert: str | None = None, client_key: str | None = None
) -> None:
    """Print the KubeSchedulerConfiguration for kube-scheduler, managing every installed backend's resources."""
    import yaml

    from hami.plugin.manager import load_backends
    from hami.scheduler.kubeconfig import scheduler_configuration

    manager = load_backends()
    if bool(client_cert) != bool(client_key):
        raise click.BadParameter("give both --client-cert and --client-key", param_hint="--client-cert")
    if client_cert and not url.startswith("https://"):
        raise click.BadParameter(f"a client certificate is sent over HTTPS only; {url!r} is not https://", param_hint="--url")
    configuration = scheduler_configuration(
        manager, url, scheduler_name=scheduler_name, ca_file=ca_file, cert_file=client_cert, key_file=client_key
    )
    click.echo(yaml.safe_dump(configuration, sort_keys=False), nl=False)
