"""AWS Neuron: neuron-ls tables AWS published, HAMi's core/device rules, contiguous devices, disjoint cores."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import BackendError, DeviceUsage, Grant, GrantedDevice, NodeContext, PhysicalDevice, RequestError, SchedulableDevice
from hami_awsneuron import neuronls
from hami_awsneuron import plugin as neuron


def test_inf1_table(read_recording):
    devices, instance = neuronls.parse(read_recording("neuron-ls_inf1.6xlarge.txt"))
    assert [(d.index, d.cores, d.memory_mib, d.connected, d.bdf) for d in devices] == [
        (0, 4, 8192, (1,), "0000:00:1c.0"),
        (1, 4, 8192, (2, 0), "0000:00:1d.0"),
        (2, 4, 8192, (3, 1), "0000:00:1e.0"),
        (3, 4, 8192, (2,), "0000:00:1f.0"),
    ]
    assert instance == ""


def test_trn2_table_counts_logical_cores(read_recording):
    devices, _ = neuronls.parse(read_recording("neuron-ls_trn2n.48xlarge.txt"))
    assert len(devices) == 16 and {d.cores for d in devices} == {4} and devices[15].connected == (11, 14, 3, 12)


def test_discovery_through_fake_neuron_ls(fake_tools):
    fake_tools.install("neuron-ls", {"": "neuron-ls_inf1.6xlarge.txt"})
    devices = neuron.discover({**neuron.INFO.default_config, "instance_type": "inf1.6xlarge"}, NodeContext("ip-10"))
    assert [d.id for d in devices] == [f"ip-10-AWSNeuron-{i}" for i in range(4)]
    assert devices[0].attributes["instance_type"] == "inf1.6xlarge"
    split = neuron.plugin.hami_split_device(devices[0], neuron.INFO.default_config)
    assert (split.count, split.memory, split.cores) == (4, 8192, 100)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("|+-0123456789 NEURONDVICSMGBA,.:\n")), max_size=400))
def test_parser_never_crashes(text):
    """Any text parses, or is refused with a BackendError (a table without the NEURON DEVICE column)."""
    try:
        devices, _ = neuronls.parse(text)
    except BackendError as exc:
        assert "NEURON DEVICE" in str(exc)
        return
    assert all(d.index >= 0 and d.cores >= 0 and d.memory_mib >= 0 for d in devices)


def test_dlami_inf1_table_without_process_columns(read_recording):
    """Issue 25: the DLAMI guide's inf1.6xlarge table (no PID/COMMAND/RUNTIME columns) reads the same devices."""
    devices, instance = neuronls.parse(read_recording("neuron-ls_inf1.6xlarge_dlami.txt"))
    assert [(d.index, d.cores, d.memory_mib, d.connected, d.bdf) for d in devices] == [
        (0, 4, 8192, (1,), "0000:00:1c.0"),
        (1, 4, 8192, (2, 0), "0000:00:1d.0"),
        (2, 4, 8192, (3, 1), "0000:00:1e.0"),
        (3, 4, 8192, (2,), "0000:00:1f.0"),
    ]
    assert instance == ""


def test_neuron_1x_table_is_a_warning_not_no_devices(fake_tools, read_recording, caplog):
    """Issue 25: Neuron 1.x's neuron-ls (PCI BDF first, no NEURON DEVICE column) used to read as "no
    devices", silently; it is refused with its header named, which discovery logs as one WARNING."""
    with pytest.raises(BackendError, match=r"without a NEURON DEVICE column \(header PCI BDF \| LOGICAL"):
        neuronls.parse(read_recording("neuron-ls_inf1.xlarge_neuron1x.txt"))
    fake_tools.install("neuron-ls", {"": "neuron-ls_inf1.xlarge_neuron1x.txt"})
    with caplog.at_level(logging.INFO):
        assert neuron.discover(neuron.INFO.default_config, NodeContext("ip-10")) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NEURON DEVICE" in warnings[0]


def _requests(limits, config=None):
    return neuron.plugin.hami_container_requests({"name": "c", "resources": {"limits": limits}}, {}, config or neuron.INFO.default_config)


def test_requests_as_hami():
    (dev,) = _requests({"aws.amazon.com/neuron": 2})
    assert (dev.count, dev.cores) == (2, 100)
    (core,) = _requests({"aws.amazon.com/neuroncore": 1})
    assert (core.count, core.attributes[neuron.NEURONCORES]) == (1, 1)
    (cores,) = _requests({"aws.amazon.com/neuroncore": 4})
    assert (cores.count, cores.cores) == (2, 100)
    with pytest.raises(RequestError, match="1 or a multiple of 2, got 3"):
        _requests({"aws.amazon.com/neuroncore": 3})
    with pytest.raises(RequestError, match="must be greater than 0"):
        _requests({"aws.amazon.com/neuroncore": 0})


