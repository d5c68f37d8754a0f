"""HAMi's partition-instance pod annotation (hami.wire.partitions) and the value a backend reports it
with (PartitionInstance in ContainerEdits).

Upstream: Project-HAMi/HAMi pkg/device/nvidia/mig_allocations.go (the JSON shape, EncodeMigAllocations,
DecodeMigAllocations' checks) and the annotation values its own tests use
(pkg/device-plugin/nvidiadevice/nvinternal/plugin/mig_startup_test.go).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami import hookimpl
from hami.errors import AnnotationError, ContractError, ValidationError
from hami.plugin.model import AnnotationKeys, BackendInfo, ContainerEdits, DeviceKind, Grant, PartitionInstance, ResourceNames
from hami.wire import partitions
from hami.wire.partitions import PartitionAllocation

# verbatim from upstream's mig_startup_test.go: a reservation the plugin has not realized yet
UPSTREAM_RESERVED = '[{"containerIndex":0,"deviceIndex":0,"gpuUUID":"GPU-live","profile":"1g.5gb","placement":{"start":6,"size":1}}]'
# the same after the plugin filled the runtime identity (server.go annotateMigRuntimeInfo, json.Marshal field order)
UPSTREAM_REALIZED = (
    '[{"containerIndex":0,"deviceIndex":0,"gpuUUID":"GPU-parent","profile":"2g.10gb","placement":{"start":2,"size":2},'
    '"migUUID":"MIG-child","gpuInstanceID":4,"computeInstanceID":0}]'
)


def test_upstream_values_are_read():
    (reserved,) = partitions.decode(UPSTREAM_RESERVED)
    assert reserved == PartitionAllocation(0, PartitionInstance(0, "GPU-live", "1g.5gb", 6, 1))
    assert not reserved.instance.realized
    (realized,) = partitions.decode(UPSTREAM_REALIZED)
    assert realized.instance == PartitionInstance(0, "GPU-parent", "2g.10gb", 2, 2, "MIG-child", 4, 0)
    assert realized.instance.realized
    assert partitions.encode([realized]) == UPSTREAM_REALIZED  # byte for byte what upstream writes
    assert partitions.encode([reserved]) == UPSTREAM_RESERVED
    assert partitions.decode("") == partitions.decode(None) == ()


_u32 = st.integers(0, 0xFFFFFFFF)
_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_instance = st.builds(
    PartitionInstance,
    device_index=st.integers(0, 16),
    device=_text,
    profile=_text,
    placement_start=_u32,
    placement_size=st.integers(1, 0xFFFFFFFF),
)
_realized = st.builds(
    PartitionInstance,
    device_index=st.integers(0, 16),
    device=_text,
    profile=_text,
    placement_start=_u32,
    placement_size=st.integers(1, 0xFFFFFFFF),
    uuid=_text,
    instance_id=_u32,
    compute_instance_id=_u32,
)


@given(st.lists(st.tuples(st.integers(0, 8), st.one_of(_instance, _realized)), max_size=6))
def test_encode_then_decode_gives_the_allocations_back(entries):
    unique = {(c, p.device_index): PartitionAllocation(c, p) for c, p in entries}
    allocations = sorted(unique.values(), key=lambda a: (a.container_index, a.instance.device_index))
    assert list(partitions.decode(partitions.encode(allocations))) == allocations


@given(st.text(max_size=40))
def test_any_text_is_read_or_refused_with_an_annotation_error(raw):
    try:
        partitions.decode(raw)
    except AnnotationError as exc:
        assert partitions.ANNOTATION in str(exc)


def _entry(**change):
    entry = json.loads(UPSTREAM_REALIZED)[0]
    entry.update(change)
    return json.dumps([{k: v for k, v in entry.items() if v is not None}])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"containerIndex": 0}', "must be a JSON list"),
        ("[1]", "entry 0=1 must be an object"),
        (_entry(placement=None), "placement=None must be an object"),
        (_entry(placement={"start": 0, "size": 0}), "placement_size=0"),
        (_entry(containerIndex=-1), "containerIndex=-1 must be an unsigned 32-bit integer"),
        (_entry(gpuInstanceID="4"), "gpuInstanceID='4'"),
        (_entry(computeInstanceID=None), "partial runtime identity"),
        (_entry(migUUID=None), "partial runtime identity"),
        (_entry(profile=""), "profile=''"),
        (_entry(gpuUUID=7), "must be strings"),
    ],
)
def test_a_bad_value_is_refused_naming_it(raw, message):
    with pytest.raises(AnnotationError, match=re.escape(message)):
        partitions.decode(raw)


def test_a_second_entry_for_one_container_device_is_refused():
    raw = UPSTREAM_REALIZED[:-1] + "," + UPSTREAM_REALIZED[1:]
    with pytest.raises(AnnotationError, match="a second allocation for container 0 device 0"):
        partitions.decode(raw)


def test_one_container_s_allocate_replaces_only_its_entries():
    """kubelet retries Allocate; each container's Allocate adds its own instances to the pod's list."""
    first = partitions.with_container(None, 1, [PartitionInstance(0, "GPU-0", "1g.10gb", 6, 1, "MIG-a", 9, 0)])
    both = partitions.with_container(first, 2, [PartitionInstance(0, "GPU-0", "3g.40gb", 0, 4, "MIG-c", 2, 0)])
    retried = partitions.with_container(both, 1, [PartitionInstance(0, "GPU-0", "1g.10gb", 5, 1, "MIG-b", 10, 0)])
    assert [(a.container_index, a.instance.uuid) for a in partitions.decode(retried)] == [(1, "MIG-b"), (2, "MIG-c")]
    # an unreadable earlier value cannot be used by anyone: it is replaced
    assert [
        a.instance.uuid for a in partitions.decode(partitions.with_container("{broken", 0, [PartitionInstance(0, "G", "p", 0, 1)]))
    ] == [""]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"placement_size": 0}, "placement_size=0"),
        ({"device_index": -1}, "device_index=-1"),
        ({"placement_start": True}, "placement_start=True"),
        ({"device": ""}, "device=''"),
        ({"instance_id": -2}, "instance_id=-2"),
    ],
)
def test_a_partition_instance_names_its_bad_field(kwargs, message):
    values = {"device_index": 0, "device": "GPU-0", "profile": "1g.10gb", "placement_start": 0, "placement_size": 1, **kwargs}
    with pytest.raises(ValidationError, match=re.escape(f"PartitionInstance.{message}")):
        PartitionInstance(**values)


def test_container_edits_carry_and_merge_partitions():
    a = PartitionInstance(0, "GPU-0", "1g.10gb", 6, 1, "MIG-a", 9, 0)
    b = PartitionInstance(1, "GPU-1", "1g.10gb", 6, 1, "MIG-b", 9, 0)
    merged = ContainerEdits(env={"X": "1"}, partitions=[a]).merge(ContainerEdits(partitions=[a, b]))
    assert merged.partitions == (a, b) and merged.env == {"X": "1"}
    with pytest.raises(ValidationError, match=re.escape("ContainerEdits.partitions=")):
        ContainerEdits(partitions=[{"uuid": "MIG-a"}])  # type: ignore[list-item]


class _Partitioner:
    """A backend that hands out partitions and reports what ``report`` says each grant got."""

    def __init__(self) -> None:
        self.report: list[PartitionInstance] = []

    @hookimpl
    def hami_backend(self):
        kind = DeviceKind(
            "PART",
            ResourceNames(count="part.example.com/dev"),
            AnnotationKeys.hami("hami.io/node-part-register", "hami.io/node-handshake-part", "hami.io/part"),
        )
        return BackendInfo(name="part", kinds=[kind])

    @hookimpl
    def hami_container_edits(self, grants):
        return ContainerEdits(env={"PART_VISIBLE": ",".join(g.id for g in grants)}, partitions=self.report)


def test_a_partition_naming_another_device_than_its_grant_is_a_contract_error(hami_manager):
    """The agent writes what the backend reports onto the pod: it must be the container's own grants."""
    backend = _Partitioner()
    hami_manager.register(backend, name="part")
    grants = [Grant("PART-0", "PART", 10, 0), Grant("PART-1", "PART", 10, 0)]
    pod = {"metadata": {"name": "p", "annotations": {}}}
    backend.report = [PartitionInstance(0, "PART-0", "1s", 0, 1), PartitionInstance(1, "PART-1", "1s", 1, 1)]
    assert hami_manager.container_edits(grants, pod, {"name": "c"}).partitions == tuple(backend.report)
    for wrong in (PartitionInstance(1, "PART-0", "1s", 0, 1), PartitionInstance(2, "PART-1", "1s", 0, 1)):
        backend.report = [wrong]
        with pytest.raises(
            ContractError,
            match=re.escape(
                f"(device_index, device) [({wrong.device_index}, '{wrong.device}')] that are not among the grants ['PART-0', 'PART-1']"
            ),
        ):
            hami_manager.container_edits(grants, pod, {"name": "c"})
