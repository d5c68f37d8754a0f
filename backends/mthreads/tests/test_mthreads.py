"""Moore Threads: mthreads-gmi JSON (documented format), HAMi's sGPU request rules and annotations."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import Grant, GrantedDevice, NodeContext, PhysicalDevice, RequestError, SchedulableDevice
from hami_mthreads import plugin as mt


def test_discovery_through_fake_mthreads_gmi(fake_tools):
    fake_tools.install("mthreads-gmi", {"-q --json": "mthreads-gmi_q_json_documented.txt"})
    devices = mt.discover(mt.INFO.default_config, NodeContext("mt1"))
    assert [(d.id, d.type, d.memory) for d in devices] == [("mt1-mthreads-0", "MTT S4000", 49152), ("mt1-mthreads-1", "MTT S4000", 49152)]
    split = mt.plugin.hami_split_device(devices[0], mt.INFO.default_config)
    assert (split.count, split.cores) == (100, 16)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries({"Index": st.text(max_size=3), "FB Memory Usage": st.fixed_dictionaries({"Total": st.text(max_size=10)})}),
        max_size=5,
    )
)
def test_parser_takes_any_gpu_list(gpus):
    assert len(mt.parse(json.dumps({"GPU": gpus}))) == len(gpus)


def _requests(limits):
    return mt.plugin.hami_container_requests({"name": "c", "resources": {"limits": limits}}, {}, mt.INFO.default_config)


def test_requests_as_hami():
    (share,) = _requests({"mthreads.com/vgpu": 1, "mthreads.com/sgpu-memory": 32, "mthreads.com/sgpu-core": 8})
    assert (share.count, share.memory, share.cores) == (1, 32 * 512, 8)
    (whole,) = _requests({"mthreads.com/vgpu": 2})
    assert (whole.count, whole.memory_percentage, whole.cores) == (2, 100, 16)
    odd = {"name": "c", "resources": {"limits": {"mthreads.com/vgpu": 1, "mthreads.com/sgpu-memory": 3}}}
    assert "one of [2, 4, 8, 16, 32, 64, 96]" in mt.plugin.hami_mutate_container(odd, {}, mt.INFO.default_config).warnings[0]
    assert mt.plugin.hami_mutate_container({"name": "c", "resources": {"limits": {"mthreads.com/sgpu-memory": 4}}}, {}, {}).limits == {
        "mthreads.com/vgpu": "1"
    }
    with pytest.raises(RequestError, match="over 16"):
        _requests({"mthreads.com/vgpu": 1, "mthreads.com/sgpu-memory": 2, "mthreads.com/sgpu-core": 17})


def test_allocation_annotations_and_edits():
    devices = {
        f"n-mthreads-{i}": SchedulableDevice(id=f"n-mthreads-{i}", vendor="Mthreads", type="MTT S4000", count=100, memory=49152, index=i)
        for i in range(2)
    }
    annos = mt.plugin.hami_allocation_annotations([[Grant("n-mthreads-1", "Mthreads", 16384, 8)], []], devices)
    assert (annos["mthreads.com/gpu-index"], annos["mthreads.com/predicate-node"]) == ("1", "n")
    device = PhysicalDevice(id="n-mthreads-1", vendor="Mthreads", type="MTT S4000", memory=49152, index=1)
    edits = mt.plugin.hami_container_edits([GrantedDevice(Grant(device.id, "Mthreads", 16384, 8), device, devices[device.id])])
    assert edits.env == {"MTHREADS_VISIBLE_DEVICES": "1"} and [d.host_path for d in edits.devices] == ["/dev/mtgpu.1"]


def test_a_gpu_entry_without_figures_is_listed_not_advertised(fake_tools, read_recording, tmp_path):
    """Issue 25: every entry of mthreads-gmi's GPU list is a device ``hami devices`` shows; one that is
    not an object, or whose FB Memory Usage is not one, is listed unadvertised with the reason instead of
    vanishing (or failing the whole discovery). Constructed from the documented recording."""
    data = json.loads(read_recording("mthreads-gmi_q_json_documented.txt"))
    data["GPU"] += ["N/A", {"Index": "3", "Product Name": "MTT S4000", "FB Memory Usage": "N/A"}]
    edited = tmp_path / "gmi.json"
    edited.write_text("# source: test edit\n# ---\n" + json.dumps(data))
    fake_tools.install("mthreads-gmi", {"-q --json": str(edited)})
    devices = mt.discover(mt.INFO.default_config, NodeContext("mt1"))
    assert [(d.index, d.advertised) for d in devices] == [(0, True), (1, True), (2, False), (3, False)]
    assert all("memory unknown" in d.reason for d in devices[2:])
