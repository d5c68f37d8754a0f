"""Issue 28 on Kunlunxin nodes: what its README's "what enforces each limit" table says, as the
``hami_enforcement`` hook reports it (whole XPUs ready; vXPU partitions ready where xpu-smi is)."""

from __future__ import annotations

from pathlib import Path

from hami.sdk import NodeContext, PhysicalDevice
from hami_kunlunxin import plugin as kunlunxin

REAL = NodeContext("n1")
SIMULATED = NodeContext("n1", simulated=True)


def _device(vendor: str, index: int = 0, **attributes: str) -> PhysicalDevice:
    return PhysicalDevice(id=f"kunlunxin-{index}", vendor=vendor, type=vendor, memory=16384, index=index, attributes=attributes)


def _tool(tmp_path: Path, name: str) -> str:
    """The vendor's management tool as an executable on this node."""
    path = tmp_path / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def _report(devices: list[PhysicalDevice], **config: object) -> list[tuple[str, bool]]:
    reports = kunlunxin.plugin.hami_enforcement(devices, {**kunlunxin.INFO.default_config, **config}, REAL)
    return [(r.vendor, r.ready) for r in reports]


def test_shares_are_enforced_where_the_vendor_stack_is(tmp_path):
    tool = _tool(tmp_path, "xpu-smi")
    (report,) = kunlunxin.plugin.hami_enforcement(
        [_device(kunlunxin.VXPU.vendor)], {**kunlunxin.INFO.default_config, "xpu_smi": tool}, REAL
    )
    assert report.ready and tool in report.mechanism and "vXPU stack" in report.mechanism


def test_without_the_vendor_stack_shares_are_whole_only_and_the_reason_says_what_to_install(tmp_path):
    missing = str(tmp_path / "xpu-smi")
    (report,) = kunlunxin.plugin.hami_enforcement(
        [_device(kunlunxin.VXPU.vendor)], {**kunlunxin.INFO.default_config, "xpu_smi": missing}, REAL
    )
    assert not report.ready
    assert missing in report.reason and "install" in report.reason and "advisory_limits: true" in report.reason


def test_a_simulated_node_is_enforced_unless_its_inventory_says_otherwise():
    devices = [_device(kunlunxin.VXPU.vendor), _device(kunlunxin.VXPU.vendor, 1, isolation_missing="no vendor stack")]
    reports = kunlunxin.plugin.hami_enforcement(devices, kunlunxin.INFO.default_config, SIMULATED)
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("kunlunxin-1",))]


def test_whole_devices_need_nothing_to_enforce(tmp_path):
    assert _report([_device(kunlunxin.WHOLE.vendor)], **{"xpu_smi": str(tmp_path / "absent")}) == [(kunlunxin.WHOLE.vendor, True)]
