"""MetaX: mx-smi recordings, HAMi v2.10's whole GPUs and sGPUs (pkg/device/metax/*.go)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.sdk import BackendError, DeviceRequest, DeviceUsage, Grant, NodeContext, PhysicalDevice, RequestError
from hami.testing.conformance import BackendConformance
from hami_metax import plugin as mod
from hami_metax.plugin import plugin

CONFIG = dict(mod.INFO.default_config)


class TestMetaxConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin


def test_mx_smi_c550_and_c500_layouts(read_recording):
    rows = mod.parse_mx_smi(read_recording("mx-smi_c550_x8.txt"))
    assert [r[0] for r in rows] == list(range(8)) and {r[1] for r in rows} == {"MXC550"} and {r[3] for r in rows} == {65536}
    assert rows[4][2] == "0000:aa:00.0"
    assert mod.parse_mx_smi(read_recording("mx-smi_c500_x1.txt")) == [(0, "MetaX C500", "0000:01:00.0", 65536, "")]


@pytest.mark.parametrize(
    ("recording", "expected"),
    [
        ("mx-smi_c500_x1_v2.3.1.txt", [(0, "MetaX C500", "0000:12:00.0", 65536, "")]),
        ("mx-smi_c500_x1_v2.2.9.txt", [(0, "MetaX C500", "0000:10:00.0", 65536, "")]),
        ("mx-smi_n260_x2_v2.2.8.txt", [(0, "MetaX N260", "0000:01:00.0", 65536, ""), (1, "MetaX N260", "0000:21:00.0", 65536, "")]),
    ],
)
def test_mx_smi_newer_layouts(read_recording, recording, expected):
    """Issue 25: 2.2.8 puts Persistence-M in the name cell (it is not part of the model) and 2.2.9+ adds a
    ``GPU Persist-M`` cell before the bus id; both read exactly what the recordings show (before, 2.2.9+
    gave no GPU at all and 2.2.8 the model ``MetaX N260             Off``)."""
    assert mod.parse_mx_smi(read_recording(recording)) == expected


def test_an_unknown_layout_with_attached_gpus_is_an_error_not_no_gpus(read_recording):
    moved = read_recording("mx-smi_c500_x1_v2.3.1.txt").replace("| 0000:12:00.0        |", "| 12:00.0             |")
    with pytest.raises(BackendError, match="reports 1 attached GPUs but no GPU row could be read"):
        mod.parse_mx_smi(moved)


def test_mx_smi_list_uuids(read_recording):
    assert mod.parse_uuids(read_recording("mx-smi_-L_c500.txt")) == {
        0: "GPU-e702f06b-bbd6-bc06-5196-90a5554a24ba",
        7: "GPU-0e715b45-bcef-1500-e2db-752724095700",
    }


def test_a_truncated_table_lists_the_gpu_unadvertised(read_recording):
    """Issue 25: a table cut after GPU 0's head line lists GPU 0 with the reason (tool and line), not an error."""
    cut = read_recording("mx-smi_c500_x1.txt").split("| 45C")[0]
    ((index, name, _bus, memory, reason),) = mod.parse_mx_smi(cut)
    assert (index, name, memory) == (0, "MetaX C500", None)
    assert reason.startswith("memory unknown: mx-smi printed no memory line for GPU 0 (MetaX C500) (line ")


