"""Issue 28 on AMD nodes: what its README's "what enforces each limit" table says, as the
``hami_enforcement`` hook reports it (nothing enforces a share's memory, so shares are whole-only unless the operator sets advisory_limits)."""

from __future__ import annotations

from hami.sdk import NodeContext, PhysicalDevice
from hami_amd import plugin as amd

REAL = NodeContext("n1")
SIMULATED = NodeContext("n1", simulated=True)


def _device(vendor: str, index: int = 0, **attributes: str) -> PhysicalDevice:
    return PhysicalDevice(id=f"amd-{index}", vendor=vendor, type=vendor, memory=16384, index=index, attributes=attributes)


def test_nothing_enforces_a_shares_memory_on_a_real_node():
    (report,) = amd.plugin.hami_enforcement([_device(amd.KIND.vendor)], amd.INFO.default_config, REAL)
    assert not report.ready and "HIP_DEVICE_MEMORY_LIMIT" in report.reason and "advisory_limits: true" in report.reason


def test_a_simulated_node_is_enforced():
    assert [r.ready for r in amd.plugin.hami_enforcement([_device(amd.KIND.vendor)], amd.INFO.default_config, SIMULATED)] == [True]


def test_the_agent_advertises_amd_gpus_whole_unless_advisory_limits(fake_tools, hami_manager, register_backend, tmp_path):
    from hami.node.devices import discover_node
    from hami_amd import rocmsmi

    fake_tools.install("rocm-smi", {" ".join(rocmsmi.ARGS): "rocm-smi_rx7900xtx_json.txt"})
    register_backend(amd.AmdBackend(amd.INFO), config={**amd.INFO.default_config, "split_count": 4})
    found = discover_node(hami_manager, "n1", tmp_path / "state").devices
    assert found and {(d.schedulable.count, d.isolation) for d in found} == {(1, "whole-only")}
    assert "HIP_DEVICE_MEMORY_LIMIT" in found[0].isolation_reason
    hami_manager.configure(amd.INFO.name, {**amd.INFO.default_config, "split_count": 4, "advisory_limits": True})
    advisory = discover_node(hami_manager, "n1", tmp_path / "state").devices
    assert {d.isolation for d in advisory} == {"advisory"} and {d.schedulable.count for d in advisory} == {4}
