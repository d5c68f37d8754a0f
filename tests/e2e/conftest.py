"""The e2e tests' clusters of the issue-29 shape come from bench/sandbox.py's writer, so the tests and
the benchmark run the same nodes and pods."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sandbox.py"


@pytest.fixture(scope="session")
def write_cluster() -> Callable[[Path, int, int], tuple[Path, Path]]:
    """``write_cluster(directory, nodes, pods)``: A100x8 nodes and pods asking one GPU, 3000 MiB and 10 %."""
    spec = importlib.util.spec_from_file_location("hami_bench_sandbox", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.write_cluster
