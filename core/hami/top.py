"""``hami top``: every node's shared devices and who uses them, like ``kubectl top`` for accelerators.

It reads what the scheduler reads — node device annotations and pod allocation annotations, from
one list of nodes and one of pods — and accounts it with the scheduler's own
:class:`~hami.scheduler.state.ClusterState`, so the numbers are the ones filter decisions see.
Annotations are decoded by the installed backends (``pip install hami-<vendor>``).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # the scheduler's state is imported when the command runs: ``hami top --help`` stays fast
    from hami.plugin.model import DeviceKind

PAGE = 500
MIB = 1024 * 1024


def _list(call: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a paged list call, as raw JSON (no model decoding: fast on large clusters)."""
    token: str | None = None
    while True:
        page = json.loads(call(limit=PAGE, _continue=token, _preload_content=False, **kwargs).data)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def snapshot(kinds: Mapping[str, DeviceKind], nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON view of ``hami top``: per node, per device, capacity, use and the containers holding it."""
    from hami.scheduler.state import ClusterState
    from hami.wire.allocation import ordered_containers
    from hami.wire.isolation import device_isolation

    state = ClusterState(kinds)
    state.replace_all(nodes=nodes, pods=pods)
    usage_by_node = {
        name: found for n in nodes if (found := _node_usage(n)) is not None and (name := (n.get("metadata") or {}).get("name"))
    }
    by_uid = {(p.get("metadata") or {}).get("uid"): p for p in pods}
    holders: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with state.lock:
        for uid, record in state.pods.items():
            containers = ordered_containers(by_uid.get(uid) or {})
            for per_container in record.devices.values():
                for index, grants in enumerate(per_container):
                    name = containers[index].get("name", f"#{index}") if index < len(containers) else f"#{index}"
                    for grant in grants:
                        holders.setdefault((record.node, grant.id), []).append(
                            {
                                "namespace": record.namespace,
                                "pod": record.name,
                                "container": name,
                                "memory_mib": grant.memory,
                                "cores": grant.cores,
                            }
                        )
        out = []
        for node_name in sorted(state.nodes):
            node = state.nodes[node_name]
            devices = []
            for device_id in sorted(node.devices, key=lambda i: (node.devices[i].vendor, node.devices[i].index, i)):
                device, usage = node.devices[device_id], node.usage(device_id)
                isolation, why = device_isolation(node.annotations, device)
                entry = {
                    "id": device.id,
                    "vendor": device.vendor,
                    "type": device.type,
                    "index": device.index,
                    "numa": device.numa,
                    "healthy": device.healthy,
                    "cordoned": device.id in node.cordoned,
                    "slots": {"used": usage.used, "total": device.count},
                    "memory_mib": {"used": usage.memory, "total": device.memory},
                    "cores": {"used": usage.cores, "total": device.cores},
                    "isolation": isolation,
                    "isolation_reason": why,
                    "pods": sorted(holders.get((node_name, device.id), []), key=lambda h: (h["namespace"], h["pod"], h["container"])),
                }
                devices.append(_with_usage(entry, usage_by_node.get(node_name)))
            if devices or node.problems:
                found = {"name": node_name, "problems": dict(sorted(node.problems.items())), "devices": devices}
                if node_name in usage_by_node:
                    found["usage_sampled_at"] = usage_by_node[node_name].get("t")
                out.append(found)
    return {"nodes": out}


def _node_usage(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The agent's usage summary on ``node`` (``hami.io/node-usage``), None when absent or unreadable."""
    from hami.node.usage import USAGE_ANNOTATION

    text = ((node.get("metadata") or {}).get("annotations") or {}).get(USAGE_ANNOTATION)
    if not text:
        return None
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) and isinstance(found.get("devices"), dict) and isinstance(found.get("shares"), dict) else None


def _figures(value: Any) -> tuple[int, float | None, bool] | None:
    if not isinstance(value, list) or len(value) < 2 or not isinstance(value[0], (int, float)):
        return None
    pct = value[1] if isinstance(value[1], (int, float)) else None
    return int(value[0]) // MIB, pct, bool(value[2]) if len(value) > 2 else False


