"""AMD: rocm-smi parsing (recorded output), HAMi's request rules, CU masks that never overlap."""

from __future__ import annotations

import json
import logging
import re

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
from hami_amd import plugin as amd
from hami_amd import rocmsmi


def test_recorded_rocm_smi_json(read_recording):
    (card,) = rocmsmi.parse(read_recording("rocm-smi_rx7900xtx_json.txt"))
    assert (card.index, card.model, card.memory_mib) == (0, "AMD GPU", 24576)


def test_discovery_through_fake_rocm_smi(fake_tools):
    fake_tools.install("rocm-smi", {" ".join(rocmsmi.ARGS): "rocm-smi_rx7900xtx_json.txt"})
    (device,) = amd.discover(amd.INFO.default_config, NodeContext("n1"))
    assert (device.id, device.memory, device.advertised, device.attributes["render_minor"]) == ("n1-amd-gpu-0", 24576, True, 128)
    assert fake_tools.calls("rocm-smi") == [list(rocmsmi.ARGS)]


def test_absent_tool_is_quiet(fake_tools, caplog):
    with caplog.at_level(logging.INFO):
        assert amd.discover(amd.INFO.default_config, NodeContext("n1")) == []
    assert all(r.levelno < logging.WARNING for r in caplog.records)


def test_documented_fields_and_a_card_without_memory():
    text = json.dumps(
        {"card1": {"Card Series": "AMD Instinct MI300X", "PCI Bus": "0000:0C:00.0", "VRAM Total Memory (B)": "N/A"}, "system": {}}
    )
    (card,) = rocmsmi.parse(text)
    assert (card.index, card.model, card.memory_mib, card.bus) == (1, "AMD Instinct MI300X", None, "0000:0c:00.0")
    with pytest.raises(Exception, match="no JSON"):
        rocmsmi.parse("ERROR: GPU[0] : not supported")


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"\Acard[0-9]{1,2}\Z"),
        st.dictionaries(st.sampled_from(["Card series", "VRAM Total Memory (B)", "x"]), st.text(max_size=12)),
        max_size=6,
    )
)
def test_parser_takes_any_object(cards):
    parsed = rocmsmi.parse(json.dumps(cards))
    assert sorted(c.index for c in parsed) == sorted(int(k[4:]) for k in cards)


def _pod(annotations=None, limits=None):
    return {
        "metadata": {"uid": "u1", "annotations": annotations or {}},
        "spec": {"containers": [{"name": "c", "resources": {"limits": limits or {}}}]},
    }


def test_requests_follow_hami():
    (whole,) = amd.plugin.hami_container_requests({"name": "c", "resources": {"limits": {"amd.com/gpu": 2}}}, {}, amd.INFO.default_config)
    assert (whole.count, whole.memory_percentage, whole.cores) == (2, 100, 100)  # cores omitted: all CUs
    (share,) = amd.plugin.hami_container_requests(
        {"name": "c", "resources": {"limits": {"amd.com/gpu": 1, "amd.com/gpumem": 16384, "amd.com/gpucores": 25}}},
        {},
        amd.INFO.default_config,
    )
    assert (share.memory, share.cores) == (16384, 25)
    with pytest.raises(RequestError, match=re.escape("amd.com/gpucores=0")):
        amd.plugin.hami_container_requests({"name": "c", "resources": {"limits": {"amd.com/gpu": 1, "amd.com/gpucores": 0}}}, {}, {})


def test_type_and_uuid_selectors():
    usage = DeviceUsage(SchedulableDevice(id="g0", vendor="AMD", type="AMD Instinct MI300X", count=1, memory=196608))
    fits = amd.plugin.hami_device_fits
    assert fits(DeviceRequest("AMD"), usage, _pod({"amd.com/use-gputype": "mi250"}), {}) == "CardTypeMismatch"
    assert fits(DeviceRequest("AMD"), usage, _pod({"amd.com/use-gputype": "mi300x"}), {}) is None
    assert fits(DeviceRequest("AMD"), usage, _pod({"amd.com/nouse-gpu-uuid": "g0"}), {}) == "CardUuidMismatch"


