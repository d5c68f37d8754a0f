"""The ``hami`` command line."""

from __future__ import annotations

import json
import logging
import sys

import click
from rich.console import Console
from rich.table import Table

from hami import __version__
from hami.errors import HamiError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hami")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Share heterogeneous AI accelerators between Kubernetes pods."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--all", "show_all", is_flag=True, help="Include the core's built-in plugins (scoring policies).")
def backends(as_json: bool, show_all: bool) -> None:
    """List the installed backends: vendor keys, distribution, resources and load status."""
    from hami.plugin.manager import load_backends

    manager = load_backends()
    records = [r for r in manager.records if show_all or not r.builtin]
    if as_json:
        click.echo(json.dumps([r.as_json() for r in records], indent=2))
        return
    table = Table(title="hami backends")
    for column in ("backend", "vendor key", "resources", "distribution", "status"):
        table.add_column(column, overflow="fold")
    for r in records:
        status = "[green]ok[/]" if r.status == "ok" else f"[red]{r.status}[/]: {r.error}" if r.error else f"[yellow]{r.status}[/]"
        dist = f"{r.distribution} {r.version}".strip()
        kinds = r.info.kinds if r.info else ()
        if not kinds:
            table.add_row(r.name, "", "", dist, status)
        for i, kind in enumerate(kinds):
            first = i == 0
            table.add_row(r.info.name if first else "", kind.vendor, "\n".join(kind.resources.all()), dist if first else "", status if first else "")
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    if not any(r.info for r in records):
        console.print("No backend is installed: pip install hami-nvidia (or another hami-<vendor>).")


@cli.group()
def dev() -> None:
    """Tools for developing and testing hami and its backends."""


def _attach_commands() -> None:
    from hami.certs import certs_command
    from hami.node.cli import agent_command, devices_command
    from hami.sandbox.cli import sandbox_command
    from hami.scheduler.cli import scheduler_command, scheduler_config_command
    from hami.sim.cli import simulate_command
    from hami.top import top_command
    from hami.webhook.cli import webhook_command

    cli.add_command(sandbox_command)
    cli.add_command(simulate_command)
    cli.add_command(top_command)
    cli.add_command(certs_command)
    cli.add_command(agent_command, "agent")
    cli.add_command(devices_command, "devices")
    cli.add_command(scheduler_command)
    cli.add_command(scheduler_config_command)
    cli.add_command(webhook_command)
    try:
        from hami.fakes.kubeapi.cli import apiserver_command
    except ImportError:  # the harness needs hami[testing]
        return
    dev.add_command(apiserver_command, "apiserver")


_attach_commands()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except HamiError as exc:  # a clear message instead of a traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
