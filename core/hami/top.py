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

    state = ClusterState(kinds)
    state.replace_all(nodes=nodes, pods=pods)
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
                            {"namespace": record.namespace, "pod": record.name, "container": name, "memory_mib": grant.memory, "cores": grant.cores})
        out = []
        for node_name in sorted(state.nodes):
            node = state.nodes[node_name]
            devices = []
            for device_id in sorted(node.devices, key=lambda i: (node.devices[i].vendor, node.devices[i].index, i)):
                device, usage = node.devices[device_id], node.usage(device_id)
                devices.append({
                    "id": device.id, "vendor": device.vendor, "type": device.type, "index": device.index, "numa": device.numa,
                    "healthy": device.healthy, "cordoned": device.id in node.cordoned,
                    "slots": {"used": usage.used, "total": device.count},
                    "memory_mib": {"used": usage.memory, "total": device.memory},
                    "cores": {"used": usage.cores, "total": device.cores},
                    "pods": sorted(holders.get((node_name, device.id), []), key=lambda h: (h["namespace"], h["pod"], h["container"])),
                })
            if devices or node.problems:
                out.append({"name": node_name, "problems": dict(sorted(node.problems.items())), "devices": devices})
    return {"nodes": out}


def _bar(used: int, total: int) -> str:
    if total <= 0:
        return f"{used}/0"
    share = used / total
    colour = "red" if share >= 0.9 else "yellow" if share >= 0.6 else "green"
    return f"[{colour}]{used}/{total}[/] ({share:.0%})"


def render(view: Mapping[str, Any], width: int | None = None) -> str:
    """The table ``hami top`` prints (rich markup rendered to plain text when not a terminal)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="hami top", show_lines=False)
    for column in ("node", "device", "type", "health", "slots", "memory MiB", "cores %", "pods"):
        table.add_column(column, overflow="fold")
    for node in view["nodes"]:
        first = True
        for problem in node["problems"].values():
            table.add_row(escape(node["name"]) if first else "", "", "", f"[red]{escape(problem)}[/]", "", "", "", "")
            first = False
        for d in node["devices"]:
            health = "[green]ok[/]" if d["healthy"] else "[red]unhealthy[/]"
            if d["cordoned"]:
                health += " [yellow]cordoned[/]"
            pods = "\n".join(escape(f"{p['namespace']}/{p['pod']}[{p['container']}] {p['memory_mib']}Mi {p['cores']}%") for p in d["pods"])
            table.add_row(escape(node["name"]) if first else "", escape(f"{d['vendor']}[{d['index']}] {d['id']}"), escape(d["type"]), health,
                          _bar(d["slots"]["used"], d["slots"]["total"]), _bar(d["memory_mib"]["used"], d["memory_mib"]["total"]),
                          _bar(d["cores"]["used"], d["cores"]["total"]), pods or "-")
            first = False
    tty = sys.stdout.isatty()
    buffer = io.StringIO()
    console = Console(file=buffer, width=width or (None if tty else 160), force_terminal=tty, color_system="auto" if tty else None)
    console.print(table)
    if not view["nodes"]:
        console.print("No node has registered hami devices (is the node agent running, and are the backends installed here?).")
    return buffer.getvalue()


@click.command("top")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), envvar="KUBECONFIG", help="Default: $KUBECONFIG, else the in-cluster service account.")
@click.option("--node", "nodes", multiple=True, help="Only these nodes (repeatable).")
def top_command(as_json: bool, kubeconfig: str | None, nodes: tuple[str, ...]) -> None:
    """Show every node's shared devices: memory, cores and slots used, and the pods holding them."""
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from hami.kube import api_client
    from hami.plugin.manager import load_backends

    manager = load_backends()
    if not manager.kinds:
        click.echo("warning: no hami backend is installed here, so no device annotation can be read (pip install hami-<vendor>)", err=True)
    with api_client(kubeconfig) as api:
        core_v1 = CoreV1Api(api)
        try:
            node_items = list(_list(core_v1.list_node))
            pod_items = list(_list(core_v1.list_pod_for_all_namespaces))
        except (ApiException, HTTPError, OSError) as exc:
            reason = f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            raise click.ClickException(f"cannot list nodes and pods: {reason}") from None
    if nodes:
        node_items = [n for n in node_items if (n.get("metadata") or {}).get("name") in nodes]
    view = snapshot(manager.kinds, node_items, pod_items)
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        click.echo(render(view), nl=False)
