"""A larger chaos run than tests/chaos (issue 19): several seeds of hami.sandbox.chaos on the default
sandbox cluster, printing per seed and in total the pods, faults, fuzzed inputs and forged annotations
tried, and the figures that must be 0: over-allocated devices, leaked locks/holdings, unclear errors,
crashes. Exits 1 when any is not 0, so a seed that fails can be replayed with --seed.

    python bench/chaos.py --seeds 5 --pods 80 --fuzz 300
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hami.sandbox.chaos import run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="first seed")
    parser.add_argument("--seeds", type=int, default=3, help="how many consecutive seeds")
    parser.add_argument("--pods", type=int, default=80)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--fuzz", type=int, default=300, help="fuzzed extender/webhook bodies per seed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    totals = dict(pods=0, running=0, faults=0, inputs=0, forgeries=0, over=0, leaked=0, unclear=0, crashes=0)
    started = time.monotonic()
    for seed in range(args.seed, args.seed + args.seeds):
        report = run_chaos(seed, pods=args.pods, workers=args.workers, fuzz=args.fuzz)
        print("\n".join(report.lines()), flush=True)
        for key, value in (
            ("pods", report.pods),
            ("running", report.running),
            ("faults", report.faults),
            ("inputs", report.inputs),
            ("forgeries", report.forgeries),
            ("over", len(report.over_allocated)),
            ("leaked", len(report.leaked)),
            ("unclear", len(report.unclear)),
            ("crashes", report.crashes),
        ):
            totals[key] += value
    print(
        f"total over {args.seeds} seeds in {time.monotonic() - started:.0f} s: pods {totals['pods']} (running {totals['running']}), "
        f"faults {totals['faults']}, inputs tried {totals['inputs']}, forged/edited {totals['forgeries']}; "
        f"over-allocated {totals['over']}, leaked {totals['leaked']}, unclear {totals['unclear']}, crashes {totals['crashes']}"
    )
    return 1 if totals["over"] or totals["leaked"] or totals["unclear"] or totals["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
