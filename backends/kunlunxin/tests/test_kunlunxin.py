"""Kunlunxin: xpu-smi recording, HAMi v2.10's whole XPUs and vXPUs (pkg/device/kunlun/*.go), topology."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.sdk import DeviceRequest, DeviceUsage, Grant, NodeContext, SchedulableDevice
from hami.testing.conformance import BackendConformance
from hami_kunlunxin import plugin as mod
from hami_kunlunxin.plugin import plugin

CONFIG = dict(mod.INFO.default_config)


class TestKunlunxinConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin


def test_xpu_smi_eight_p800(read_recording):
    devices = mod.parse_xpu_smi(read_recording("xpu-smi_p800_x8.txt"))
    assert [d.index for d in devices] == list(range(8))
    assert {d.type for d in devices} == {"Kunlunxin P800 OAM"} and {d.memory for d in devices} == {98304}
    assert devices[4].id == "xpu-00000000-9a-00.0"


def test_xpu_smi_four_p800_one_busy(read_recording):
    """Issue 25: a busy XPU (31058 MiB in use) advertises its total, not what is free; the L3 line is not
    taken for memory."""
    devices = mod.parse_xpu_smi(read_recording("xpu-smi_p800_x4_busy.txt"))
    assert [(d.index, d.id, d.memory, d.type) for d in devices] == [
        (0, "xpu-00000000-03-00.0", 98304, "Kunlunxin P800 OAM"),
        (1, "xpu-00000000-16-00.0", 98304, "Kunlunxin P800 OAM"),
        (2, "xpu-00000000-1c-00.0", 98304, "Kunlunxin P800 OAM"),
        (3, "xpu-00000000-2e-00.0", 98304, "Kunlunxin P800 OAM"),
    ]
    assert all(d.advertised for d in devices)


def test_a_truncated_table_lists_the_last_xpu_unadvertised(read_recording):
    """Issue 25: a table cut after XPU 0's head line still lists XPU 0 (with the reason naming xpu-smi and
    the line) rather than failing discovery."""
    cut = read_recording("xpu-smi_p800_x8.txt").split("| N/A   43C")[0]
    (device,) = mod.parse_xpu_smi(cut)
    assert (device.index, device.advertised, device.memory) == (0, False, 0)
    assert device.reason.startswith("memory unknown: xpu-smi printed no memory line for XPU 0 (P800 OAM) (line ")
    assert "'|   0  P800 OAM           N/A   | 00000000:52:00.0 N/A |                    0 |'" in device.reason


def test_an_xpu_without_its_memory_line_is_listed_and_the_others_kept(fake_tools, read_recording, tmp_path):
    """Issue 25: the genuine P800 recording with XPU 3's memory line deleted (a test edit, no published
    output lacks it): XPU 3 is listed unadvertised with the reason, its L3 line (``0MiB / 96MiB``) is not
    taken for memory, and the seven others are advertised as before."""
    text = read_recording("xpu-smi_p800_x8.txt")
    line = "| N/A   39C  N/A     86W / 400W |    100MiB / 98304MiB |      0%      Default |\n"
    assert text.count(line) == 1, "the recording's XPU 3 memory line moved"
    edited = tmp_path / "xpu-smi_no_memory_line.txt"
    edited.write_text("# source: test edit\n# ---\n" + text.replace(line, ""))
    fake_tools.install("xpu-smi", {"": str(edited)})
    devices = plugin.hami_discover_devices(CONFIG, NodeContext("n"))
    assert [d.index for d in devices] == list(range(8))
    (bad,) = [d for d in devices if not d.advertised]
    assert (bad.index, bad.memory, bad.id) == (3, 0, "xpu-00000000-66-00.0")
    assert "xpu-smi printed no memory line for XPU 3 (P800 OAM)" in bad.reason and "00000000:66:00.0" in bad.reason
    assert {d.memory for d in devices if d.advertised} == {98304}


def test_a_bare_na_memory_cell_is_not_read_from_the_l3_line(read_recording):
    """Issue 25: xpu-smi printing a bare ``N/A`` (no slash) in XPU 1's Memory-Usage cell; before, the L3
    line under it (``0MiB / 96MiB``) was taken for its memory. The genuine P800 recording with that one
    cell edited (no published output has it)."""
    text = read_recording("xpu-smi_p800_x8.txt")
    line = "| N/A   37C  N/A     86W / 400W |    100MiB / 98304MiB |      0%      Default |"
    assert text.count(line) == 1, "the recording's XPU 1 memory line moved"
    devices = mod.parse_xpu_smi(text.replace(line, line.replace("   100MiB / 98304MiB ", "N/A".rjust(21))))
    assert [(d.index, d.memory, d.advertised, d.reason) for d in devices if d.index == 1] == [(1, 0, False, mod.UNKNOWN_MEMORY)]
    assert [d.memory for d in devices if d.index != 1] == [98304] * 7


@given(st.text(alphabet=st.sampled_from("|0123456789 MiB/:.ABCDEF-\nPNA"), max_size=300))
def test_parser_never_fails_the_table(text):
    """Any text gives devices, never an error: a device whose memory cannot be read is listed with a reason."""
    devices = mod.parse_xpu_smi(text)
    assert all(d.memory >= 0 and d.advertised == (d.reason == "") for d in devices)
    assert all(d.memory > 0 or not d.advertised for d in devices)


def test_a_memory_total_printed_na_is_listed_not_advertised(fake_tools, read_recording, tmp_path):
    """Issue 25: an XPU xpu-smi lists with ``N/A`` for its memory is shown with the reason (its L3 line,
    ``0MiB / 96MiB``, is not taken for the memory), the others unchanged. No published xpu-smi output has
    such a cell: the P800 recording with XPU 2's memory replaced."""
    text = read_recording("xpu-smi_p800_x8.txt")
    head = "|   2  P800 OAM"
    before, after = text.split(head)
    edited = tmp_path / "xpu-smi_na.txt"
    edited.write_text("# source: test edit\n# ---\n" + before + head + after.replace("100MiB / 98304MiB", "   N/A / N/A     ", 1))
    fake_tools.install("xpu-smi", {"": str(edited)})
    devices = plugin.hami_discover_devices(CONFIG, NodeContext("n"))
    assert len(devices) == 8
    assert [(d.index, d.memory, d.reason) for d in devices if not d.advertised] == [(2, 0, mod.UNKNOWN_MEMORY)]
    assert {d.memory for d in devices if d.advertised} == {98304}


