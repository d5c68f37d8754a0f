"""Biren: brsmi CSV parsing (documented format: no published recording exists), whole devices, selectors, edits."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import DeviceRequest, DeviceUsage, Grant, GrantedDevice, NodeContext, PhysicalDevice, SchedulableDevice
from hami.testing.conformance import BackendConformance
from hami_biren import plugin as biren

CONFIG = biren.INFO.default_config


class TestBirenConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return biren.plugin


def test_discovery_through_fake_brsmi(fake_tools):
    fake_tools.install("brsmi", {" ".join(biren.ARGS): "brsmi_query_documented_format.txt"})
    devices = biren.discover(CONFIG, NodeContext("n1"))
    assert [(d.id, d.type, d.memory, d.index, d.attributes["card"]) for d in devices] == [
        ("GPU-0000-made-up-0", "Biren 166M", 65024, 0, "card_0"),
        ("GPU-0000-made-up-1", "Biren 166M", 65024, 1, "card_1"),
    ]
    assert fake_tools.calls("brsmi") == [list(biren.ARGS)]


def test_a_gpu_without_uuid_or_memory_gets_a_node_scoped_id_and_a_reason(tmp_path):
    tool = tmp_path / "brsmi"
    tool.write_text("#!/bin/sh\necho '3, Biren 106, , [N/A]'\n")
    tool.chmod(0o755)
    (device,) = biren.discover({**CONFIG, "brsmi": str(tool)}, NodeContext("n1"))
    assert (device.id, device.advertised) == ("n1-biren-3", False) and "memory unknown" in device.reason


def test_absent_brsmi_is_quiet_and_unknown_memory_is_explained(fake_tools, caplog):
    with caplog.at_level(logging.INFO):
        assert biren.discover(CONFIG, NodeContext("n1")) == []
    assert all(r.levelno < logging.WARNING for r in caplog.records)
    assert biren.parse("0, Biren 106, , [N/A]\nNo devices were found\n") == [(0, "Biren 106", "", None)]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789, abN/A[]\n"), max_size=200))
def test_parser_takes_any_text(text):
    for index, _, _, memory in biren.parse(text):
        assert index >= 0 and (memory is None or memory >= 0)


def test_whole_devices_and_uuid_selector():
    (request,) = biren.plugin.hami_container_requests({"name": "c", "resources": {"limits": {"birentech.com/gpu": 2}}}, {}, CONFIG)
    assert (request.vendor, request.count, request.memory_percentage) == ("Biren", 2, 100)
    split = biren.plugin.hami_split_device(PhysicalDevice(id="card_0", vendor="Biren", type="Biren 166M", memory=65024), CONFIG)
    assert (split.count, split.memory) == (1, 65024)
    pod = {"metadata": {"annotations": {"birentech.com/use-gpuuuid": "card_1"}}}
    assert biren.plugin.hami_device_fits(DeviceRequest("Biren"), DeviceUsage(split), pod, CONFIG) == "CardUuidMismatch"


def test_container_edits_are_the_device_plugins():
    granted = []
    for i in (0, 2):
        device = PhysicalDevice(id=f"card_{i}", vendor="Biren", type="Biren 166M", memory=65024, index=i)
        granted.append(
            GrantedDevice(
                Grant(device.id, "Biren", 65024, 0),
                device,
                SchedulableDevice(id=device.id, vendor="Biren", type="x", count=1, memory=65024, index=i),
            )
        )
    edits = biren.plugin.hami_container_edits(granted)
    assert edits.env == {"BR_PHY_CARDS": "card_0,card_2"}
    assert [d.host_path for d in edits.devices] == ["/dev/biren/card_0", "/dev/biren/card_2"]


def test_a_row_with_missing_fields_is_listed_not_advertised(tmp_path):
    """Issue 25: a brsmi row that starts with an index but lacks fields is a GPU brsmi reported: listed
    unadvertised with the reason, not skipped. Constructed (no public brsmi output exists)."""
    tool = tmp_path / "brsmi"
    tool.write_text("#!/bin/sh\necho '0, Biren 166M, GPU-a, 65024'\necho '1, Biren 166M'\necho 'No devices were found'\n")
    tool.chmod(0o755)
    devices = biren.discover({**CONFIG, "brsmi": str(tool)}, NodeContext("n1"))
    assert [(d.index, d.id, d.advertised) for d in devices] == [(0, "GPU-a", True), (1, "n1-biren-1", False)]
    assert "memory unknown" in devices[1].reason
    assert biren.parse("2, Biren 166M, GPU-b, ²") == [(2, "Biren 166M", "GPU-b", None)]
