"""Iluvatar: ixsmi recordings, HAMi v2.10's per-chip resources (pkg/device/iluvatar/device.go), edits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.sdk import DeviceRequest, DeviceUsage, Grant, GrantedDevice, NodeContext, PhysicalDevice, SchedulableDevice
from hami.testing.conformance import BackendConformance
from hami_iluvatar import plugin as mod
from hami_iluvatar.plugin import plugin


class TestIluvatarConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin


def test_ixsmi_sixteen_bi_v150(read_recording):
    gpus = mod.parse_ixsmi(read_recording("ixsmi_bi-v150_x16.txt"))
    assert [g.index for g in gpus] == list(range(16))
    assert {g.name for g in gpus} == {"BI-V150"} and {g.memory_mib for g in gpus} == {32768}
    assert gpus[10].bus_id == "00000000:48:00.0"


def test_ixsmi_wide_layout_and_duo_names(read_recording):
    gpus = mod.parse_ixsmi(read_recording("ixsmi_mr-v100-duo_x2.txt"))
    assert [(g.name, g.bus_id) for g in gpus] == [("MR-V100 DUO", "00000000:35:00.0"), ("MR-V100 DUO", "00000000:38:00.0")]
    assert mod.to_device(gpus[0]).vendor == "MR-V100"


@pytest.mark.parametrize(
    ("recording", "expected"),
    [
        ("ixsmi_bi-v150s_docker.txt", [(0, "BI-V150S", "00000000:8A:00.0", 32768, "BI-V150")]),
        ("ixsmi_bi-v100_16g_v3.2.1.txt", [(0, "BI-V100", "00000000:0C:00.0", 16384, "BI-V100")]),
        (
            "ixsmi_bi-v150_x16_v4.3.0.txt",
            [
                (i, "BI-V150", f"00000000:{bus}:00.0", 32768, "BI-V150")
                for i, bus in enumerate(["13", "16", "1C", "1F", "27", "2A", "34", "37", "3D", "40", "48", "4B", "54", "57", "64", "67"])
            ],
        ),
    ],
)
def test_ixsmi_more_recordings(read_recording, recording, expected):
    """Issue 25: IX-ML 3.2.1 (a 16 GiB BI-V100), 4.0.0 under driver 4.1.0 (BI-V150S, read as the BI-V150
    chip) and 4.3.0 (Fan N/A on every GPU) parse exactly as published."""
    gpus = mod.parse_ixsmi(read_recording(recording))
    assert [(g.index, g.name, g.bus_id, g.memory_mib, mod.to_device(g).vendor) for g in gpus] == expected


def test_a_truncated_table_lists_the_gpu_unadvertised(read_recording):
    """Issue 25: a table cut after GPU 0's head line lists GPU 0 with the reason (tool and line), not an error."""
    cut = read_recording("ixsmi_bi-v100_cdi.txt").split("| 0%   35C")[0]
    (gpu,) = mod.parse_ixsmi(cut)
    assert (gpu.index, gpu.memory_mib) == (0, None)
    assert gpu.reason.startswith("memory unknown: ixsmi printed no memory line for GPU 0 (Iluvatar BI-V100) (line ")
    device = mod.to_device(gpu)
    assert (device.advertised, device.memory, device.reason) == (False, 0, gpu.reason)


def test_a_gpu_without_its_memory_line_is_listed_and_the_others_kept(fake_tools, read_recording, tmp_path):
    """Issue 25: the genuine 16 x BI-V150 recording with GPU 2's memory line deleted (a test edit; no
    published output lacks it): discovery lists all 16, GPU 2 unadvertised with the reason naming ixsmi
    and its line, the 15 others advertised with 32768 MiB (before, discovery returned nothing)."""
    lines = read_recording("ixsmi_bi-v150_x16.txt").splitlines()
    (head,) = [i for i, line in enumerate(lines) if "00000000:1C:00.0" in line]
    assert "32768MiB" in lines[head + 1], "the recording's GPU 2 memory line moved"
    edited = tmp_path / "ixsmi_no_memory_line.txt"
    edited.write_text("# source: test edit\n# ---\n" + "\n".join(lines[: head + 1] + lines[head + 2 :]) + "\n")
    fake_tools.install("ixsmi", {"": str(edited)})
    devices = plugin.hami_discover_devices({"ixsmi": "ixsmi", "ixsmi_timeout": 5.0}, NodeContext("n1"))
    assert [d.index for d in devices] == list(range(16))
    (bad,) = [d for d in devices if not d.advertised]
    assert (bad.index, bad.memory, bad.vendor) == (2, 0, "BI-V150")
    assert "ixsmi printed no memory line for GPU 2 (Iluvatar BI-V150)" in bad.reason and "00000000:1C:00.0" in bad.reason
    assert {d.memory for d in devices if d.advertised} == {32768}


@given(st.text(alphabet=st.sampled_from("|0123456789 MiB/:.ABCDEF-\nNV"), max_size=300))
def test_parser_never_fails_the_table(text):
    """Any text gives GPUs, never an error: one whose memory cannot be read carries the reason."""
    gpus = mod.parse_ixsmi(text)
    assert all((g.memory_mib is None) == bool(g.reason) and (g.memory_mib or 0) >= 0 for g in gpus)


