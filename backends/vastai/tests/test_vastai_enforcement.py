"""Issue 28 on Vastai nodes: what its README's "what enforces each limit" table says, as the
``hami_enforcement`` hook reports it (whole devices only: nothing shared, so nothing to enforce)."""

from __future__ import annotations

from pathlib import Path

from hami.sdk import NodeContext, PhysicalDevice
from hami_vastai import plugin as vastai

REAL = NodeContext("n1")
SIMULATED = NodeContext("n1", simulated=True)


def _device(vendor: str, index: int = 0, **attributes: str) -> PhysicalDevice:
    return PhysicalDevice(id=f"vastai-{index}", vendor=vendor, type=vendor, memory=16384, index=index, attributes=attributes)


def _tool(tmp_path: Path, name: str) -> str:
    """The vendor's management tool as an executable on this node."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def _report(devices: list[PhysicalDevice], **config: object) -> list[tuple[str, bool]]:
    reports = vastai.plugin.hami_enforcement(devices, {**vastai.INFO.default_config, **config}, REAL)
    return [(r.vendor, r.ready) for r in reports]


def test_whole_devices_are_ready_on_a_real_node():
    assert _report([_device(vastai.KIND.vendor), _device(vastai.KIND.vendor, 1)]) == [(vastai.KIND.vendor, True)]


def test_a_simulated_node_is_enforced_unless_its_inventory_says_otherwise():
    devices = [_device(vastai.KIND.vendor), _device(vastai.KIND.vendor, 1, isolation_missing="broken")]
    reports = vastai.plugin.hami_enforcement(devices, vastai.INFO.default_config, SIMULATED)
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("vastai-1",))]
