"""Discovery through the fake npu-smi (recorded output), the inventory first, and health changes."""

from __future__ import annotations

import logging

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


def test_unknown_chips_and_unreadable_lines_are_warnings_naming_them(fake_npu_smi, hami_manager, register_backend, caplog):
    fake_npu_smi.replay_info("info_910b1_elided.txt")
    with caplog.at_level(logging.WARNING, logger="hami_ascend"):
        assert discover(hami_manager, register_backend) == []
    text = caplog.text
    assert "event=ascend_unknown_chip" in text and "name='910B1'" in text and "line=7" in text
    assert "line 13: '...'" in text


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