def _granted(index, cores, memory, units=304):
    device = PhysicalDevice(
        id=f"g{index}", vendor="AMD", type="AMD Instinct MI300X", memory=196608, index=index, attributes={"compute_units": units}
    )
    split = SchedulableDevice(id=device.id, vendor="AMD", type=device.type, count=4, memory=196608, index=index)
    return GrantedDevice(Grant(device.id, "AMD", memory, cores), device, split)


def test_cu_masks_are_disjoint_and_released(tmp_path):
    node = NodeContext("n", simulated=True, state_dir=tmp_path)
    pod_a, pod_b = {"metadata": {"uid": "a"}}, {"metadata": {"uid": "b"}}
    edits = amd.plugin.hami_container_edits([_granted(0, 25, 16384), _granted(1, 25, 16384)], pod_a, {"name": "c"}, node)
    assert edits.env == {"ROCR_VISIBLE_DEVICES": "0,1", "HSA_CU_MASK": "0:0-75;1:0-75", "HIP_DEVICE_MEMORY_LIMIT": "16384m"}
    assert [d.host_path for d in edits.devices] == ["/dev/kfd", "/dev/dri/renderD128", "/dev/dri/renderD129"]
    again = amd.plugin.hami_container_edits([_granted(0, 25, 16384), _granted(1, 25, 16384)], pod_a, {"name": "c"}, node)
    assert again.env == edits.env  # a retried Allocate gets the same CUs
    other = amd.plugin.hami_container_edits([_granted(1, 33, 16384)], pod_b, {"name": "c"}, node)
    assert other.env["HSA_CU_MASK"] == "0:76-175"  # floor(33 × 304 / 100) = 100 CUs after pod a's
    with pytest.raises(BackendRefused, match="no 203 contiguous free units"):
        amd.plugin.hami_container_edits([_granted(1, 67, 16384)], {"metadata": {"uid": "c"}}, {"name": "c"}, node)
    amd.plugin.hami_release({"metadata": {"uid": "a"}}, {"name": "c"}, node)
    assert (
        amd.plugin.hami_container_edits([_granted(1, 25, 1000)], {"metadata": {"uid": "d"}}, {"name": "c"}, node).env["HSA_CU_MASK"]
        == "0:0-75"
    )


def test_whole_gpu_gets_no_mask_or_limit(tmp_path):
    edits = amd.plugin.hami_container_edits(
        [_granted(2, 100, 196608)], {"metadata": {"uid": "a"}}, {"name": "c"}, NodeContext("n", state_dir=tmp_path)
    )
    assert edits.env == {"ROCR_VISIBLE_DEVICES": "0"}


def test_compute_units_by_model():
    assert amd.compute_units("AMD Instinct MI250X", {}) == 220 and amd.compute_units("AMD Instinct MI250", {}) == 208
    assert (
        amd.compute_units("Radeon RX 7900 XTX", {}) == 0
        and amd.compute_units("Radeon RX 7900 XTX", {"compute_units": {"7900 XTX": 96}}) == 96
    )


def test_a_card_without_fields_is_listed_not_advertised(fake_tools, read_recording, tmp_path):
    """Issue 25: a ``card<N>`` rocm-smi lists with no fields (a string where the object should be) is a
    GPU ``hami devices`` shows, unadvertised with the reason; the recorded card is unchanged. Constructed
    from the RX 7900 XTX recording."""
    data = json.loads(read_recording("rocm-smi_rx7900xtx_json.txt"))
    data["card1"] = "N/A"
    edited = tmp_path / "rocm-smi.json"
    edited.write_text("# source: test edit\n# ---\n" + json.dumps(data))
    fake_tools.install("rocm-smi", {" ".join(rocmsmi.ARGS): str(edited)})
    devices = amd.discover(amd.INFO.default_config, NodeContext("n1"))
    assert [(d.index, d.memory, d.advertised) for d in devices] == [(0, 24576, True), (1, 0, False)]
    assert devices[1].reason.startswith("memory unknown")