def _with_usage(device: dict[str, Any], usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """``device`` with what it and its holders really use, where the node's agent reported it."""
    if usage is None:
        return device
    figures = _figures(usage["devices"].get(device["id"]))
    if figures is not None:
        device["usage"] = {"memory_mib": figures[0], "utilization": figures[1]}
    for holder in device["pods"]:
        mine = usage["shares"].get(f"{holder['namespace']}/{holder['pod']}/{holder['container']}")
        share = _figures(mine.get(device["id"])) if isinstance(mine, dict) else None
        if share is not None:
            holder["used_mib"], holder["utilization"], holder["throttled"] = share
    return device


def _bar(used: int, total: int) -> str:
    if total <= 0:
        return f"{used}/0"
    share = used / total
    colour = "red" if share >= 0.9 else "yellow" if share >= 0.6 else "green"
    return f"[{colour}]{used}/{total}[/] ({share:.0%})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:g}%"


def _in_use(device: Mapping[str, Any]) -> str:
    """What the device really uses (the agent's sample), against its memory: used vs granted is the
    memory column beside it."""
    usage = device.get("usage")
    if not usage:
        return "-"
    return f"{_bar(usage['memory_mib'], device['memory_mib']['total'])}\n{_pct(usage['utilization'])} busy"


def _used(holder: Mapping[str, Any]) -> str:
    """`` → used 1800Mi (60%) 22%``: a share's use against its grant, red when over it, [throttled]."""
    if "used_mib" not in holder:
        return ""
    granted = holder["memory_mib"]
    share = holder["used_mib"] / granted if granted else 0.0
    colour = "red" if share > 1 else "yellow" if share >= 0.9 else "green"
    throttled = " [yellow]throttled[/]" if holder.get("throttled") else ""
    return f" → used [{colour}]{holder['used_mib']}Mi[/] ({share:.0%}) {_pct(holder['utilization'])}{throttled}"


def render(view: Mapping[str, Any], width: int | None = None) -> str:
    """The table ``hami top`` prints (rich markup rendered to plain text when not a terminal)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="hami top", show_lines=False)
    for column in ("node", "device", "type", "health", "slots", "memory MiB", "cores %", "in use", "pods"):
        table.add_column(column, overflow="fold")
    for node in view["nodes"]:
        first = True
        for problem in node["problems"].values():
            table.add_row(escape(node["name"]) if first else "", "", "", f"[red]{escape(problem)}[/]", "", "", "", "", "")
            first = False
        for d in node["devices"]:
            health = "[green]ok[/]" if d["healthy"] else "[red]unhealthy[/]"
            if d["cordoned"]:
                health += " [yellow]cordoned[/]"
            if d.get("isolation") in ("whole-only", "advisory"):  # limits nothing enforces: never shown as plain ok
                health += f" [{'yellow' if d['isolation'] == 'whole-only' else 'red'}]{d['isolation']}[/]"
            pods = "\n".join(
                escape(f"{p['namespace']}/{p['pod']}[{p['container']}] {p['memory_mib']}Mi {p['cores']}%") + _used(p) for p in d["pods"]
            )
            table.add_row(
                escape(node["name"]) if first else "",
                escape(f"{d['vendor']}[{d['index']}] {d['id']}"),
                escape(d["type"]),
                health,
                _bar(d["slots"]["used"], d["slots"]["total"]),
                _bar(d["memory_mib"]["used"], d["memory_mib"]["total"]),
                _bar(d["cores"]["used"], d["cores"]["total"]),
                _in_use(d),
                pods or "-",
            )
            first = False
    tty = sys.stdout.isatty()
    buffer = io.StringIO()
    console = Console(file=buffer, width=width or (None if tty else 160), force_terminal=tty, color_system="auto" if tty else None)
    console.print(table)
    if not view["nodes"]:
        console.print("No node has registered hami devices (is the node agent running, and are the backends installed here?).")
    return buffer.getvalue()


@click.command("top")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table (one document per refresh with --watch).")
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    envvar="KUBECONFIG",
    help="Default: $KUBECONFIG, else the in-cluster service account.",
)
@click.option("--node", "nodes", multiple=True, help="Only these nodes (repeatable).")
@click.option("--watch", "-w", is_flag=True, help="Refresh until interrupted (Ctrl-C), like watch(1) around kubectl top.")
@click.option(
    "--interval", "-n", type=click.FloatRange(min=0.1), default=2.0, show_default=True, help="Seconds between refreshes with --watch."
)
@click.option("--iterations", type=click.IntRange(min=1), default=None, hidden=True, help="Stop --watch after this many refreshes (tests).")
def top_command(
    as_json: bool, kubeconfig: str | None, nodes: tuple[str, ...], watch: bool, interval: float, iterations: int | None
) -> None:
    """Show every node's shared devices: memory, cores and slots granted and really in use, and the pods holding them.

    Use comes from the node agents' usage sample, which they publish on their Node every 5-30 s."""
    import time

    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from hami.kube import api_client
    from hami.plugin.manager import load_backends

    manager = load_backends()
    if not manager.kinds:
        click.echo("warning: no hami backend is installed here, so no device annotation can be read (pip install hami-<vendor>)", err=True)
    shown = 0
    with api_client(kubeconfig) as api:
        core_v1 = CoreV1Api(api)
        while True:
            try:
                node_items = list(_list(core_v1.list_node))
                pod_items = list(_list(core_v1.list_pod_for_all_namespaces))
            except (ApiException, HTTPError, OSError) as exc:
                reason = f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
                if not watch:
                    raise click.ClickException(f"cannot list nodes and pods: {reason}") from None
                click.echo(f"cannot list nodes and pods: {reason} (retrying)", err=True)
            else:
                if nodes:
                    node_items = [n for n in node_items if (n.get("metadata") or {}).get("name") in nodes]
                view = snapshot(manager.kinds, node_items, pod_items)
                if as_json:
                    click.echo(json.dumps(view, indent=None if watch else 2))
                else:
                    if watch and sys.stdout.isatty():
                        click.clear()
                    if watch:
                        click.echo(f"Every {interval:g}s: hami top    {time.strftime('%Y-%m-%d %H:%M:%S')}")
                    click.echo(render(view), nl=False)
            shown += 1
            if not watch or (iterations is not None and shown >= iterations):
                return
            try:
                time.sleep(interval)
            except KeyboardInterrupt:
                return
