"""``hami sandbox``: run the example pods (or yours) through a whole in-process cluster."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hami.errors import HamiError

if TYPE_CHECKING:  # rich and yaml are imported when the command runs: ``hami sandbox --help`` stays fast
    from rich.console import Console

    from hami.sandbox.outcome import PodOutcome


def _examples_dir() -> Path | None:
    """The example pods packaged with hami (hami/sandbox/examples, the copy of deploy/examples)."""
    from hami.sandbox.defaults import examples_dir

    return examples_dir()


def load_pods(paths: tuple[str, ...]) -> list[dict[str, Any]]:
    import yaml

    files: list[Path] = []
    if paths:
        files = [Path(p) for p in paths]
    else:
        examples = _examples_dir()
        if examples is None:
            raise HamiError("no --pods given and hami/sandbox/examples (the packaged example pods) is missing from this installation of hami")
        files = sorted(p for p in examples.glob("*.yaml") if not p.name.startswith("nodes"))
    pods = []
    for path in files:
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError) as exc:
            raise HamiError(f"cannot read pods from {str(path)!r}: {exc}") from None
        for number, doc in enumerate(documents):
            if doc is None:
                continue
            if not isinstance(doc, dict) or doc.get("kind") != "Pod":
                raise HamiError(f"{path}: document #{number} is not a Pod (kind={doc.get('kind') if isinstance(doc, dict) else type(doc).__name__!r})")
            pods.append(doc)
    return pods


def _devices_cell(outcome: PodOutcome) -> str:
    lines = []
    for c in outcome.containers:
        for d in c.devices:
            lines.append(f"{c.name}: {d.uuid} {d.memory_mib} MiB {d.cores}%")
    return "\n".join(lines)


def _edits_cell(outcome: PodOutcome) -> str:
    lines = []
    for c in outcome.containers:
        parts = []
        if c.envs:
            parts.append(f"{len(c.envs)} env (" + ", ".join(sorted(c.envs)[:4]) + (" …" if len(c.envs) > 4 else "") + ")")
        if c.mounts:
            parts.append(f"{len(c.mounts)} mounts")
        if c.device_nodes:
            parts.append(f"{len(c.device_nodes)} device nodes")
        if parts:
            lines.append(f"{c.name}: " + ", ".join(parts))
    return "\n".join(lines)


def print_report(console: Console, outcomes: list[PodOutcome], nodes: list[dict[str, Any]], skipped: list[dict[str, str]] | None = None) -> None:
    from rich.table import Table

    pods = Table(title="pods")
    for column in ("pod", "phase", "node", "devices", "container edits / reason"):
        pods.add_column(column, overflow="fold")
    for o in outcomes:
        colour = "green" if o.phase == "Running" else "yellow" if o.phase == "Pending" else "red"
        mark = "" if o.as_expected else f" [bold red](expected {o.expected})[/]"
        pods.add_row(f"{o.namespace}/{o.name}", f"[{colour}]{o.phase}[/]{mark}", o.node, _devices_cell(o), _edits_cell(o) or o.reason)
    for s in skipped or []:
        pods.add_row(f"{s['namespace']}/{s['name']}", "[dim]skipped[/]", "", "", s["reason"])
    console.print(pods)
    table = Table(title="devices")
    for column in ("node", "device", "type", "memory MiB used/total", "cores used/total", "slots used/total", "isolation"):
        table.add_column(column, overflow="fold")
    for node in nodes:
        for i, d in enumerate(node["devices"]):
            table.add_row(node["name"] if i == 0 else "", d["id"], d["type"], f"{d['used_memory_mib']}/{d['memory_mib']}",
                          f"{d['used_cores']}/{d['cores']}", f"{d['used_slots']}/{d['slots']}",
                          d.get("isolation", "") if d.get("isolation") != "whole-only" else f"[yellow]whole-only[/]: {d.get('isolation_reason', '')}")
    console.print(table)


@click.command("sandbox")
@click.option("--nodes", "nodes_file", type=click.Path(exists=True, dir_okay=False), help="Node inventory YAML (default: the packaged node sets' nodes of every installed vendor).")
@click.option("--pods", "pod_files", multiple=True, type=click.Path(exists=True, dir_okay=False), help="Pod YAML, multi-document (default: deploy/examples; those of vendors not installed are skipped).")
@click.option("--json", "as_json", is_flag=True, help="Print {\"pods\": [...], \"nodes\": [...]} instead of tables.")
@click.option("--keep-running", is_flag=True, help="Keep the cluster up afterwards and print a kubeconfig for it.")
@click.option("--serve", is_flag=True, help="Keep the cluster up with the web dashboard on 127.0.0.1 and its API server open to kubectl.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="The dashboard's port with --serve (0: any free port).")
@click.option("--dra", is_flag=True, help="A DRA cluster instead (slices, claims, CEL, CDI; default pods: the DRA examples); prints JSON.")
def sandbox_command(nodes_file: str | None, pod_files: tuple[str, ...], as_json: bool, keep_running: bool, serve: bool, port: int,
                    dra: bool = False) -> None:
    """A whole heterogeneous cluster in one process: admit, schedule, bind and allocate every pod."""
    if dra:
        _run_dra(nodes_file, pod_files)
        return
    from rich.console import Console

    from hami.plugin.manager import load_backends
    from hami.sandbox.cluster import Sandbox
    from hami.sandbox.defaults import write_default_cluster

    manager = load_backends()
    pods, skipped = _runnable(load_pods(pod_files), pod_files, {n for info in manager.backends.values() for n in info.resource_names})
    console = Console(width=None if sys.stdout.isatty() else 140, stderr=as_json)
    with (
        tempfile.TemporaryDirectory(prefix="hami-sandbox-") as scratch,
        Sandbox(nodes_file or write_default_cluster(Path(scratch), manager.kinds), manager=manager) as sandbox,
    ):
        outcomes = []
        with console.status("scheduling pods…") if sys.stdout.isatty() and not as_json else _nothing():
            for pod in pods:
                outcomes.append(sandbox.submit(pod))
        nodes = sandbox.nodes()
        if as_json:
            click.echo(json.dumps({"pods": [o.as_json() for o in outcomes], "skipped": skipped, "nodes": nodes}, indent=2))
        else:
            print_report(console, outcomes, nodes, skipped)
        if serve:
            from hami.sandbox.serve import serve as serve_dashboard

            serve_dashboard(sandbox, outcomes, port, lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        elif keep_running:
            path = Path("sandbox-kubeconfig.yaml").resolve()
            sandbox.api.write_kubeconfig(path)
            console.print(f"cluster running; kubeconfig: {path} (Ctrl-C to stop)")
            done = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: done.set())
            try:
                done.wait()
            except KeyboardInterrupt:
                pass
    unexpected = [o for o in outcomes if not o.as_expected]
    if unexpected:
        for o in unexpected:
            click.echo(f"error: pod {o.namespace}/{o.name} is {o.phase}, expected {o.expected}: {o.reason or 'no reason given'}", err=True)
        sys.exit(1)


def _run_dra(nodes_file: str | None, pod_files: tuple[str, ...]) -> None:
    """``--dra``: print the DRA sandbox's JSON report; exit 1 when a pod is not in its expected phase."""
    from hami.sandbox.dra import example_files, run

    report = run(nodes_file, [Path(p) for p in pod_files] or example_files())
    click.echo(json.dumps(report, indent=2))
    unexpected = [p for p in report["pods"] if p["phase"] != p["expected"]]
    for p in unexpected:
        why = p["reason"] or "no reason given"
        click.echo(f"error: pod {p['namespace']}/{p['name']} is {p['phase']}, expected {p['expected']}: {why}", err=True)
    if unexpected:
        sys.exit(1)


def _runnable(pods: list[dict[str, Any]], pod_files: tuple[str, ...], served: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """The pods to run and the example pods skipped, with why: the packaged examples are written for a
    full install, so one whose resources no installed backend serves is reported, not run (a user with
    one backend still gets a green sandbox). Pods the user names are always run."""
    from hami.sandbox.defaults import skip_reason

    if pod_files:
        return pods, []
    run, skipped = [], []
    for pod in pods:
        why = skip_reason(pod, served)
        if why:
            meta = pod.get("metadata") or {}
            skipped.append({"namespace": str(meta.get("namespace") or "default"), "name": str(meta.get("name", "")), "reason": why})
        else:
            run.append(pod)
    return run, skipped


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