def test_a_gpu_without_its_memory_line_is_listed_and_the_others_kept(fake_tools, read_recording, tmp_path):
    """Issue 25: the genuine MXC550 recording with GPU 3's memory line deleted (a test edit; no published
    output lacks it): discovery lists all 8, GPU 3 unadvertised with the reason naming mx-smi and its
    line, the 7 others advertised with 65536 MiB (before, discovery returned nothing)."""
    lines = read_recording("mx-smi_c550_x8.txt").splitlines()
    (head,) = [i for i, line in enumerate(lines) if "0000:5c:00.0" in line]
    assert "/65536 MiB" in lines[head + 1], "the recording's GPU 3 memory line moved"
    edited = tmp_path / "mx-smi_no_memory_line.txt"
    edited.write_text("# source: test edit\n# ---\n" + "\n".join(lines[: head + 1] + lines[head + 2 :]) + "\n")
    fake_tools.install("mx-smi", {"": str(edited), "-L": "mx-smi_-L_c500.txt"})
    devices = plugin.hami_discover_devices(CONFIG, NodeContext("n"))
    assert [d.index for d in devices] == list(range(8))
    (bad,) = [d for d in devices if not d.advertised]
    assert (bad.index, bad.memory, bad.id) == (3, 0, "metax-0000-5c-00.0")
    assert "mx-smi printed no memory line for GPU 3 (MXC550)" in bad.reason and "0000:5c:00.0" in bad.reason
    assert {d.memory for d in devices if d.advertised} == {65536}


@given(st.text(alphabet=st.sampled_from("|0123456789 MiB/:.abcdef-\nGPU#(UID)"), max_size=300))
def test_parsers_refuse_or_parse(text):
    """Only a table with attached GPUs and no readable row is an error; a row is never dropped for its memory."""
    assert all(isinstance(u, str) for u in mod.parse_uuids(text).values())
    try:
        rows = mod.parse_mx_smi(text)
    except BackendError as exc:
        assert "attached GPUs but no GPU row could be read" in str(exc)
        return
    assert all((r[3] is None) == bool(r[4]) and (r[3] or 0) >= 0 for r in rows)


def test_a_memory_total_printed_na_is_listed_not_advertised(fake_tools, read_recording, tmp_path):
    """Issue 25: a GPU mx-smi lists with ``N/A`` for its total is shown with the reason, the others
    unchanged. No published mx-smi output has such a cell: the MXC550 recording with GPU 5's total
    replaced."""
    text = read_recording("mx-smi_c550_x8.txt")
    head = "| 5 "
    before, after = text.split(head, 1)
    used_total = re.search(r"\d+/65536 MiB", after)
    assert used_total, "the recording's memory cell moved"
    edited = tmp_path / "mx-smi_na.txt"
    edited.write_text(
        "# source: test edit\n# ---\n" + before + head + after.replace(used_total[0], "N/A/N/A MiB".ljust(len(used_total[0])), 1)
    )
    fake_tools.install("mx-smi", {"": str(edited), "-L": "mx-smi_-L_c500.txt"})
    devices = plugin.hami_discover_devices(CONFIG, NodeContext("n"))
    assert len(devices) == 8
    assert [(d.index, d.memory, d.reason) for d in devices if not d.advertised] == [(5, 0, mod.UNKNOWN_MEMORY)]
    assert {d.memory for d in devices if d.advertised} == {65536}


def test_discovery_runs_both_commands(fake_tools):
    fake_tools.install("mx-smi", {"": "mx-smi_c550_x8.txt", "-L": "mx-smi_-L_c500.txt"})
    devices = plugin.hami_discover_devices(CONFIG, NodeContext("n"))
    assert len(devices) == 8 and {d.vendor for d in devices} == {"Metax-SGPU"} and devices[0].type == "MetaX MXC550"
    assert devices[0].id == "GPU-e702f06b-bbd6-bc06-5196-90a5554a24ba" and devices[1].id == "metax-0000-3a-00.0"
    assert fake_tools.calls("mx-smi") == [[], ["-L"]]
    gpu = plugin.hami_discover_devices({**CONFIG, "mode": "gpu"}, NodeContext("n"))
    assert plugin.hami_split_device(gpu[0], CONFIG).count == 1


def _container(**limits):
    return {"name": "c", "resources": {"limits": {k: str(v) for k, v in limits.items()}}}


@pytest.mark.parametrize(("vmemory", "mib"), [("4", 4096), ("2048Mi", 2048), ("4Gi", 4096)])
def test_vmemory_plain_is_gib_with_unit_bytes(vmemory, mib):
    limits = {"metax-tech.com/sgpu": 1, "metax-tech.com/vcore": 60, "metax-tech.com/vmemory": vmemory}
    (r,) = plugin.hami_container_requests(_container(**limits), {}, CONFIG)
    assert (r.vendor, r.memory, r.memory_percentage, r.cores) == ("Metax-SGPU", mib, None, 60)


