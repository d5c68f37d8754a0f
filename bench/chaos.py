"""A larger chaos run than tests/chaos (issue 19): several seeds of hami.sandbox.chaos on the default
sandbox cluster, then of its restart phases (the scheduler service, an agent with pods deleted while
it is down, a kubelet: each stopped and started while pods are in flight) and its quota race, printing
per seed and in total the pods, the fraction running and the retries per pod (pods not placed are
tried again as kube-scheduler's queues would: hami.sandbox.chaos.RetryQueue, backoff 1 s doubling to 10
s on a compressed clock), faults, fuzzed inputs, forged annotations, restarts and admissions
tried, and the figures that must be 0: over-allocated devices, leaked locks/holdings/ledgers/
reservations, unclear errors, crashes. Exits 1 when any is not 0, so a seed that fails can be replayed
with --seed.

    python bench/chaos.py --seeds 5 --pods 80 --fuzz 300 --restart-pods 60
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hami.sandbox.chaos import run_chaos, run_restarts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--seeds", type=int, default=3, help="how many consecutive seeds")
    parser.add_argument("--pods", type=int, default=80)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--fuzz", type=int, default=300, help="fuzzed extender/webhook bodies per seed")
    parser.add_argument("--restart-pods", type=int, default=48, help="pods per restart phase (3 phases per seed; 0: no restart run)")
    parser.add_argument("--quota-admissions", type=int, default=32, help="concurrent admissions per quota-race round")
    args = parser.parse_args()
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)  # the runs raise hami's loggers to INFO to count tracebacks: print only errors
    logging.basicConfig(level=logging.ERROR, handlers=[handler])
    totals = dict(
        pods=0,
        running=0,
        unschedulable=0,
        retries=0,
        max_retries=0,
        faults=0,
        inputs=0,
        forgeries=0,
        restarts=0,
        down=0,
        samples=0,
        admissions=0,
        over=0,
        leaked=0,
        unclear=0,
        crashes=0,
    )
    started = time.monotonic()
    for seed in range(args.seed, args.seed + args.seeds):
        report = run_chaos(seed, pods=args.pods, workers=args.workers, fuzz=args.fuzz)
        print("\n".join(report.lines()), flush=True)
        for key, value in (
            ("pods", report.pods),
            ("running", report.running),
            ("unschedulable", report.unschedulable),
            ("retries", sum(t - 1 for t in report.tries)),
            ("faults", report.faults),
            ("inputs", report.inputs),
            ("forgeries", report.forgeries),
            ("over", len(report.over_allocated)),
            ("leaked", len(report.leaked)),
            ("unclear", len(report.unclear)),
            ("crashes", report.crashes),
        ):
            totals[key] += value
        totals["max_retries"] = max(totals["max_retries"], *(t - 1 for t in report.tries), 0)
        if args.restart_pods:
            restarts = run_restarts(seed, pods=args.restart_pods, workers=args.workers, quota_admissions=args.quota_admissions)
            print("\n".join(restarts.lines()), flush=True)
            for key, value in (
                ("pods", restarts.pods),
                ("running", restarts.running),
                ("unschedulable", restarts.unschedulable),
                ("retries", sum(t - 1 for t in restarts.tries)),
                ("faults", restarts.faults),
                ("restarts", sum(count for _, count in restarts.restarts)),
                ("down", restarts.deleted_while_down),
                ("samples", restarts.samples),
                ("admissions", restarts.quota_tried),
                ("over", len(restarts.over_allocated)),
                ("leaked", len(restarts.leaked)),
                ("unclear", len(restarts.unclear)),
                ("crashes", restarts.crashes),
            ):
                totals[key] += value
            totals["max_retries"] = max(totals["max_retries"], *(t - 1 for t in restarts.tries), 0)
    pods = totals["pods"] or 1
    print(
        f"total over {args.seeds} seeds in {time.monotonic() - started:.0f} s: pods {totals['pods']} (running {totals['running']}, "
        f"{totals['running'] / pods:.1%}; left unschedulable at rest {totals['unschedulable']}; "
        f"retries per pod {totals['retries'] / pods:.2f}, max {totals['max_retries']}), "
        f"faults {totals['faults']}, inputs tried {totals['inputs']}, forged/edited {totals['forgeries']}, restarts {totals['restarts']} "
        f"(pods deleted while their agent was down {totals['down']}), quota admissions {totals['admissions']}, "
        f"over-allocation samples {totals['samples']}; "
        f"over-allocated {totals['over']}, leaked {totals['leaked']}, unclear {totals['unclear']}, crashes {totals['crashes']}"
    )
    return 1 if totals["over"] or totals["leaked"] or totals["unclear"] or totals["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
