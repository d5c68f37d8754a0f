"""Issue 28 on Enflame nodes: what its README's "what enforces each limit" table says, as the
``hami_enforcement`` hook reports it (whole GCUs ready; DRS shares not ready on a real node, since no DRS instance is created there)."""

from __future__ import annotations

from pathlib import Path

from hami.sdk import NodeContext, PhysicalDevice
from hami_enflame import plugin as enflame

REAL = NodeContext("n1")
SIMULATED = NodeContext("n1", simulated=True)


def _device(vendor: str, index: int = 0, **attributes: str) -> PhysicalDevice:
    return PhysicalDevice(id=f"enflame-{index}", vendor=vendor, type=vendor, memory=16384, index=index, attributes=attributes)


def _tool(tmp_path: Path, name: str) -> str:
    """The vendor's management tool as an executable on this node."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def _report(devices: list[PhysicalDevice], **config: object) -> list[tuple[str, bool]]:
    reports = enflame.plugin.hami_enforcement(devices, {**enflame.INFO.default_config, **config}, REAL)
    return [(r.vendor, r.ready) for r in reports]


def test_whole_gcus_are_ready_and_drs_shares_are_not_on_a_real_node():
    assert _report([_device(enflame.GCU.vendor), _device(enflame.DRS.vendor, 1)]) == [
        (enflame.GCU.vendor, True),
        (enflame.DRS.vendor, False),
    ]
    (drs,) = enflame.plugin.hami_enforcement([_device(enflame.DRS.vendor)], enflame.INFO.default_config, REAL)
    assert "DRS instances" in drs.reason and "advisory_limits: true" in drs.reason


def test_a_simulated_node_runs_drs_enforced():
    reports = enflame.plugin.hami_enforcement([_device(enflame.DRS.vendor)], enflame.INFO.default_config, SIMULATED)
    assert [(r.vendor, r.ready) for r in reports] == [(enflame.DRS.vendor, True)]