def test_discovery_runs_ixsmi(fake_tools):
    fake_tools.install("ixsmi", {"": "ixsmi_bi-v100_cdi.txt"})
    (device,) = plugin.hami_discover_devices({"ixsmi": "ixsmi", "ixsmi_timeout": 5.0}, NodeContext("n1"))
    assert (device.vendor, device.type, device.memory, device.id) == ("BI-V100", "Iluvatar BI-V100", 32768, "iluvatar-00000000-00-06.0")
    assert fake_tools.calls("ixsmi") == [[]]


def test_absent_tool_is_no_devices(fake_tools):
    assert plugin.hami_discover_devices({"ixsmi": "ixsmi"}, NodeContext("n1")) == []


def test_unknown_chip_is_unadvertised():
    device = mod.to_device(mod.Gpu(0, "ZZ-V9", "0000:01:00.0", 16384))
    assert not device.advertised and "ZZ-V9" in device.reason


def _container(**limits):
    return {"name": "c", "resources": {"limits": {k: str(v) for k, v in limits.items()}}}


def test_vmem_is_256_mib_slices_and_cores_default_zero():
    limits = {"iluvatar.ai/BI-V100-vgpu": 1, "iluvatar.ai/BI-V100.vMem": 64, "iluvatar.ai/BI-V100.vCore": 50}
    (r,) = plugin.hami_container_requests(_container(**limits), {}, dict(mod.INFO.default_config))
    assert (r.vendor, r.count, r.memory, r.cores) == ("BI-V100", 1, 64 * 256, 50)
    (whole,) = plugin.hami_container_requests(_container(**{"iluvatar.ai/MR-V100-vgpu": 1}), {}, dict(mod.INFO.default_config))
    assert (whole.memory, whole.memory_percentage, whole.cores) == (0, 100, 0)


def test_several_gpus_are_whole():
    (r,) = plugin.hami_container_requests(_container(**{"iluvatar.ai/MR-V100-vgpu": 2}), {}, dict(mod.INFO.default_config))
    assert (r.count, r.cores, r.memory_percentage) == (2, 100, 100)


def test_uuid_selectors_are_per_chip():
    usage = DeviceUsage(SchedulableDevice(id="iluvatar-a", vendor="BI-V150", type="Iluvatar BI-V150", count=4, memory=32768))
    pod = {"metadata": {"annotations": {"hami.io/use-BI-V150-uuid": "iluvatar-b"}}}
    assert plugin.hami_device_fits(DeviceRequest("BI-V150"), usage, pod) == "CardUuidMismatch"
    other = {"metadata": {"annotations": {"hami.io/no-use-BI-V150-uuid": "x"}}}
    assert plugin.hami_device_fits(DeviceRequest("BI-V150"), usage, other) is None


def test_edits_name_the_container_and_devices():
    device = PhysicalDevice(id="i3", vendor="BI-V150", type="Iluvatar BI-V150", memory=32768, index=3)
    split = SchedulableDevice(id="i3", vendor="BI-V150", type="Iluvatar BI-V150", count=4, memory=32768, index=3)
    granted = [GrantedDevice(Grant("i3", "BI-V150", 8192, 50), device, split)]
    edits = plugin.hami_container_edits(granted, {"name": "train"})
    assert edits.env == {"IX_VISIBLE_DEVICES": "3", "SOL_CONTINER_NAME": "train"}
    assert [d.host_path for d in edits.devices] == ["/dev/iluvatar3"]
    kept = plugin.hami_container_edits(granted, {"name": "train", "env": [{"name": "SOL_CONTINER_NAME", "value": "mine"}]})
    assert "SOL_CONTINER_NAME" not in kept.env


def test_a_memory_total_printed_na_is_listed_not_advertised(fake_tools, read_recording, tmp_path):
    """Issue 25: a GPU ixsmi lists but whose total it prints as ``N/A`` is shown with the reason, the
    others unchanged. No published ixsmi output has such a cell: the BI-V150 recording with GPU 3's
    total replaced (the layout is ixsmi's own ``N/A`` for unreadable figures, as in its power column)."""
    text = read_recording("ixsmi_bi-v150_x16.txt")
    head = "| 3    Iluvatar BI-V150"
    before, after = text.split(head)
    edited = tmp_path / "ixsmi_na.txt"
    edited.write_text("# source: test edit\n# ---\n" + before + head + after.replace("116MiB / 32768MiB", "N/A / N/A", 1))
    fake_tools.install("ixsmi", {"": str(edited)})
    devices = plugin.hami_discover_devices({"ixsmi": "ixsmi", "ixsmi_timeout": 5.0}, NodeContext("n1"))
    assert len(devices) == 16
    unadvertised = [d for d in devices if not d.advertised]
    assert [(d.index, d.vendor, d.memory, d.reason) for d in unadvertised] == [(3, "BI-V150", 0, mod.UNKNOWN_MEMORY)]
    assert {d.memory for d in devices if d.advertised} == {32768}
