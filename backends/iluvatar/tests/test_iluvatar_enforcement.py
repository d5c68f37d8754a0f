"""Issue 28 on Iluvatar nodes: what its README's "what enforces each limit" table says, as the
``hami_enforcement`` hook reports it (vMem/vCore are enforced by Iluvatar's vGPU stack only: ready where ixsmi is)."""

from __future__ import annotations

from pathlib import Path

from hami.sdk import NodeContext, PhysicalDevice
from hami_iluvatar import plugin as iluvatar

REAL = NodeContext("n1")
SIMULATED = NodeContext("n1", simulated=True)


def _device(vendor: str, index: int = 0, **attributes: str) -> PhysicalDevice:
    return PhysicalDevice(id=f"iluvatar-{index}", vendor=vendor, type=vendor, memory=16384, index=index, attributes=attributes)


def _tool(tmp_path: Path, name: str) -> str:
    """The vendor's management tool as an executable on this node."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def _report(devices: list[PhysicalDevice], **config: object) -> list[tuple[str, bool]]:
    reports = iluvatar.plugin.hami_enforcement(devices, {**iluvatar.INFO.default_config, **config}, REAL)
    return [(r.vendor, r.ready) for r in reports]


def test_shares_are_enforced_where_the_vendor_stack_is(tmp_path):
    tool = _tool(tmp_path, "ixsmi")
    (report,) = iluvatar.plugin.hami_enforcement([_device(iluvatar.CHIPS[2])], {**iluvatar.INFO.default_config, "ixsmi": tool}, REAL)
    assert report.ready and tool in report.mechanism and "vGPU stack" in report.mechanism


def test_without_the_vendor_stack_shares_are_whole_only_and_the_reason_says_what_to_install(tmp_path):
    missing = str(tmp_path / "ixsmi")
    (report,) = iluvatar.plugin.hami_enforcement([_device(iluvatar.CHIPS[2])], {**iluvatar.INFO.default_config, "ixsmi": missing}, REAL)
    assert not report.ready
    assert missing in report.reason and "install" in report.reason and "advisory_limits: true" in report.reason


def test_a_simulated_node_is_enforced_unless_its_inventory_says_otherwise():
    devices = [_device(iluvatar.CHIPS[2]), _device(iluvatar.CHIPS[2], 1, isolation_missing="no vendor stack")]
    reports = iluvatar.plugin.hami_enforcement(devices, iluvatar.INFO.default_config, SIMULATED)
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("iluvatar-1",))]
