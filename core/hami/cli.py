"""The ``hami`` command line.

Commands are imported when they are run (or asked for ``--help``), not when ``hami`` starts: the
scheduler, the agent and the sandbox pull in kubernetes, grpc and numpy, and a user typing
``hami --help`` should get an answer as fast as kubectl's. :data:`COMMANDS` names each command's
module and carries its one-line help, so the listing imports nothing (a test keeps the lines equal to
the commands' own docstrings, and ``bench/cli.py`` measures the start-up).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import attrs
import click

from hami import __version__
from hami.errors import HamiError


@attrs.frozen
class LazyCommand:
    """Where a command lives ("module:attribute") and its one-line help, shown without importing it."""

    target: str
    help: str

    def load(self, name: str) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a missing optional dependency: say which, not a traceback
            raise click.ClickException(f"'hami {name}' cannot start: {exc}") from None
        command = getattr(module, attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is {type(command).__name__}, not a click command")
        return command


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use (see the module docstring)."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.lazy[cmd_name].load(cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Like click's, but the help of a command not yet imported comes from :data:`COMMANDS`."""
        names = self.list_commands(ctx)
        rows = []
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        for name in names:
            command = self.commands.get(name)
            if command is not None:
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                rows.append((name, click.Command(name, help=self.lazy[name].help).get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


COMMANDS: dict[str, LazyCommand] = {
    "agent": LazyCommand(
        "hami.node.cli:agent_command", "Run the node agent: advertise this node's devices to kubelet and the scheduler, serve Allocate."
    ),
    "certs": LazyCommand(
        "hami.certs:certs_command", "Create (or keep) the webhook's self-signed CA and serving certificate, and patch the caBundle."
    ),
    "dra": LazyCommand(
        "hami.dra.cli:dra_command", "Kubernetes DRA driver for every installed backend: publish ResourceSlices, prepare claims through CDI."
    ),
    "devices": LazyCommand(
        "hami.node.cli:devices_command",
        "Discover and split this machine's devices with every installed backend; show what would be advertised.",
    ),
    "sandbox": LazyCommand(
        "hami.sandbox.cli:sandbox_command", "A whole heterogeneous cluster in one process: admit, schedule, bind and allocate every pod."
    ),
    "scheduler": LazyCommand(
        "hami.scheduler.cli:scheduler_command", "Serve the scheduler extender (filter, prioritize, bind) and the admission webhook."
    ),
    "scheduler-config": LazyCommand(
        "hami.scheduler.cli:scheduler_config_command",
        "Print the KubeSchedulerConfiguration for kube-scheduler, managing every installed backend's resources.",
    ),
    "signing-keys": LazyCommand(
        "hami.certs:signing_keys_command", "Write a new Ed25519 allocation key pair (scheduler: key; agents: public-key)."
    ),
    "simulate": LazyCommand(
        "hami.sim.cli:simulate_command",
        "Replay an openb trace through hami's scheduler (filter, backend predicates, policies) "
        "and report the allocated share of GPU capacity as the workload arrives.",
    ),
    "top": LazyCommand(
        "hami.top:top_command",
        "Show every node's shared devices: memory, cores and slots granted and really in use, and the pods holding them.",
    ),
    "ui": LazyCommand("hami.ui.cli:ui_command", "Serve a read-only web dashboard of the cluster's devices, shares and Pending reasons."),
    "webhook": LazyCommand("hami.webhook.cli:webhook_command", "Serve the mutating admission webhook (POST /webhook, GET /healthz)."),
}

DEV_COMMANDS: dict[str, LazyCommand] = {
    "apiserver": LazyCommand(
        "hami.fakes.cli:apiserver_command", "Serve an in-memory Kubernetes API (core/v1 subset, leases, events) until Ctrl-C."
    ),
}


# Long-running servers log with timestamps (their logs are read later); one-shot commands print a
# warning the way kubectl does, without a timestamp in front of what the user just ran.
SERVERS = frozenset({"agent", "scheduler", "webhook", "dev", "dra"})
LOG_FORMAT_SERVER = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMAT_COMMAND = "%(levelname)s %(name)s: %(message)s"


def quiet_grpc(verbose: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """Silence gRPC's C core logging unless asked for.

    The core writes lines such as ``chttp2_transport.cc:… Got goaway`` straight to stderr (not through
    Python logging), which reads as an error to a user when a sandbox agent or kubelet connection
    closes normally. It reads ``GRPC_VERBOSITY`` once, when grpc is first imported, so this must run
    before any command imports grpc; a value the user set, and ``-v``, leave gRPC's own default.
    """
    if verbose == 0 and "GRPC_VERBOSITY" not in environ:
        environ["GRPC_VERBOSITY"] = "NONE"


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hami")
@click.option("-v", "--verbose", count=True, help="Log more (-v info and gRPC's own log, -vv debug).")
def cli(verbose: int) -> None:
    """Share heterogeneous AI accelerators between Kubernetes pods."""
    import logging

    quiet_grpc(verbose)
    level = logging.WARNING - 10 * min(verbose, 2)
    serving = click.get_current_context().invoked_subcommand in SERVERS
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT_SERVER if serving else LOG_FORMAT_COMMAND)


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
    from rich.console import Console
    from rich.table import Table

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
            table.add_row(
                r.info.name if first and r.info else "",
                kind.vendor,
                "\n".join(kind.resources.all()),
                dist if first else "",
                status if first else "",
            )
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    if not any(r.info for r in records):
        console.print("No backend is installed: pip install a hami-<vendor> distribution.")


@cli.group(cls=LazyGroup, lazy=DEV_COMMANDS)
def dev() -> None:
    """Tools for developing and testing hami and its backends."""


def main() -> None:
    try:
        cli(standalone_mode=True)
    except HamiError as exc:  # a clear message instead of a traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
