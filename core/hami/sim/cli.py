"""``hami simulate``: replay a trace through the real scheduler under several policies.

Heavy imports (numpy, the scheduler) happen inside the command, so ``hami`` starts fast and works
without numpy until a simulation is asked for.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from hami.sim.engine import RunResult
    from hami.sim.runner import Job, PolicySummary

POLICIES_DEFAULT = ("random", "binpack", "spread", "bestfit", "fgd")


@click.command("simulate")
@click.option(
    "--nodes", "nodes_path", required=True, type=click.Path(exists=True, dir_okay=False), help="openb node CSV, or a node inventory YAML."
)
@click.option(
    "--pods",
    "pods_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="openb pod CSV, or Kubernetes pod specs (YAML; any vendor's resources; sim.hami.io/replicas copies a pod).",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    help="Policy to compare (repeatable): random, binpack, spread, bestfit, fgd, or NODE/DEVICE. Default: all five.",
)
@click.option(
    "--tune",
    default=1.3,
    show_default=True,
    type=float,
    help="Inflate (or trim) the workload to this multiple of the cluster's GPU capacity; 0 keeps it.",
)
@click.option("--seed", type=int, help="One seed (inflation and shuffle).")
@click.option("--seeds", "seeds_text", help="Seeds: 42-51, or a comma list. Default: 42.")
@click.option("--split-count", default=100, show_default=True, type=int, help="Containers sharing one device (split_count).")
@click.option(
    "--vendor",
    help="Vendor key of the trace's devices. Default: the vendor the node file names, else the installed backend "
    "that declares the trace's device models.",
)
@click.option(
    "--backend", "backends", multiple=True, help="Entry points to load beside the vendor's backend (plugins whose policies you compare)."
)
@click.option(
    "--live",
    is_flag=True,
    help="Replay through the live path: in-memory API server, informer-fed scheduler cache, extender filter and bind (slower; same report).",
)
@click.option("--jobs", default=1, show_default=True, type=int, help="Runs in parallel worker processes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per (policy, seed) run, one per line.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write allocated % vs arrived % per policy to this PNG (pip install 'hami[sim]').",
)
def simulate_command(
    nodes_path: str,
    pods_path: str,
    policies: tuple[str, ...],
    tune: float,
    seed: int | None,
    seeds_text: str | None,
    split_count: int,
    vendor: str | None,
    backends: tuple[str, ...],
    live: bool,
    jobs: int,
    as_json: bool,
    plot_path: str | None,
) -> None:
    """Replay an openb trace through hami's scheduler (filter, backend predicates, policies) and
    report the allocated share of GPU capacity as the workload arrives."""
    if seed is not None and seeds_text:
        raise click.UsageError("give --seed or --seeds, not both")
    if plot_path:  # before the run: a missing optional dependency should not cost the whole simulation
        from hami.sim.plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    from hami.errors import HamiError
    from hami.sim.runner import Job, parse_seeds, summarise

    if _mixed(nodes_path, pods_path, vendor):
        if live:
            raise click.UsageError("--live replays one device kind (an openb trace); mixed inventories and pod specs run simulated")
        try:
            seeds = [seed] if seed is not None else parse_seeds(seeds_text or "42")
            _run_mixed(nodes_path, pods_path, tuple(policies) or POLICIES_DEFAULT, seeds, vendor, as_json)
        except HamiError as exc:
            raise click.ClickException(str(exc)) from None
        return
    try:
        seeds = [seed] if seed is not None else parse_seeds(seeds_text or "42")
        job = Job(nodes_path, pods_path, split_count, tuple(backends), vendor=vendor, live=live)
        chosen = tuple(policies) or POLICIES_DEFAULT
        results = _run(job, chosen, seeds, tune, jobs)
    except HamiError as exc:
        raise click.ClickException(str(exc)) from None
    summaries = summarise(results)
    if as_json:
        for result in results:
            click.echo(json.dumps(result.as_json()))
    else:
        _table(summaries, Path(pods_path).stem, tune)
    if plot_path:
        from hami.sim.plot import plot_curves

        plot_curves(summaries, plot_path, title=f"{Path(pods_path).stem}, tune {tune}, seeds {seeds[0]}…{seeds[-1]}")
        click.echo(f"plot written to {plot_path}", err=True)


def _mixed(nodes_path: str, pods_path: str, vendor: str | None) -> bool:
    """Pod specs, or an inventory of several vendors without --vendor: every vendor's devices take part."""
    if Path(pods_path).suffix.lower() in (".yaml", ".yml"):
        return True
    if vendor is not None or Path(nodes_path).suffix.lower() not in (".yaml", ".yml", ".json"):
        return False
    from hami.backendkit.inventory import load_inventory

    return len({d.vendor for n in load_inventory(nodes_path) for d in n.devices}) > 1


