"""Benchmark of the CLI's start-up: ``hami --help`` and every ``hami <cmd> --help`` against ``python -c pass``.

A user's first contact is ``--help``; kubectl and helm answer it at once, so ours should too. Each
command line runs as a fresh process (the installed ``hami`` console script, as a user runs it),
interleaved round-robin so that machine load hits every line alike; medians are compared with the bare
interpreter's start measured in the same rounds. Final line: ``help_ratio=<worst> help_s=<worst seconds>``.

Run: ``.venv/bin/python bench/cli.py [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click


def hami_executable() -> list[str]:
    """The console script next to this interpreter (what ``pip install hami`` puts on PATH)."""
    script = Path(sys.executable).with_name("hami")
    if script.exists():
        return [str(script)]
    found = shutil.which("hami")
    return [found] if found else [sys.executable, "-m", "hami.cli"]


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command, walked through click (works with eager or lazy groups)."""
    from hami.cli import cli

    paths: list[tuple[str, ...]] = []

    def walk(group: click.Group, prefix: tuple[str, ...]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            paths.append((*prefix, name))
            if isinstance(command, click.Group):
                walk(command, (*prefix, name))

    walk(cli, ())
    return paths


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="Rounds (each runs every command line once).")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAMI_", "PYTHON"))}
    hami = hami_executable()
    lines: dict[str, list[str]] = {"python -c pass": [sys.executable, "-c", "pass"], "hami --help": [*hami, "--help"]}
    for path in command_paths():
        lines[f"hami {' '.join(path)} --help"] = [*hami, *path, "--help"]
    samples: dict[str, list[float]] = {name: [] for name in lines}
    for argv in lines.values():  # warm the page cache and .pyc files, untimed
        timed(argv, env)
    for _ in range(args.repeat):
        for name, argv in lines.items():
            samples[name].append(timed(argv, env))

    floor = statistics.median(samples["python -c pass"])
    worst_ratio, worst_s = 0.0, 0.0
    width = max(len(name) for name in lines)
    print(f"{'command':<{width}}  median_ms  ratio")
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = median / floor
        print(f"{name:<{width}}  {median * 1000:9.1f}  {ratio:5.1f}")
        if name != "python -c pass":
            worst_ratio, worst_s = max(worst_ratio, ratio), max(worst_s, median)
    print(f"help_ratio={worst_ratio:.1f} help_s={worst_s:.3f} python_ms={floor * 1000:.1f} repeat={args.repeat}")


if __name__ == "__main__":
    main()
