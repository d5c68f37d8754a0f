"""Issue 28 on Moore Threads nodes: what its README's "what enforces each limit" table says, as the
``hami_enforcement`` hook reports it (sGPU limits are enforced by Moore Threads' stack only: ready where mthreads-gmi is)."""

from __future__ import annotations

from pathlib import Path

from hami.sdk import NodeContext, PhysicalDevice
from hami_mthreads import plugin as mthreads

REAL = NodeContext("n1")
SIMULATED = NodeContext("n1", simulated=True)


def _device(vendor: str, index: int = 0, **attributes: str) -> PhysicalDevice:
    return PhysicalDevice(id=f"mthreads-{index}", vendor=vendor, type=vendor, memory=16384, index=index, attributes=attributes)


def _tool(tmp_path: Path, name: str) -> str:
    """The vendor's management tool as an executable on this node."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def _report(devices: list[PhysicalDevice], **config: object) -> list[tuple[str, bool]]:
    reports = mthreads.plugin.hami_enforcement(devices, {**mthreads.INFO.default_config, **config}, REAL)
    return [(r.vendor, r.ready) for r in reports]


def test_shares_are_enforced_where_the_vendor_stack_is(tmp_path):
    tool = _tool(tmp_path, "mthreads-gmi")
    (report,) = mthreads.plugin.hami_enforcement([_device(mthreads.VENDOR)], {**mthreads.INFO.default_config, "mthreads_gmi": tool}, REAL)
    assert report.ready and tool in report.mechanism and "sGPU stack" in report.mechanism


def test_without_the_vendor_stack_shares_are_whole_only_and_the_reason_says_what_to_install(tmp_path):
    missing = str(tmp_path / "mthreads-gmi")
    (report,) = mthreads.plugin.hami_enforcement(
        [_device(mthreads.VENDOR)], {**mthreads.INFO.default_config, "mthreads_gmi": missing}, REAL
    )
    assert not report.ready
    assert missing in report.reason and "install" in report.reason and "advisory_limits: true" in report.reason


def test_a_simulated_node_is_enforced_unless_its_inventory_says_otherwise():
    devices = [_device(mthreads.VENDOR), _device(mthreads.VENDOR, 1, isolation_missing="no vendor stack")]
    reports = mthreads.plugin.hami_enforcement(devices, mthreads.INFO.default_config, SIMULATED)
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("mthreads-1",))]
