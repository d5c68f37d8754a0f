"""``hami dra``: the node's DRA driver (``serve``) and what it would publish (``slices``).

Imports only click at module level: ``hami --help`` and ``hami dra --help`` stay light.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import click

from hami.dra import DRIVER

log = logging.getLogger(__name__)


@click.group("dra")
def dra_command() -> None:
    """Kubernetes DRA driver for every installed backend: publish ResourceSlices, prepare claims through CDI.

    resource.k8s.io/v1 (Kubernetes 1.34+); see docs/dra.md."""


def _node_name(value: str | None) -> str:
    return value or socket.gethostname()


@dra_command.command("slices")
@click.option("--node-name", envvar="NODE_NAME", help="This node's name (default: $NODE_NAME, else the host name).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="HAMI_CONFIG", help="hami settings file.")
@click.option("--state-dir", type=click.Path(file_okay=False), default="/var/lib/hami", show_default=True, help="Node state root.")
def slices_command(node_name: str | None, config_path: str | None, state_dir: str) -> None:
    """Print, as JSON, the ResourceSlices this node would publish (nothing is written)."""
    from hami.dra.slices import build_slices
    from hami.node.cli import configured_manager
    from hami.node.devices import discover_node

    name = _node_name(node_name)
    discovery = discover_node(configured_manager(config_path), name, Path(state_dir))
    for backend, error in sorted(discovery.errors.items()):
        click.echo(f"warning: backend {backend}: {error}", err=True)
    click.echo(json.dumps(build_slices(discovery, name), indent=2))


@dra_command.command("classes")
def classes_command() -> None:
    """Print, as YAML, the DeviceClasses for the installed backends' vendor kinds (kubectl apply -f -)."""
    import yaml

    from hami.dra.classes import device_classes
    from hami.plugin.manager import load_backends

    click.echo(yaml.safe_dump_all(device_classes(list(load_backends().kinds)), sort_keys=False), nl=False)


@dra_command.command("serve")
@click.option("--node-name", envvar="NODE_NAME", help="This node's name (default: $NODE_NAME, else the host name).")
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig (default: in-cluster, then ~/.kube/config).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="HAMI_CONFIG", help="hami settings file.")
@click.option(
    "--registry-dir",
    default="/var/lib/kubelet/plugins_registry",
    show_default=True,
    help="Kubelet's plugin registration directory (our socket: hami.io-reg.sock).",
)
@click.option("--plugin-dir", default=f"/var/lib/kubelet/plugins/{DRIVER}", show_default=True, help="DRA socket (dra.sock) folder.")
@click.option("--cdi-dir", default="/var/run/cdi", show_default=True, help="Where CDI specs of prepared claims are written.")
@click.option("--state-dir", default="/var/lib/hami", show_default=True, help="Node state root (claim ledger, backends' state).")
@click.option("--interval", default=30.0, show_default=True, help="Seconds between discovery/health rounds.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True)
def serve_command(
    node_name: str | None,
    kubeconfig: str | None,
    config_path: str | None,
    registry_dir: str,
    plugin_dir: str,
    cdi_dir: str,
    state_dir: str,
    interval: float,
    log_level: str,
) -> None:
    """Publish this node's ResourceSlices and serve kubelet's DRA plugin API until SIGTERM/Ctrl-C;
    the slices are deleted on the way out."""
    from hami.dra.driver import DraDriver
    from hami.kube import api_client
    from hami.node.cli import _setup_logging, configured_manager

    _setup_logging(log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    driver = DraDriver(
        configured_manager(config_path),
        _node_name(node_name),
        api_client(kubeconfig),
        registry_dir=Path(registry_dir),
        plugin_dir=Path(plugin_dir),
        cdi_dir=Path(cdi_dir),
        state_root=Path(state_dir),
        interval=interval,
    ).start()
    log.info("event=dra_serving driver=%s node=%s devices=%d", DRIVER, driver.node_name, len(driver.discovery.devices))
    try:
        stop.wait()
    finally:
        driver.stop()
