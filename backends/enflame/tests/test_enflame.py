"""Enflame: efsmi parsing (recorded outputs), HAMi v2.10's GCU and DRS request rules, allocation annotations."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import (
    BackendRefused,
    DeviceRequest,
    DeviceUsage,
    Grant,
    GrantedDevice,
    NodeContext,
    PhysicalDevice,
    RequestError,
    SchedulableDevice,
)
from hami_enflame import efsmi
from hami_enflame import plugin as enflame

CONFIG = enflame.INFO.default_config


@pytest.mark.parametrize(
    ("recording", "expected"),
    [
        ("efsmi_l300_v1.7.2.14.txt", [(0, "Enflame L300", "00:2d:00.0", 147456, "Disable", "A098Q50610048")]),
        (
            "efsmi_s60g_x2_v1.6.3.12.txt",
            [
                (0, "Enflame S60G", "00:2e:00.0", 23552, "SRIOV", "A018K30520031"),
                (1, "Enflame S60G", "00:2f:00.0", 23552, "SRIOV", "A018K30520031"),
            ],
        ),
        (
            "efsmi_s60_x2_v1.2.0.301.txt",
            [(0, "S60", "00:01:00.0", 49120, "Disable", "A073640510015"), (1, "S60", "00:09:00.0", 42976, "Disable", "C807J40510285")],
        ),
        (
            "efsmi_t20_x2_v1.20.0.txt",
            [(0, "T20", "00:3d:0.0", 32768, "Disable", "W28001210504"), (1, "T20", "00:3e:0.0", 32768, "Disable", "W28001010604")],
        ),
    ],
)
def test_recorded_efsmi_tables(read_recording, recording, expected):
    cards = efsmi.parse(read_recording(recording))
    assert [(c.index, c.model, c.bus, c.memory_mib, c.virt, c.serial) for c in cards] == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("|* 0123456789abcdefGMiB:.SRIOVDisable\n"), max_size=60), max_size=12))
def test_parser_never_crashes(lines):
    for card in efsmi.parse("\n".join(lines)):
        assert card.memory_mib is None or card.memory_mib >= 0


def test_discovery_through_fake_efsmi(fake_tools):
    fake_tools.install("efsmi", {"": "efsmi_s60_x2_v1.2.0.301.txt"})
    devices = enflame.discover(CONFIG, NodeContext("n1"))
    assert [(d.id, d.vendor, d.memory, d.advertised) for d in devices] == [
        ("n1-GCU-0", "GCU", 49120, True),
        ("n1-GCU-1", "GCU", 42976, True),
    ]
    drs = enflame.discover({**CONFIG, "node_mode": {"n1": "drs"}}, NodeContext("n1"))
    assert {d.vendor for d in drs} == {"Enflame"} and drs[0].id == "n1-enflame-drs-0"
    assert fake_tools.calls("efsmi") == [[], []]


def test_absent_efsmi_is_quiet_and_a_card_without_memory_is_explained(fake_tools, caplog, tmp_path):
    with caplog.at_level(logging.INFO):
        assert enflame.discover(CONFIG, NodeContext("n1")) == []
    assert all(r.levelno < logging.WARNING for r in caplog.records)
    broken = tmp_path / "efsmi"
    broken.write_text("#!/bin/sh\necho '| 0      S60                 | 33.6.2          | 00:01:00.0  Disable       |'\n")
    broken.chmod(0o755)
    (device,) = enflame.discover({**CONFIG, "efsmi": str(broken)}, NodeContext("n1"))
    assert not device.advertised and "memory unknown" in device.reason


def test_a_card_whose_bus_id_is_unreadable_is_still_listed(read_recording):
    """Issue 25: a card row whose BUS-ID cell holds no bus id (``N/A``) was skipped, and its memory row
    then belonged to no card: the card vanished. Now it is listed, without a bus. Constructed: the S60G
    recording with card 1's bus id replaced (no published efsmi shows N/A there)."""
    text = read_recording("efsmi_s60g_x2_v1.6.3.12.txt").replace("00:2f:00.0", "N/A       ")
    cards = efsmi.parse(text)
    assert [(c.index, c.bus, c.memory_mib) for c in cards] == [(0, "00:2e:00.0", 23552), (1, "", 23552)]


def _requests(limits):
    return enflame.plugin.hami_container_requests({"name": "c", "resources": {"limits": limits}}, {}, CONFIG)


