"""Vastai: vasmi JSON parsing (documented format: no published recording exists), whole devices, selectors, edits."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import BackendError, DeviceRequest, DeviceUsage, Grant, GrantedDevice, NodeContext, PhysicalDevice
from hami.testing.conformance import BackendConformance
from hami_vastai import plugin as vastai

CONFIG = vastai.INFO.default_config


class TestVastaiConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return vastai.plugin


def test_discovery_through_fake_vasmi(fake_tools):
    fake_tools.install("vasmi", {" ".join(vastai.ARGS): "vasmi_getmem_documented_format.txt"})
    devices = vastai.discover(CONFIG, NodeContext("n1"))
    assert [(d.id, d.memory, d.index, d.attributes["pci_bus"]) for d in devices] == [
        ("n1-vastai-0", 16384, 0, "0000:3b:00.0"),
        ("n1-vastai-1", 32768, 1, "0000:5e:00.0"),
    ]
    assert fake_tools.calls("vasmi") == [list(vastai.ARGS)]


def test_absent_vasmi_is_quiet_and_bad_output_is_named(fake_tools, caplog):
    with caplog.at_level(logging.INFO):
        assert vastai.discover(CONFIG, NodeContext("n1")) == []
    assert all(r.levelno < logging.WARNING for r in caplog.records)
    with pytest.raises(BackendError, match="no JSON"):
        vastai.parse("Error: no device")
    with pytest.raises(BackendError, match="no 'elem' list"):
        vastai.parse("[]")
    assert vastai.parse('{"elem": [{"pci_bus": "x", "vals": {"Physical": {"value": "N/A"}}}]}') == [("x", "", None)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["pci_bus", "sn", "vals"]),
            st.one_of(
                st.text(max_size=8),
                st.dictionaries(st.sampled_from(["Physical", "x"]), st.dictionaries(st.just("value"), st.text(max_size=10))),
            ),
        )
    )
)
def test_parser_takes_any_elem_list(elems):
    rows = vastai.parse(json.dumps({"elem": elems}))
    assert len(rows) == len(elems) and all(m is None or m >= 0 for _, _, m in rows)


def test_whole_devices_uuid_selector_and_edits():
    (request,) = vastai.plugin.hami_container_requests({"name": "c", "resources": {"limits": {"vastaitech.com/va": 1}}}, {}, CONFIG)
    assert (request.vendor, request.count, request.memory_percentage) == ("Vastai", 1, 100)
    device = PhysicalDevice(id="n-vastai-2", vendor="Vastai", type="Vastai", memory=16384, index=2)
    split = vastai.plugin.hami_split_device(device, CONFIG)
    pod = {"metadata": {"annotations": {"vastaitech.com/nouse-gpuuuid": "n-vastai-2"}}}
    assert vastai.plugin.hami_device_fits(DeviceRequest("Vastai"), DeviceUsage(split), pod, CONFIG) == "CardUuidMismatch"
    edits = vastai.plugin.hami_container_edits([GrantedDevice(Grant(device.id, "Vastai", 16384, 0), device, split)])
    assert edits.env == {"VASTAI_VISIBLE_DEVICES": "2"} and not edits.devices


def test_an_elem_without_figures_is_listed_not_advertised(fake_tools, read_recording, tmp_path):
    """Issue 25: an ``elem`` entry that is not an object is a device vasmi reported: listed unadvertised,
    with the reason, the others unchanged. Constructed (no public vasmi output exists)."""
    data = json.loads(read_recording("vasmi_getmem_documented_format.txt"))
    data["elem"].insert(1, "N/A")
    edited = tmp_path / "vasmi.json"
    edited.write_text("# source: test edit\n# ---\n" + json.dumps(data))
    fake_tools.install("vasmi", {" ".join(vastai.ARGS): str(edited)})
    devices = vastai.discover(CONFIG, NodeContext("n1"))
    assert [(d.index, d.memory, d.advertised) for d in devices] == [(0, 16384, True), (1, 0, False), (2, 32768, True)]
    assert "memory unknown" in devices[1].reason
