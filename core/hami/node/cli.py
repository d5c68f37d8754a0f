"""Click commands of the node side: ``hami agent`` and ``hami devices``.

They are command objects the main CLI attaches (``cli.add_command(agent_command, "agent")``), so this
module owns its options and the main CLI stays a list of commands.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import click

from hami.errors import HamiError
from hami.node.deviceplugin import DEVICE_PLUGIN_DIR

log = logging.getLogger(__name__)


def configured_manager(config_path: str | None) -> Any:
    """Every installed backend, with the operator's settings file (``hami.settings``, shared with the scheduler)."""
    from hami.plugin.manager import load_backends
    from hami.settings import configure_backends, load_settings

    manager = load_backends()
    try:
        configure_backends(manager, load_settings(config_path))
    except HamiError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    return manager


def _core_v1(kubeconfig: str | None) -> Any:
    from kubernetes import client

    from hami.kube import api_client

    return client.CoreV1Api(api_client(kubeconfig))


def _host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdecimal():
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint="--metrics-bind")
    return host.strip("[]") or "0.0.0.0", int(port)


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("hami").setLevel(level.upper())


@click.command("agent")
@click.option("--node-name", envvar="NODE_NAME", help="This node's name (default: $NODE_NAME).")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Kubeconfig file; in-cluster config when absent.")
@click.option(
    "--device-plugin-dir",
    default=DEVICE_PLUGIN_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Kubelet's device plugin directory.",
)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML: per-backend config overrides.")
@click.option(
    "--signing-key-dir",
    envvar="HAMI_SIGNING_KEY_DIR",
    type=click.Path(exists=True, file_okay=False),
    help="Directory with the scheduler's Ed25519 'public-key' (optional 'previous-public-key'); never the private key.",
)
@click.option(
    "--accept-legacy-hmac-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Also accept allocations signed with this HMAC key of a release before Ed25519 signatures (upgrade window only).",
)
@click.option("--insecure-skip-signature", is_flag=True, help="Trust pod allocation annotations without a signature (testing only).")
@click.option(
    "--register-interval", default=30.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds between node annotation writes."
)
@click.option(
    "--health-interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds between device health checks."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Level of the agent's structured logs.",
)
@click.option(
    "--metrics-bind", default="0.0.0.0:9394", show_default=True, help="HOST:PORT of the Prometheus /metrics endpoint; empty to disable."
)
@click.option(
    "--legacy-metrics",
    is_flag=True,
    help="Also export HAMi's pre-2.8 metric names (vGPU_device_memory_limit_in_bytes), as HAMi's flag does.",
)
@click.option(
    "--state-dir",
    default="/var/lib/hami",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Host directory for the backends' node state (partition ledgers) and the agent's pod ledger; must survive agent restarts.",
)
def agent_command(
    node_name: str | None,
    kubeconfig: str | None,
    device_plugin_dir: str,
    config_path: str | None,
    signing_key_dir: str | None,
    insecure_skip_signature: bool,
    register_interval: float,
    health_interval: float,
    log_level: str,
    metrics_bind: str,
    legacy_metrics: bool = False,
    state_dir: str = "/var/lib/hami",
    accept_legacy_hmac_key: str | None = None,
) -> None:
    """Run the node agent: advertise this node's devices to kubelet and the scheduler, serve Allocate."""
    from hami.node.agent import Agent, AgentOptions
    from hami.wire.signing import SigningKeys

    _setup_logging(log_level)
    if not node_name:
        raise click.UsageError("the node name is unknown: pass --node-name or set NODE_NAME (the DaemonSet sets it from spec.nodeName)")
    if signing_key_dir is None and not insecure_skip_signature:
        raise click.UsageError(
            "pass --signing-key-dir (or set HAMI_SIGNING_KEY_DIR), or --insecure-skip-signature to trust any pod annotation"
        )
    try:
        keys = SigningKeys.public_from_directory(signing_key_dir, legacy_hmac_key=accept_legacy_hmac_key) if signing_key_dir else None
        manager = configured_manager(config_path)
        options = AgentOptions(
            node_name=node_name,
            device_plugin_dir=Path(device_plugin_dir),
            register_interval=register_interval,
            health_interval=health_interval,
            metrics_bind=_host_port(metrics_bind) if metrics_bind else None,
            legacy_metrics=legacy_metrics,
            state_dir=Path(state_dir),
        )
        agent = Agent(manager, _core_v1(kubeconfig), options, keys, insecure_skip_signature=keys is None)
    except HamiError as exc:
        raise click.ClickException(str(exc)) from None
    agent.run_forever()


ISOLATION_STYLE = {"enforced": "[green]enforced[/]", "advisory": "[red]advisory[/]", "whole-only": "[yellow]whole-only[/] (below)"}
"""How ``hami devices`` shows a device's isolation (hami.wire.isolation); ``unverified`` as it is."""


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--node-name",
    envvar="NODE_NAME",
    default=socket.gethostname,
    show_default="$NODE_NAME or the host name",
    help="Node name (the inventory is keyed by it).",
)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), help="YAML: per-backend config overrides.")
def devices_command(as_json: bool, node_name: str, config_path: str | None) -> None:
    """Discover and split this machine's devices with every installed backend; show what would be advertised."""
    from hami.node.devices import current_health, discover_node

    manager = configured_manager(config_path)
    for record in manager.records:
        if record.status == "failed":
            click.echo(f"warning: backend {record.name} ({record.distribution} {record.version}) failed to load: {record.error}", err=True)
    discovery = discover_node(manager, node_name)
    for backend, error in sorted(discovery.errors.items()):
        click.echo(f"warning: backend {backend}: discovery failed: {error}", err=True)
    health = current_health(manager, discovery)
    rows = [d.as_json(health.get(d.id)) for d in discovery.devices] + [d.as_json() for d in discovery.unadvertised]
    rows.sort(key=lambda r: (r["backend"], r["index"], r["id"]))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hami devices on {node_name}")
    for column in (
        "backend",
        "vendor",
        "index",
        "id",
        "type",
        "memory MiB",
        "cores",
        "numa",
        "health",
        "resource",
        "slots",
        "advertised MiB",
        "advertised",
        "isolation",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        shown = "[green]Healthy[/]" if r["health"] == "Healthy" else "[red]Unhealthy[/]"
        offered = "yes" if r["advertised"] else "[yellow]no[/] (below)"
        table.add_row(
            r["backend"],
            r["vendor"],
            str(r["index"]),
            r["id"],
            r["type"],
            str(r["memory_mib"] or "?"),
            str(r["cores"]),
            str(r["numa"]),
            shown,
            r["resource"] or "-",
            str(r["slots"]),
            str(r["schedulable_memory_mib"]),
            offered,
            ISOLATION_STYLE.get(r["isolation"], r["isolation"]),
        )
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(table)
    for r in rows:
        if not r["advertised"]:
            click.echo(f"not advertised: {r['backend']} {r['vendor']} index {r['index']} ({r['id']}): {r['reason']}")
        elif r["isolation"] in ("whole-only", "advisory"):
            click.echo(f"{r['isolation']}: {r['backend']} {r['vendor']} index {r['index']} ({r['id']}): {r['isolation_reason']}")
    if not rows:
        console.print(f"No devices found on {node_name} (no hardware, no driver, or no inventory entry for this node).")