def test_sgpu_defaults_and_whole_gpu():
    (r,) = plugin.hami_container_requests(_container(**{"metax-tech.com/sgpu": 1}), {}, CONFIG)
    assert (r.memory_percentage, r.cores) == (100, 100)
    (g,) = plugin.hami_container_requests(_container(**{"metax-tech.com/gpu": 2}), {}, CONFIG)
    assert (g.vendor, g.count, g.memory_percentage, g.cores) == ("Metax-GPU", 2, 100, 100)


@pytest.mark.parametrize(
    ("annotations", "count", "match"),
    [
        ({"metax-tech.com/sgpu-app-class": "batch"}, 1, "must be one of online, offline"),
        ({"metax-tech.com/sgpu-app-class": "online"}, 2, "single sGPU"),
        ({"metax-tech.com/sgpu-qos-policy": "fast"}, 1, "best-effort"),
    ],
)
def test_bad_sgpu_annotations_are_refused(annotations, count, match):
    with pytest.raises(RequestError, match=match):
        plugin.hami_container_requests(_container(**{"metax-tech.com/sgpu": count}), {"metadata": {"annotations": annotations}}, CONFIG)


def test_bad_vmemory_names_the_value():
    with pytest.raises(RequestError, match="vmemory"):
        plugin.hami_container_requests(_container(**{"metax-tech.com/sgpu": 1, "metax-tech.com/vmemory": "lots"}), {}, CONFIG)


def _split(i, zone=0):
    attributes = {"link_zone": zone, "pci_bus_id": f"0000:0{i}:00.0"}
    device = PhysicalDevice(id=f"g{i}", vendor="Metax-SGPU", type="MetaX C500", memory=65536, index=i, attributes=attributes)
    return device, plugin.hami_split_device(device, CONFIG)


def test_node_annotation_and_link_zone_selection():
    pairs = [_split(i, zone) for i, zone in enumerate([1, 1, 2, 2, 2, 0])]
    annotation = plugin.hami_node_annotations([s for _, s in pairs], [p for p, _ in pairs]).values[mod.NODE_DEVICES]
    listed = json.loads(annotation)
    assert listed[0] == {
        "uuid": "g0",
        "bdf": "0000:00:00.0",
        "model": "MetaX C500",
        "totalDevCount": 16,
        "totalCompute": 100,
        "totalVRam": 65536,
        "healthy": True,
        "linkZone": 1,
    }
    assert "linkZone" not in listed[5]
    candidates = [DeviceUsage(s) for _, s in pairs]
    node = {mod.NODE_DEVICES: annotation}
    assert plugin.hami_select_devices(DeviceRequest("Metax-SGPU", count=2, cores=100), candidates, node) == ["g0", "g1"]
    assert plugin.hami_select_devices(DeviceRequest("Metax-SGPU", count=3, cores=100), candidates, node) == ["g2", "g3", "g4"]
    assert plugin.hami_select_devices(DeviceRequest("Metax-SGPU", count=4, cores=100), candidates, node) == ["g0", "g1", "g2", "g3"]
    assert plugin.hami_select_devices(DeviceRequest("Metax-SGPU", count=2, cores=50), candidates, node) is None


def test_allocation_annotations_in_metax_format():
    containers = [[], [Grant("g0", "Metax-SGPU", 4096, 60)], [Grant("g1", "Metax-SGPU", 0, 0)]]
    values = plugin.hami_allocation_annotations("Metax-SGPU", containers)
    assert json.loads(values[mod.ALLOCATED]) == [[], [{"uuid": "g0", "compute": 60, "vRam": 4096}], [{"uuid": "g1"}]]
    assert int(values[mod.PREDICATE_TIME]) > 0
    assert plugin.hami_allocation_annotations("Metax-GPU", [[Grant("g0", "Metax-GPU", 0, 100)]]) is None
