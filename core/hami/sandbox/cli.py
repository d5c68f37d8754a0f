"""``hami sandbox``: run the example pods (or yours) through a whole in-process cluster."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
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
            raise HamiError(
                "no --pods given and hami/sandbox/examples (the packaged example pods) is missing from this installation of hami"
            )
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
                raise HamiError(
                    f"{path}: document #{number} is not a Pod (kind={doc.get('kind') if isinstance(doc, dict) else type(doc).__name__!r})"
                )
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


def print_report(
    console: Console, outcomes: list[PodOutcome], nodes: list[dict[str, Any]], skipped: list[dict[str, str]] | None = None
) -> None:
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
            table.add_row(
                node["name"] if i == 0 else "",
                d["id"],
                d["type"],
                f"{d['used_memory_mib']}/{d['memory_mib']}",
                f"{d['used_cores']}/{d['cores']}",
                f"{d['used_slots']}/{d['slots']}",
                d.get("isolation", "") if d.get("isolation") != "whole-only" else f"[yellow]whole-only[/]: {d.get('isolation_reason', '')}",
            )
    console.print(table)


@click.command("sandbox")
@click.option(
    "--nodes",
    "nodes_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Node inventory YAML (default: the packaged node sets' nodes of every installed vendor).",
)
@click.option(
    "--pods",
    "pod_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Pod YAML, multi-document (default: deploy/examples; those of vendors not installed are skipped).",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"pods": [...], "nodes": [...]} instead of tables.')
@click.option("--keep-running", is_flag=True, help="Keep the cluster up afterwards and print a kubeconfig for it.")
@click.option("--serve", is_flag=True, help="Keep the cluster up with the web dashboard on 127.0.0.1 and its API server open to kubectl.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="The dashboard's port with --serve (0: any free port)."
)
@click.option("--dra", is_flag=True, help="A DRA cluster instead (slices, claims, CEL, CDI; default pods: the DRA examples); prints JSON.")
def sandbox_command(
    nodes_file: str | None, pod_files: tuple[str, ...], as_json: bool, keep_running: bool, serve: bool, port: int, dra: bool = False
) -> None:
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
    import attrs

    from hami.sandbox.runner import RunResult, describe_failure, not_run, run_pods

    result = RunResult(())
    nodes: list[dict[str, Any]] = []
    printed = False

    def report() -> None:
        nonlocal printed
        printed = True
        if as_json:  # always a document, also after a component failed
            document: dict[str, Any] = {"pods": [o.as_json() for o in result.outcomes], "skipped": skipped, "nodes": nodes}
            if result.error or result.not_run:
                document.update(error=result.error, not_run=list(result.not_run))
            click.echo(json.dumps(document, indent=2))
        else:
            print_report(console, list(result.outcomes), nodes, skipped)

    try:
        with (
            tempfile.TemporaryDirectory(prefix="hami-sandbox-") as scratch,
            Sandbox(nodes_file or write_default_cluster(Path(scratch), manager.kinds), manager=manager) as sandbox,
        ):
            with _progress(console, len(pods), quiet=as_json) as progress:
                result = run_pods(sandbox.submit, pods, progress)
            try:
                nodes = sandbox.nodes()
            except Exception as exc:  # the scheduler's view is gone: report the pods anyway
                result = attrs.evolve(result, error=result.error or f"reading the nodes: {describe_failure(exc)}")
            report()
            if serve:
                from hami.sandbox.serve import serve as serve_dashboard

                serve_dashboard(
                    sandbox, list(result.outcomes), port, lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
                )
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
    except Exception as exc:  # a component failed to start (or to stop): a clear error, and the document
        if not result.error:
            result = RunResult(
                result.outcomes,
                result.not_run or not_run(pods[len(result.outcomes) :], "not submitted: the sandbox failed"),
                f"the sandbox failed: {describe_failure(exc)}",
            )
        if not printed:
            report()
    if result.error:
        placed = sum(o.phase == "Running" for o in result.outcomes)
        click.echo(f"error: {result.error} ({placed} of {len(pods)} pods running, {len(result.not_run)} not run)", err=True)
    unexpected = [o for o in result.outcomes if not o.as_expected]
    for o in unexpected:
        click.echo(f"error: pod {o.namespace}/{o.name} is {o.phase}, expected {o.expected}: {o.reason or 'no reason given'}", err=True)
    if unexpected or result.error:
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


def _runnable(
    pods: list[dict[str, Any]], pod_files: tuple[str, ...], served: set[str]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
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


class _progress:
    """Pods done / total and the rate: a live line on a terminal, a stderr line every 10 s otherwise; nothing with --json."""

    def __init__(self, console: Console, total: int, *, quiet: bool) -> None:
        self.console, self.total, self.quiet = console, total, quiet
        self.live = console.is_terminal and not quiet
        self._status: Any = None
        self._printed = 0.0

    def __enter__(self) -> Callable[[int, int, float], None]:
        if self.live:
            self._status = self.console.status(f"scheduling pods… 0/{self.total}")
            self._status.__enter__()
        return self.update

    def update(self, done: int, total: int, seconds: float) -> None:
        if self.quiet:
            return
        line = f"pods {done}/{total}, {done / seconds if seconds > 0 else 0.0:.1f} pods/s"
        if self._status is not None:
            self._status.update(f"scheduling pods… {line}")
        elif seconds - self._printed >= 10.0:
            self._printed = seconds
            click.echo(line, err=True)

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
