"""Packing quality of every scheduling policy on the openb trace (Weng et al., USENIX ATC '23).

Each (policy, seed) run inflates ``openb_pod_list_default`` to 130 % of the cluster's GPU capacity,
shuffles it, and replays it through hami's scheduler (``hami.sim``). Reported: the allocated share
of GPU capacity when the arrived workload equals the capacity (mean, min, max over seeds), next to
the paper's figure, and seconds per run. The last line is machine-readable.

    python bench/packing.py                       # every policy, seeds 42-51, 2 processes
    python bench/packing.py --seeds 42-43 --policies fgd,bestfit
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from hami.sim.engine import RunResult
from hami.sim.runner import Job, parse_seeds, run_grid, summarise

TRACE = Path(os.environ.get("HAMI_OPENB_DIR", Path(__file__).resolve().parents[2] / "shared" / "traces" / "openb"))
POLICIES = ("random", "binpack", "spread", "bestfit", "fgd")
PAPER = {"random": 86.30, "bestfit": 92.86, "fgd": 95.23}
"""Published allocated % at 100 % arrived (mean of seeds 42-51); binpack/spread are HAMi's own."""
KEYS = {"fgd": "fgd", "bestfit": "bestfit", "binpack": "binpack", "spread": "spread"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default=str(TRACE / "openb_node_list_gpu_node.csv"))
    parser.add_argument("--pods", default=str(TRACE / "openb_pod_list_default.csv"))
    parser.add_argument("--seeds", default="42-51")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma list")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes")
    parser.add_argument("--tune", type=float, default=1.3)
    args = parser.parse_args()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    seeds = parse_seeds(args.seeds)
    started = time.perf_counter()

    def done(result: RunResult) -> None:
        print(
            f"  {result.policy:10s} seed {result.seed}: alloc@100={result.alloc100:6.2f}  {result.seconds:5.1f} s ({result.cpu_seconds:.1f} s CPU)",
            file=sys.stderr,
            flush=True,
        )

    results = run_grid(Job(args.nodes, args.pods), policies, seeds, args.tune, args.jobs, done=done)
    summaries = summarise(results)
    print(
        f"openb_pod_list_default, tune {args.tune}, seeds {args.seeds} ({len(seeds)} runs per policy), {args.jobs} process(es), {time.perf_counter() - started:.0f} s in all"
    )
    print(
        f"{'policy':10s} {'alloc@100 mean':>14s} {'min':>7s} {'max':>7s} {'paper':>7s} {'s/run mean':>10s} {'s/run max':>9s} {'CPU s max':>9s}"
    )
    for s in summaries:
        paper = f"{PAPER[s.policy]:.2f}" if s.policy in PAPER else "-"
        print(
            f"{s.policy:10s} {s.alloc100_mean:14.2f} {s.alloc100_min:7.2f} {s.alloc100_max:7.2f} {paper:>7s} {s.seconds_mean:10.1f} {s.seconds_max:9.1f} {s.cpu_seconds_max:9.1f}"
        )
    by_policy = {s.policy: s for s in summaries}
    figures = [f"{key}_alloc100={by_policy[p].alloc100_mean:.2f}" for p, key in KEYS.items() if p in by_policy]
    figures += [f"{p.replace('-', '_').replace('/', '_')}_alloc100={s.alloc100_mean:.2f}" for p, s in by_policy.items() if p not in KEYS]
    figures.append(f"max_seconds_per_run={max(s.seconds_max for s in summaries):.1f}")
    figures.append(f"max_cpu_seconds_per_run={max(s.cpu_seconds_max for s in summaries):.1f}")  # steadier on a shared machine
    figures.append(f"load_average={os.getloadavg()[0]:.1f}")
    print(" ".join(figures))


if __name__ == "__main__":
    main()