def test_whole_gcus_and_drs_profiles_as_hami_chooses_them():
    (whole,) = _requests({"enflame.com/gcu": 2})
    assert (whole.vendor, whole.count, whole.memory_percentage, whole.cores) == ("GCU", 2, 100, 100)
    (direct,) = _requests({"enflame.com/drs-gcu": 3})  # device_test.go: Memreq 3 (direct) -> 3g.20gb
    assert (direct.vendor, direct.memory, direct.cores, direct.attributes["profile"]) == ("Enflame", 20480, 50, "3g.20gb")
    (spec,) = _requests({"enflame.com/drs-gcu": 1, "enflame.com/gcu-memory": 20480, "enflame.com/gcu-core": 40})  # MiB -> 20 GB, 40 %
    assert spec.attributes["profile"] == "3g.20gb"
    (small,) = _requests({"enflame.com/gcu-memory": 5})  # GB: the smallest profile with 5 GB
    assert (small.attributes["profile"], small.memory, small.cores) == ("1g.6gb", 6144, 17)
    with pytest.raises(RequestError, match="no DRS profile fits"):
        _requests({"enflame.com/drs-gcu": 2})
    with pytest.raises(RequestError, match=r"enflame.com/gcu-core=120 must be in range \(0,100\]"):
        _requests({"enflame.com/gcu-core": 120})
    with pytest.raises(RequestError, match=r"'c'.*enflame.com/drs-gcu must be greater than 0"):
        _requests({"enflame.com/drs-gcu": 0})


def test_bad_profile_names_are_named():
    with pytest.raises(Exception, match="'3g-20gb' is not a DRS profile name"):
        enflame.profiles({"drs_profiles": {"3g-20gb": "1"}})


def test_split_and_uuid_selector():
    card = PhysicalDevice(id="n-enflame-drs-0", vendor="Enflame", type="S60", memory=49120)
    split = enflame.plugin.hami_split_device(card, CONFIG)
    assert (split.count, split.memory, split.cores) == (6, 40960, 100)
    usage = DeviceUsage(split)
    pod = {"metadata": {"annotations": {"enflame.com/nouse-gpuuuid": "n-enflame-drs-0"}}}
    assert enflame.plugin.hami_device_fits(DeviceRequest("Enflame"), usage, pod, CONFIG) == "CardUuidMismatch"


def test_allocation_annotations_are_hamis_drs_patch():
    device = SchedulableDevice(id="d2", vendor="Enflame", type="S60", count=6, memory=40960, index=2)
    pod = {"spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "main"}]}}
    out = enflame.plugin.hami_allocation_annotations("Enflame", [[], [Grant("d2", "Enflame", 20480, 50)]], {"d2": device}, pod, CONFIG)
    assert json.loads(out.pop("assigned-containers")) == {
        "main": {"allocated": False, "request": 3, "profileID": "1", "profileName": "3g.20gb"}
    }
    assert int(out.pop("enflame.com/gcu-assigned-time")) > 0
    assert out == {
        "enflame.com/gcu-assigned": "false",
        "enflame.com/gcu-assigned-index": "2",
        "enflame.com/gcu-assigned-id": "2",
        "enflame.com/gcu-assigned-minor": "2",
        "enflame.com/gcu-request-size": "3",
    }
    assert enflame.plugin.hami_allocation_annotations("GCU", [[Grant("d2", "GCU", 0, 100)]], {"d2": device}, pod, CONFIG) is None


def _granted(vendor, index):
    device = PhysicalDevice(id=f"g{index}", vendor=vendor, type="S60", memory=49120, index=index)
    split = SchedulableDevice(id=device.id, vendor=vendor, type="S60", count=1, memory=49120, index=index)
    return GrantedDevice(Grant(device.id, vendor, 49120, 100), device, split)


def test_container_edits(tmp_path):
    edits = enflame.plugin.hami_container_edits([_granted("GCU", 0), _granted("GCU", 3)], NodeContext("n", state_dir=tmp_path))
    assert edits.env == {"ENFLAME_VISIBLE_DEVICES": "0,3"}
    assert enflame.plugin.hami_container_edits([_granted("Enflame", 1)], NodeContext("n", simulated=True)).env == {
        "ENFLAME_VISIBLE_DEVICES": "1"
    }
    with pytest.raises(BackendRefused, match="DRS instances"):
        enflame.plugin.hami_container_edits([_granted("Enflame", 1)], NodeContext("n"))