def _run_mixed(nodes_path: str, pods_path: str, policies: Sequence[str], seeds: Sequence[int], vendor: str | None, as_json: bool) -> None:
    from hami.sim.mixed import MixedSimulator, csv_pods, read_pod_specs

    if Path(pods_path).suffix.lower() in (".yaml", ".yml"):
        simulator = MixedSimulator(nodes_path, read_pod_specs(pods_path))
    else:
        simulator = MixedSimulator(nodes_path, [])
        simulator.pods = csv_pods(pods_path, simulator.manager.kinds, vendor)
    results = [simulator.run(policy, seed) for policy in policies for seed in seeds]
    if as_json:
        for result in results:
            click.echo(json.dumps(result.as_json()))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hami simulate: {Path(pods_path).name} on {Path(nodes_path).name} (per vendor)")
    for column in (
        "policy",
        "seed",
        "vendor",
        "devices",
        "pods",
        "placed",
        "failed",
        "asked %",
        "granted %",
        "rounding (devices)",
        "failures",
    ):
        table.add_column(column, justify="left" if column in ("policy", "vendor", "failures") else "right")
    for r in results:
        for v in r.vendors:
            data = v.as_json()
            failures = ", ".join(f"{k} {n}" for k, n in data["failures"].items())
            table.add_row(
                r.policy,
                str(r.seed),
                v.vendor,
                str(v.devices),
                str(v.pods),
                str(v.placed),
                str(v.failed),
                f"{data['requested_pct']:.1f}",
                f"{data['granted_pct']:.1f}",
                f"{data['rounding_milli'] / 1000:.2f}",
                failures,
            )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _run(job: Job, policies: Sequence[str], seeds: Sequence[int], tune: float, jobs: int) -> list[RunResult]:
    """The runs, with a progress bar when stderr is a terminal."""
    from hami.sim.runner import run_grid

    if not sys.stderr.isatty():
        return run_grid(job, policies, seeds, tune, jobs)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
        if jobs > 1:
            overall = bar.add_task("runs", total=len(policies) * len(seeds))
            return run_grid(job, policies, seeds, tune, jobs, done=lambda _: bar.advance(overall))
        tasks: dict[tuple[str, int], TaskID] = {}

        def progress(policy: str, seed: int, done: int, total: int) -> None:
            key = (policy, seed)
            if key not in tasks:
                tasks[key] = bar.add_task(f"{policy} seed {seed}", total=total)
            bar.update(tasks[key], completed=done)

        return run_grid(job, policies, seeds, tune, 1, progress=progress)


def _table(summaries: Sequence[PolicySummary], trace: str, tune: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hami simulate: {trace}, tune {tune}")
    for column in ("policy", "runs", "alloc % @100 % arrived (mean)", "min", "max", "placed", "failed", "s/run"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for s in summaries:
        table.add_row(
            s.policy,
            str(s.runs),
            f"{s.alloc100_mean:.2f}",
            f"{s.alloc100_min:.2f}",
            f"{s.alloc100_max:.2f}",
            f"{s.placed_mean:.0f}",
            f"{s.failed_mean:.0f}",
            f"{s.seconds_mean:.1f}",
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
