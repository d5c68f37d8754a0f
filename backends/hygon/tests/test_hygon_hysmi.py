"""hy-smi parsing against recorded public samples, and discovery through a fake hy-smi on PATH."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import NodeContext
from hami.wire.codec import decode_node_devices, encode_node_devices
from hami_hygon import discovery, hysmi
from hami_hygon.plugin import KIND, HygonBackend


def test_default_table_k100lc(read_recording):
    (row,) = hysmi.parse_table(read_recording("hy-smi_k100lc.txt"))
    assert row.index == 0
    assert (row.get("DCU"), row.get("VRAM%"), row.get("Mode")) == ("0", "30%", "Normal")


def test_default_table_hcu_naming(read_recording):
    rows = hysmi.parse_table(read_recording("hy-smi_hcu8.txt"))
    assert [r.index for r in rows] == list(range(8))
    assert rows[1].get("AvgPwr") == "162.0W" and rows[7].get("Mode") == "Normal"


def test_showbus(read_recording):
    buses = hysmi.parse_showbus(read_recording("hy-smi_showbus_hcu8.txt"))
    assert [b.index for b in buses] == list(range(8))
    assert buses[0].pci_bus_id == "0000:05:00.0" and buses[0].serial == "2500238601000586"
    assert [b.index for b in buses if b.serial is None] == [2, 4, 6]


def test_virtual_info_both_spellings(read_recording):
    (website,) = hysmi.parse_virtual_info(read_recording("hy-smi_virtual_show-device-info.txt"))
    assert (website.index, website.actual_device, website.compute_units, website.memory_bytes) == (0, 0, 60, 2097152000)
    (readme,) = hysmi.parse_virtual_info(read_recording("hy-virtual_show-device-info.txt"))
    assert (readme.compute_units, readme.memory_bytes // 2**20) == (9, 2000)


def test_unparseable_line_is_a_warning_naming_it(read_recording, caplog):
    text = read_recording("hy-smi_k100lc.txt") + "garbage from a newer driver\n"
    with caplog.at_level(logging.WARNING):
        rows = hysmi.parse_table(text)
    assert len(rows) == 1
    assert "garbage from a newer driver" in caplog.text


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_parsers_never_crash(text):
    hysmi.parse_table(text)
    hysmi.parse_showbus(text)
    hysmi.parse_virtual_info(text)
    hysmi.parse_indexed_values(text, "Card Series")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 63), st.sampled_from(["0000:05:00.0", "0000:b8:00.0"]), st.one_of(st.none(), st.from_regex(r"\A[0-9]{16}\Z"))
        ),
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_showbus_round_trip(entries):
    lines = [f"HCU[{i}]          : PCI Bus: {bus} --> SN: {serial or 'N/A'}" for i, bus, serial in entries]
    parsed = hysmi.parse_showbus("\n".join(["=" * 20, *lines, "=" * 20]))
    assert [(b.index, b.pci_bus_id, b.serial) for b in parsed] == entries


def test_discovery_single_k100lc(fake_tools, tmp_path):
    fake_tools.install("hy-smi", {"": "hy-smi_k100lc.txt", "virtual -show-device-info": "hy-smi_virtual_show-device-info.txt"})
    (device,) = discovery.discover({"hy_smi": "hy-smi", "sysfs_root": str(tmp_path / "nosys")}, NodeContext("n1"))
    assert device.id == "DCU-n1-0"  # --showbus not recorded: id falls back to node and index, with a warning
    assert (device.vendor, device.type, device.memory, device.index) == ("DCU", "DCU", 2000, 0)
    assert device.attributes["compute_units"] == 60
    assert (device.attributes["card"], device.attributes["render"]) == ("card0", "renderD128")
    # memory came from virtual -show-device-info, so no memory query follows; no model: --showproductname, then -a
    assert fake_tools.calls("hy-smi") == [[], ["--showbus"], ["virtual", "-show-device-info"], ["--showproductname"], ["-a"]]


def test_discovery_eight_hcus_and_csv_round_trip(fake_tools, hami_manager, register_backend, tmp_path):
    fake_tools.install("hy-smi", {"": "hy-smi_hcu8.txt", "--showbus": "hy-smi_showbus_hcu8.txt"})
    backend = HygonBackend()
    register_backend(backend, config={"memory_mib": 65536, "compute_units": 80, "sysfs_root": str(tmp_path / "nosys")})
    devices = hami_manager.discover("hygon", "n8")
    assert [d.id for d in devices][:3] == ["DCU-2500238601000586", "DCU-2500238601000600", "DCU-0000-14-00.0"]
    assert {d.memory for d in devices} == {65536} and devices[5].attributes["pci_bus_id"] == "0000:b8:00.0"
    split = [hami_manager.split(d) for d in devices]
    text = encode_node_devices(split, KIND.node_encoding)
    assert text.startswith("DCU-2500238601000586,4,65536,100,DCU,0,true,0,:")
    assert decode_node_devices(text, "DCU", "csv") == tuple(split)


def test_discovery_uses_drm_nodes_of_hygon_devices_only(fake_tools, tmp_path):
    fake_tools.install("hy-smi", {"": "hy-smi_k100lc.txt", "virtual -show-device-info": "hy-smi_virtual_show-device-info.txt"})
    drm = tmp_path / "sys" / "class" / "drm"
    for name, vendor in [
        ("card0", "0x1a03"),
        ("card1", "0x1d94"),
        ("renderD128", "0x1a03"),
        ("renderD129", "0x1d94"),
        ("card1-DP-1", "0x1d94"),
    ]:
        (drm / name / "device").mkdir(parents=True)
        (drm / name / "device" / "vendor").write_text(vendor + "\n")
    (device,) = discovery.discover({"sysfs_root": str(tmp_path / "sys")}, NodeContext("n1"))
    assert (device.attributes["card"], device.attributes["render"]) == ("card1", "renderD129")


def test_no_hysmi_means_no_devices(fake_tools, caplog):
    with caplog.at_level(logging.INFO):
        assert discovery.discover({"hy_smi": "hy-smi-not-installed"}, NodeContext("n1")) == []
    assert "not found on PATH" in caplog.text
    assert all(r.levelno < logging.WARNING for r in caplog.records), "an absent tool is not a warning"  # quiet `hami devices`


def test_health_follows_the_table(fake_tools, tmp_path):
    backend = HygonBackend()
    fake_tools.install("hy-smi", {"": "hy-smi_hcu8.txt", "--showbus": "hy-smi_showbus_hcu8.txt"})
    config = {"memory_mib": 1024, "sysfs_root": str(tmp_path)}
    node = NodeContext("n8")
    devices = backend.hami_discover_devices(config, node)
    assert backend.hami_device_health(devices, config, node) == []
    fake_tools.install("hy-smi", {"": "hy-smi_k100lc.txt"})  # only DCU 0 listed now
    events = backend.hami_device_health(devices, config, node)
    assert sorted(e.device_id for e in events) == sorted(d.id for d in devices[1:]) and not any(e.healthy for e in events)
    fake_tools.install("hy-smi", {"": "hy-smi_hcu8.txt"})
    assert all(e.healthy for e in backend.hami_device_health(devices, config, node))
