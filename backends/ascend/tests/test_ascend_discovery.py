"""Discovery through the fake npu-smi (recorded output), the inventory first, and health changes."""

from __future__ import annotations

import logging

import pytest
import yaml

from hami_ascend.plugin import plugin

NODE = "n1"


def discover(hami_manager, register_backend, config=None):
    register_backend(plugin, config=config or {})
    return hami_manager.discover("ascend", NODE)


def test_910a_class_board_is_found_with_rings_of_four(fake_npu_smi, hami_manager, register_backend):
    fake_npu_smi.replay_info("info_910a_8card.txt")
    devices = discover(hami_manager, register_backend)
    assert [(d.vendor, d.index, d.memory, d.attributes["ring"]) for d in devices] == [
        ("Ascend910A", i, 32768, str(i // 4)) for i in range(8)
    ]
    assert devices[0].id == "Ascend910A-n1-0" and devices[0].attributes["bus_id"] == "0000:C1:00.0"
    assert fake_npu_smi.calls() == [["info"]]


def test_910c_dies_are_grouped_by_module(fake_npu_smi, hami_manager, register_backend):
    fake_npu_smi.replay_info("info_910c_a3_16die.txt")
    devices = discover(hami_manager, register_backend)
    assert len(devices) == 16 and {d.vendor for d in devices} == {"Ascend910C"}
    assert [(d.attributes["card"], d.attributes["chip"], d.index, d.attributes["ring"]) for d in devices[:3]] == [
        (0, 0, 0, "0"),
        (0, 1, 1, "0"),
        (1, 0, 2, "1"),
    ]


def test_310p_memory_is_capped_at_what_the_table_says_is_allocatable(fake_npu_smi, hami_manager, register_backend):
    fake_npu_smi.replay_info("info_310p3_duo.txt")
    devices = discover(hami_manager, register_backend)
    assert [(d.vendor, d.memory, d.attributes["card"], d.attributes["chip"], d.index) for d in devices] == [
        ("Ascend310P", 21527, 2, 0, 0),
        ("Ascend310P", 21527, 2, 1, 1),
    ]
    assert "ring" in devices[0].attributes and devices[0].attributes["ring"] == ""
    assert hami_manager.node_annotations("ascend", [hami_manager.split(d) for d in devices], devices) == {}


def test_unknown_chips_are_listed_unadvertised_with_what_to_add(fake_npu_smi, hami_manager, register_backend, caplog):
    """910B1 is in no chip entry (HAMi's table has none): each chip npu-smi shows is listed, not
    advertised, and the reason names the chip and the npuSmiNames to extend; the elided '...' line
    (no chip) stays a warning naming its line."""
    fake_npu_smi.replay_info("info_910b1_elided.txt")
    with caplog.at_level(logging.WARNING, logger="hami_ascend"):
        assert discover(hami_manager, register_backend) == []
    seen = hami_manager.discover("ascend", NODE, unadvertised=True)
    assert [(d.index, d.type, d.memory, d.advertised, d.attributes["bus_id"]) for d in seen] == [
        (0, "910B1", 65536, False, "0000:C1:00.0"),
        (1, "910B1", 65536, False, "0000:01:00.0"),
        (7, "910B1", 65536, False, "0000:42:00.0"),
    ]
    assert all("unknown chip '910B1'" in d.reason and "npuSmiNames" in d.reason and "templates_file" in d.reason for d in seen)
    assert "line 13: '...'" in caplog.text and "910B1" not in caplog.text  # the agent logs the chips once, not every discovery


def test_310b4_soc_with_na_bus_id_is_explained_not_dropped(fake_npu_smi, hami_manager, register_backend):
    fake_npu_smi.replay_info("info_310b4_alarm_na.txt")
    register_backend(plugin, config={})
    (chip,) = hami_manager.discover("ascend", NODE, unadvertised=True)
    assert (chip.advertised, chip.type, chip.vendor, chip.memory, chip.healthy) == (False, "310B4", "Ascend310P", 15609, False)
    assert chip.attributes["bus_id"] == "NA" and chip.attributes["health"] == "Alarm"
    assert "unknown chip '310B4'" in chip.reason


def test_a_chip_row_without_memory_figures_is_listed_unadvertised(
    fake_npu_smi, fixture_text, hami_manager, register_backend, tmp_path, caplog
):
    """Derived from the genuine 910B2C recording: NPU 1's chip row with its figures replaced by NA
    (no public output shows that), so the chip is seen, explained, and its neighbour still served."""
    text = fixture_text("info_910b2c_busy_process.txt").replace(
        "0           0    / 0          20687/ 65536", "NA          NA              NA                "
    )
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "edited.txt").write_text(text)
    fake_npu_smi.monkeypatch.setenv("FAKE_NPU_SMI_DIR", str(tmp_path / "fixtures"))
    fake_npu_smi.replay_info("edited.txt")
    with caplog.at_level(logging.WARNING, logger="hami_ascend"):
        served = discover(hami_manager, register_backend)
    assert [(d.vendor, d.index) for d in served] == [("Ascend910B2", 0)]
    (unread,) = [d for d in hami_manager.discover("ascend", NODE, unadvertised=True) if not d.advertised]
    assert (unread.index, unread.type, unread.vendor, unread.memory) == (1, "910B2C", "Ascend910B2", 0)
    assert unread.reason.startswith("memory unknown: npu-smi line 11") and "'used / total'" in unread.reason
    assert "event=ascend_npu_smi_unreadable" not in caplog.text  # explained by the device, not by a warning each time


# recording -> (vendor, phy id, card, chip, advertised MiB, healthy, ring) of every chip it shows
RECORDED = {
    "info_910a_8card.txt": [("Ascend910A", i, i, 0, 32768, True, str(i // 4)) for i in range(8)],
    "info_910b3_8card_idle.txt": [("Ascend910B3", i, i, 0, 65536, True, str(i // 4)) for i in range(8)],
    "info_910b2c_busy_process.txt": [("Ascend910B2", 0, 0, 0, 65536, True, "0"), ("Ascend910B2", 1, 1, 0, 65536, True, "0")],
    "info_910c_a3_4die_busy.txt": [("Ascend910C", n, n // 2, n % 2, 65536, True, str(n // 2)) for n in range(4)],
    "info_910c_a3_16die.txt": [("Ascend910C", n, n // 2, n % 2, 65536, True, str(n // 2)) for n in range(16)],
    "info_310p3_duo.txt": [("Ascend310P", 0, 2, 0, 21527, True, ""), ("Ascend310P", 1, 2, 1, 21527, True, "")],
    "info_310p3_npu0_npu64.txt": [("Ascend310P", 0, 0, 0, 21527, True, ""), ("Ascend310P", 1, 64, 0, 21527, True, "")],
    "info_310p3_npu32896.txt": [("Ascend310P", 0, 32896, 0, 21527, True, "")],
}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_recorded_chip_is_advertised_exactly(name, fake_npu_smi, hami_manager, register_backend):
    """Every chip each recording shows, and nothing from its process table (busy and idle NPUs, '-' and
    NA power). A 310P3 advertises HAMi's memoryAllocatable (21527) even where npu-smi shows 44213 MB:
    the table, not npu-smi, decides what is schedulable (raise it through templates_file)."""
    fake_npu_smi.replay_info(name)
    devices = discover(hami_manager, register_backend)
    assert [
        (d.vendor, d.index, d.attributes["card"], d.attributes["chip"], d.memory, d.healthy, d.attributes["ring"]) for d in devices
    ] == RECORDED[name]
    assert all(d.advertised for d in hami_manager.discover("ascend", NODE, unadvertised=True))


def test_no_npu_smi_means_no_devices(hami_manager, register_backend, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    assert discover(hami_manager, register_backend) == []


def test_a_failing_npu_smi_is_logged_not_raised(hami_manager, register_backend, tmp_path, monkeypatch, caplog):
    broken = tmp_path / "npu-smi"
    broken.write_text("#!/bin/sh\necho 'dcmi module initialize failed. ret is -8005' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    with caplog.at_level(logging.WARNING, logger="hami_ascend"):
        assert discover(hami_manager, register_backend, {"npu_smi": str(broken)}) == []
    assert "exited with 3" in caplog.text and "-8005" in caplog.text


def test_inventory_comes_first_and_carries_topology(fake_npu_smi, hami_manager, register_backend, tmp_path):
    path = tmp_path / "inv.yaml"
    devices = [
        {"vendor": "Ascend910B3", "type": "Ascend910B3", "memory": 65536, "count": 8},
        {"vendor": "Ascend310P", "type": "Ascend310P", "memory": 21527, "id": "p0", "attributes": {"phy_id": 3}},
    ]
    path.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
    found = discover(hami_manager, register_backend, {"inventory": str(path)})
    assert fake_npu_smi.calls() == []  # npu-smi is not asked when an inventory is configured
    assert [d.attributes["ring"] for d in found[:8]] == ["0"] * 4 + ["1"] * 4
    assert hami_manager.node_context("ascend", NODE).simulated and not any("simulated" in d.attributes for d in found)
    assert found[8].attributes["phy_id"] == 3 and found[8].attributes["ring"] == ""


def test_health_reports_changes_only(fake_npu_smi, hami_manager, register_backend):
    fake_npu_smi.replay_info("info_910a_8card.txt")
    devices = discover(hami_manager, register_backend)
    assert hami_manager.device_health("ascend", devices) == []
    import attrs

    flipped = [attrs.evolve(devices[0], healthy=False), attrs.evolve(devices[1], attributes={**devices[1].attributes, "card": 9})]
    events = hami_manager.device_health("ascend", flipped)
    assert [(e.device_id, e.healthy) for e in events] == [(devices[0].id, True), (devices[1].id, False)]
    assert "npu-smi health OK" in events[0].reason and "no longer listed" in events[1].reason


def test_hami_devices_explains_the_unknown_chips(fake_npu_smi, monkeypatch):
    """``hami devices`` (table and --json) on the 910B1 host: three chips shown, none advertised, each
    with the reason; nothing reads 'No devices found'."""
    import json

    from click.testing import CliRunner

    from hami.node.cli import devices_command
    from hami.plugin.manager import BackendManager

    def loaded(**kwargs):
        manager = BackendManager(allow=(), deny=())
        manager.register(plugin, name="ascend")
        return manager

    monkeypatch.setattr("hami.plugin.manager.load_backends", loaded)
    fake_npu_smi.replay_info("info_910b1_elided.txt")
    result = CliRunner().invoke(devices_command, ["--json", "--node-name", NODE])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["backend"], r["index"], r["type"], r["advertised"], r["slots"]) for r in rows] == [
        ("ascend", i, "910B1", False, 0) for i in (0, 1, 7)
    ]
    assert all("unknown chip '910B1'" in r["reason"] for r in rows)
    table = CliRunner().invoke(devices_command, ["--node-name", NODE])
    assert table.exit_code == 0 and table.output.count("not advertised: ascend") == 3
