"""Value types refuse impossible values at construction, naming the field and the value."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.errors import ValidationError
from hami.k8snames import is_extended_resource_name
from hami.plugin.model import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceKind,
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Grant,
    Mount,
    NodeInventory,
    PhysicalDevice,
    PolicyInfo,
    ResourceNames,
    SchedulableDevice,
)

KEYS = AnnotationKeys.hami("hami.io/node-x-register", "hami.io/node-handshake-x", "hami.io/x")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PhysicalDevice(id="", vendor="V", type="t", memory=1), "PhysicalDevice.id=''"),
        (lambda: PhysicalDevice(id="d", vendor="V", type="t", memory=-5), "PhysicalDevice.memory=-5"),
        (lambda: SchedulableDevice(id="d", vendor="V", type="t", count=-1, memory=1), "SchedulableDevice.count=-1"),
        (lambda: DeviceRequest("V", cores=150), "DeviceRequest.cores=150: must be at most 100"),
        (lambda: DeviceRequest("V", count=0), "DeviceRequest.count=0"),
        (lambda: DeviceRequest("V", memory=10, memory_percentage=50), "are exclusive"),
        (lambda: DeviceRequest("V", memory_percentage=101), "DeviceRequest.memory_percentage=101"),
        (lambda: DeviceRequest("V", memory=True), "DeviceRequest.memory=True"),
        (lambda: Grant("g", "V", memory=1, cores=101), "Grant.cores=101"),
        (lambda: Grant(" ", "V", memory=1), "Grant.id=' '"),
        (lambda: ResourceNames(count="gpu"), "ResourceNames.count='gpu'"),
        (lambda: ResourceNames(count="kubernetes.io/gpu"), "ResourceNames.count='kubernetes.io/gpu'"),
        (lambda: ResourceNames(count="acme.com/npu", extra=["acme.com/bad name"]), "ResourceNames.extra='acme.com/bad name'"),
        (lambda: AnnotationKeys("bad key!", "a", "b", "c"), "AnnotationKeys.node_register='bad key!'"),
        (
            lambda: AnnotationKeys("a.io/r", "a.io/h", "a.io/x-to-allocate", "a.io/x-devices-allocated"),
            "must end with '-devices-to-allocate'",
        ),
        (lambda: DeviceKind("A:B", ResourceNames("a.com/b"), KEYS), "DeviceKind.vendor='A:B'"),
        (lambda: DeviceKind("A", ResourceNames("a.com/b"), KEYS, node_encoding="xml"), "DeviceKind.node_encoding='xml'"),
        (lambda: BackendInfo(name="x", kinds=[]), "BackendInfo.kinds=()"),
        (lambda: BackendInfo(name="x", kinds=[DeviceKind("A", ResourceNames("a.com/b"), KEYS)] * 2), "vendor keys must be unique"),
        (
            lambda: BackendInfo(name="x", kinds=[DeviceKind("A", ResourceNames("a.com/b"), KEYS)], host_paths=["dev"]),
            "BackendInfo.host_paths='dev'",
        ),
        (lambda: PolicyInfo("p", "cluster"), "PolicyInfo.level='cluster'"),
        (lambda: Mount("relative", "/host"), "Mount.container_path='relative'"),
        (lambda: DeviceNode("/dev/x", "/dev/x", permissions="rwx"), "DeviceNode.permissions='rwx'"),
        (lambda: ContainerEdits(env={"1BAD": "x"}), "ContainerEdits.env='1BAD'"),
        (lambda: ContainerEdits(env={"GOOD": 1}), "ContainerEdits.env[GOOD]=1"),
        (lambda: ContainerEdits(cdi_devices=["nvidia.com/gpu"]), "ContainerEdits.cdi_devices='nvidia.com/gpu'"),
        (lambda: ContainerPatch(limits={"nvidia.com/gpu": 1}), "ContainerPatch.limits[nvidia.com/gpu]=1"),
        (lambda: NodeInventory("n", devices=[PhysicalDevice("d", "V", "t", 1)] * 2), "device ids repeat on node 'n'"),
    ],
)
def test_impossible_values_name_field_and_value(build, message):
    with pytest.raises(ValidationError) as caught:
        build()
    assert message in str(caught.value)


def test_values_are_frozen_and_do_not_share_caller_dicts():
    env = {"A": "1"}
    edits = ContainerEdits(env=env)
    env["A"] = "2"
    assert edits.env["A"] == "1"
    with pytest.raises(TypeError):
        edits.env["B"] = "3"  # type: ignore[index]
    with pytest.raises(AttributeError):
        edits.mounts = ()  # type: ignore[misc]


def test_request_memory_resolves_against_the_device():
    device = SchedulableDevice(id="d", vendor="V", type="t", count=10, memory=16000)
    assert DeviceRequest("V", memory=3000).memory_on(device) == 3000
    assert DeviceRequest("V", memory_percentage=25).memory_on(device) == 4000
    assert DeviceRequest("V").memory_on(device) == 16000  # neither given: the whole device
    assert DeviceRequest("V", cores=100).exclusive and not DeviceRequest("V", cores=99).exclusive


def test_usage_adds_and_removes_grants():
    device = SchedulableDevice(id="d", vendor="V", type="t", count=2, memory=1000, cores=100)
    usage = DeviceUsage(device).add(Grant("d", "V", 300, 30)).add(Grant("d", "V", 800, 80))
    assert (usage.used, usage.memory, usage.cores) == (2, 1100, 110)
    assert (usage.free_slots, usage.free_memory, usage.free_cores) == (0, 0, 0)  # over-commit is representable, free clamps
    usage = usage.remove(Grant("d", "V", 800, 80)).remove(Grant("d", "V", 800, 80))
    assert (usage.used, usage.memory, usage.cores) == (0, 0, 0)
    with pytest.raises(ValidationError, match=re.escape("Grant.id='other' does not match device 'd'")):
        usage.add(Grant("other", "V", 1, 0))


def test_edits_merge_unions_and_detects_conflicts():
    a = ContainerEdits(env={"A": "1"}, devices=[DeviceNode("/dev/a", "/dev/a")], cdi_devices=["acme.com/npu=0"])
    b = ContainerEdits(env={"B": "2", "A": "1"}, devices=[DeviceNode("/dev/a", "/dev/a"), DeviceNode("/dev/b", "/dev/b")])
    merged = a.merge(b)
    assert dict(merged.env) == {"A": "1", "B": "2"}
    assert [d.host_path for d in merged.devices] == ["/dev/a", "/dev/b"]
    with pytest.raises(ValidationError, match="env 'A' set twice: '1' and '9'"):
        a.merge(ContainerEdits(env={"A": "9"}))


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("nvidia.com/gpu", True),
        ("cambricon.com/mlu.smlu.vmemory", True),
        ("huawei.com/Ascend910B4-1-memory", True),
        ("gpu", False),
        ("nvidia/gpu", True),  # Kubernetes accepts a prefix without a dot
        ("kubernetes.io/gpu", False),
        ("x.kubernetes.io/gpu", False),
        ("nvidia.com/", False),
        ("nvidia.com/" + "g" * 64, False),
        ("Nvidia.com/gpu", False),
    ],
)
def test_extended_resource_names(name, valid):
    assert is_extended_resource_name(name) is valid


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=10**6))
def test_request_memory_on_never_exceeds_device_for_percentages(count, percentage, memory):
    device = SchedulableDevice(id="d", vendor="V", type="t", count=1, memory=memory)
    assert 0 <= DeviceRequest("V", count=count, memory_percentage=percentage).memory_on(device) <= memory