def test_core_share_is_normalised_per_device():
    usage = DeviceUsage(SchedulableDevice(id="n-AWSNeuron-0", vendor="AWSNeuron", type="AWSNeuron", count=4, memory=0))
    (core,) = _requests({"aws.amazon.com/neuroncore": 1})
    normalized = neuron.plugin.hami_normalize_request(core, usage)
    assert (normalized.cores, normalized.memory_percentage) == (25, 25)
    (two,) = _requests({"aws.amazon.com/neuroncore": 2})
    small = DeviceUsage(SchedulableDevice(id="n-AWSNeuron-0", vendor="AWSNeuron", type="AWSNeuron", count=1, memory=0))
    assert neuron.plugin.hami_device_fits(two, small, {}) == "CardInsufficientCore"


def _usages(indexes, used=()):
    return [
        DeviceUsage(SchedulableDevice(id=f"d{i}", vendor="AWSNeuron", type="t", count=2, memory=0, index=i), used=1 if i in used else 0)
        for i in indexes
    ]


def test_contiguous_selection_like_graph_select():
    assert neuron.contiguous(_usages(range(16), used={1}), 4, "trn1.32xlarge") == ["d4", "d5", "d6", "d7"]
    assert neuron.contiguous(_usages(range(16)), 3, "trn1.32xlarge") == []  # only 1/4/8/16 off inf
    assert neuron.contiguous(_usages(range(4), used={0}), 3, "inf1.6xlarge") == ["d1", "d2", "d3"]
    assert neuron.contiguous(_usages([0, 2, 3]), 2, "inf2.48xlarge") == ["d2", "d3"]


def test_allocation_annotations():
    devices = {
        f"n1-AWSNeuron-{i}": SchedulableDevice(id=f"n1-AWSNeuron-{i}", vendor="AWSNeuron", type="t", count=2, memory=0, index=i)
        for i in range(4)
    }
    whole = neuron.plugin.hami_allocation_annotations(
        [[Grant("n1-AWSNeuron-2", "AWSNeuron", 0, 100), Grant("n1-AWSNeuron-3", "AWSNeuron", 0, 100)]], devices
    )
    assert (whole["AWS_NEURON_IDS"], whole["NEURON_ALLOCATED"], whole["aws.amazon.com/predicate-node"]) == ("2,3", "false", "n1")
    assert "NEURON_RESOURCE_TYPE" not in whole and whole["NEURON_ALLOC_TIME"].isdigit()
    core = neuron.plugin.hami_allocation_annotations([[], [Grant("n1-AWSNeuron-1", "AWSNeuron", 0, 50)]], devices)
    assert core["NEURON_RESOURCE_TYPE"] == "aws.amazon.com/neuroncore" and "AWS_NEURON_IDS" not in core


def _granted(index, cores, per_device=2):
    device = PhysicalDevice(id=f"n-AWSNeuron-{index}", vendor="AWSNeuron", type="AWSNeuron", memory=32768, index=index)
    split = SchedulableDevice(id=device.id, vendor="AWSNeuron", type="AWSNeuron", count=per_device, memory=0, index=index)
    return GrantedDevice(Grant(device.id, "AWSNeuron", 0, cores), device, split)


def test_cores_are_disjoint_per_device(tmp_path):
    node = NodeContext("n", simulated=True, state_dir=tmp_path)
    a = neuron.plugin.hami_container_edits([_granted(3, 50)], {"metadata": {"uid": "a"}}, {"name": "c"}, node)
    b = neuron.plugin.hami_container_edits([_granted(3, 50)], {"metadata": {"uid": "b"}}, {"name": "c"}, node)
    assert (a.env, b.env) == ({"NEURON_RT_VISIBLE_CORES": "6"}, {"NEURON_RT_VISIBLE_CORES": "7"})
    assert [d.host_path for d in a.devices] == ["/dev/neuron3"]
    eighth = neuron.plugin.hami_container_edits([_granted(1, 12, per_device=8)], {"metadata": {"uid": "c"}}, {"name": "c"}, node)
    assert eighth.env == {"NEURON_RT_VISIBLE_CORES": "8"}  # 12 % of 8 cores is one core, rounded up
    neuron.plugin.hami_release({"metadata": {"uid": "a"}}, {"name": "c"}, node)
    again = neuron.plugin.hami_container_edits([_granted(3, 50)], {"metadata": {"uid": "d"}}, {"name": "c"}, node)
    assert again.env == {"NEURON_RT_VISIBLE_CORES": "6"}
    whole = neuron.plugin.hami_container_edits([_granted(0, 100), _granted(1, 100)], {"metadata": {"uid": "e"}}, {"name": "c"}, node)
    assert whole.env == {"AWS_NEURON_VISIBLE_DEVICES": "0,1"}
