"""Shared helpers for the simulator tests: tiny traces written as openb CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hami.plugin.manager import BackendManager, load_backends

NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model\n"
POD_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"


def write_nodes(path: Path, rows: list[tuple[str, int, int, int, str]]) -> Path:
    path.write_text(NODE_HEADER + "".join(f"{n},{c},{m},{g},{model}\n" for n, c, m, g, model in rows))
    return path


def write_pods(path: Path, rows: list[tuple]) -> Path:
    lines = []
    for row in rows:
        name, cpu, mem, num, milli, *rest = row
        spec = rest[0] if rest else ""
        lines.append(f"{name},{cpu},{mem},{num},{milli},{spec},LS,Running,0,0,0\n")
    path.write_text(POD_HEADER + "".join(lines))
    return path


@pytest.fixture(scope="session")
def nvidia_manager() -> BackendManager:
    """The installed NVIDIA backend and the built-in policies, loaded once (runs re-attach policies)."""
    return load_backends(allow=["nvidia"])