def test_discovery_mode_picks_the_kind(fake_tools):
    fake_tools.install("xpu-smi", {"": "xpu-smi_p800_x8.txt"})
    assert {d.vendor for d in plugin.hami_discover_devices(CONFIG, NodeContext("n"))} == {"XPU"}
    assert {d.vendor for d in plugin.hami_discover_devices({**CONFIG, "mode": "whole"}, NodeContext("n"))} == {"kunlun"}


def _container(**limits):
    return {"name": "c", "resources": {"limits": {k: str(v) for k, v in limits.items()}}}


@pytest.mark.parametrize(("asked", "granted", "cores"), [(1, 24576, 25), (24576, 24576, 25), (30000, 49152, 50), (60000, 98304, 100)])
def test_vxpu_memory_is_rounded_to_a_partition(asked, granted, cores):
    (r,) = plugin.hami_container_requests(_container(**{"kunlunxin.com/vxpu": 1, "kunlunxin.com/vxpu-memory": asked}), {}, CONFIG)
    assert (r.vendor, r.memory, r.cores) == ("XPU", granted, cores)


def test_vxpu_without_memory_is_the_whole_xpu_and_admission_writes_the_partition():
    (r,) = plugin.hami_container_requests(_container(**{"kunlunxin.com/vxpu": 2}), {}, CONFIG)
    assert (r.count, r.memory, r.cores) == (2, 98304, 100)
    patch = plugin.hami_mutate_container(_container(**{"kunlunxin.com/vxpu": 1, "kunlunxin.com/vxpu-memory": 30000}), {}, CONFIG)
    assert patch.limits == {"kunlunxin.com/vxpu-memory": "49152"}


def test_whole_xpus():
    (r,) = plugin.hami_container_requests(_container(**{"kunlunxin.com/xpu": 4}), {}, CONFIG)
    assert (r.vendor, r.count, r.memory_percentage, r.cores) == ("kunlun", 4, 100, 0)


def test_a_shared_xpu_takes_one_partition_size():
    usage = DeviceUsage(SchedulableDevice(id="x0", vendor="XPU", type="P800", count=4, memory=98304), used=1, memory=24576, cores=25)
    assert plugin.hami_device_fits(DeviceRequest("XPU", memory=49152, cores=50), usage, {}) == "VxpuPartitionMismatch"
    assert plugin.hami_device_fits(DeviceRequest("XPU", memory=24576, cores=25), usage, {}) is None
    pod = {"metadata": {"annotations": {"baidu.com/use-gpuuuid": "x9"}}}
    assert plugin.hami_device_fits(DeviceRequest("XPU", memory=24576, cores=25), usage, pod) == "CardUuidMismatch"


@pytest.mark.parametrize(
    ("free", "count", "chosen"),
    [
        (range(8), 8, list(range(8))),
        (range(7), 8, []),
        ([0, 1, 2, 4, 5], 2, [4, 5]),  # the wing with exactly two free
        ([0, 4], 2, [0, 4]),  # across wings on a linked pair
        ([0, 5], 2, []),
        ([0, 1, 4, 5, 6], 4, [0, 1, 4, 5]),
        ([0, 1, 2, 3, 5, 6], 4, [0, 1, 2, 3]),
        ([0, 1, 2, 4, 5, 6], 4, [0, 1, 4, 5]),  # the first ring whose leftovers (2-6) are still a linked pair
        ([1, 2, 3, 5, 6, 7], 4, [2, 3, 6, 7]),  # 1-5 left over
        ([0, 1, 3, 4, 6, 7], 4, [0, 3, 4, 7]),  # the only ring; its leftovers (1-6) are no pair
        (range(8), 3, []),
    ],
)
def test_choose_follows_topo_go(free, count, chosen):
    assert mod.choose(list(free), count) == chosen


def test_select_uses_indexes_and_ids():
    splits = [SchedulableDevice(id=f"x{i}", vendor="kunlun", type="P800", count=1, memory=98304, index=i) for i in (0, 4, 5)]
    candidates = [DeviceUsage(s) for s in splits]
    assert plugin.hami_select_devices(DeviceRequest("kunlun", count=2), candidates) == ["x4", "x5"]


def test_whole_allocation_annotations():
    devices = {f"x{i}": SchedulableDevice(id=f"x{i}", vendor="kunlun", type="P800", count=1, memory=98304, index=i) for i in range(8)}
    values = plugin.hami_allocation_annotations("kunlun", [[], [Grant("x4", "kunlun", 98304, 0), Grant("x5", "kunlun", 98304, 0)]], devices)
    assert values == {"hami.io/kunlun-allocated": ";x4,kunlun,98304,0:x5,kunlun,98304,0:;", "BAIDU_COM_DEVICE_IDX": "4,5"}
    assert plugin.hami_allocation_annotations("XPU", [[Grant("x4", "XPU", 24576, 25)]], devices) is None
