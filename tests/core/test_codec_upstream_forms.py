"""Node registrations HAMi writes and reads (issue 18, node protocol).

* MIG profiles: HAMi v2.10 unmarshals ``migProfiles`` into ``[]MigProfile``
  ``{name, memoryMB, core, sliceCount, placements: [{start, size}]}`` (pkg/device/devices.go
  ``DeviceInfo``/``MigProfile``/``MigPlacement``, ``UnMarshalNodeDevices``); a list of lists fails the
  whole node there. Ours encodes the generic ``partitions`` in that shape, byte-compatible.
* CSV: HAMi <= 2.7 NVIDIA device plugins registered with ``EncodeNodeDevices`` (pkg/util/util.go v2.4:
  7 fields; v2.5-v2.7: 9 fields, health through ``strconv.ParseBool`` in ``DecodeNodeDevices``); the
  scheduler reads that form for a JSON kind too.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.errors import AnnotationError
from hami.plugin.model import SchedulableDevice
from hami.scheduler.state import ClusterState
from hami.wire.codec import decode_node_devices, encode_node_devices_csv, encode_node_devices_json
from hami_nvidia.plugin import KIND

# What HAMi v2.10's MarshalNodeDevices writes for a MIG GPU (Go json.Marshal of []*DeviceInfo, the
# omitempty zero fields left out here because none is zero), used as the byte fixture.
UPSTREAM_MIG = (
    '[{"id":"GPU-7c6f3a2e","index":1,"count":7,"devmem":81920,"devcore":100,"type":"NVIDIA-A100-SXM4-80GB","numa":1,"mode":"mig",'
    '"migProfiles":[{"name":"1g.10gb","memoryMB":9728,"core":14,"sliceCount":1,"placements":[{"start":0,"size":1},{"start":1,"size":1}]},'
    '{"name":"3g.40gb","memoryMB":40192,"core":42,"sliceCount":4,"placements":[{"start":0,"size":4},{"start":4,"size":4}]}],"health":true}]'
)

_GO_FIELDS = {"id": str, "index": int, "count": int, "devmem": int, "devcore": int, "type": str, "numa": int, "mode": str, "health": bool}
_GO_PROFILE = {"name": str, "memoryMB": int, "core": int, "sliceCount": int}


def go_unmarshal(text: str) -> list[dict]:
    """The checks Go's encoding/json makes unmarshalling into []*DeviceInfo (pkg/device/devices.go):
    a JSON value of the wrong kind for a typed field is an error, and HAMi then drops the node."""
    devices = json.loads(text)
    assert isinstance(devices, list)
    for device in devices:
        assert isinstance(device, dict)
        for key, kind in _GO_FIELDS.items():
            if key in device:
                assert isinstance(device[key], kind) and (kind is not int or not isinstance(device[key], bool)), f"cannot unmarshal {key}"
                if kind is int:
                    assert -(2**31) <= device[key] < 2**31
        profiles = device.get("migProfiles")
        if profiles is not None:
            assert isinstance(profiles, list), "cannot unmarshal migProfiles"
            for profile in profiles:
                assert isinstance(profile, dict), "cannot unmarshal array into Go value of type device.MigProfile"
                for key, kind in _GO_PROFILE.items():
                    assert isinstance(profile.get(key, kind()), kind)
                for placement in profile.get("placements") or []:
                    assert isinstance(placement, dict) and all(isinstance(placement.get(k, 0), int) for k in ("start", "size"))
    return devices


def test_upstream_mig_registration_round_trips_byte_for_byte():
    (device,) = decode_node_devices(UPSTREAM_MIG, "NVIDIA", "json")
    assert device.partitions[1] == {
        "name": "3g.40gb",
        "memory": 40192,
        "cores": 42,
        "slices": 4,
        "placements": ({"start": 0, "size": 4}, {"start": 4, "size": 4}),
    }
    assert encode_node_devices_json([device]) == UPSTREAM_MIG
    go_unmarshal(encode_node_devices_json([device]))


def test_our_mig_layouts_go_out_as_hamis_profile_list():
    """The NVIDIA split still describes layouts (lists of {name, memory, count}); the wire flattens them."""
    layout = [{"name": "1g.10gb", "memory": 9728, "count": 3}, {"name": "3g.40gb", "memory": 40192, "count": 1}]
    device = SchedulableDevice(id="GPU-1", vendor="NVIDIA", type="A100", count=4, memory=69376, mode="mig", partitions=(layout,))
    old_wire = json.dumps([{"id": "GPU-1", "migProfiles": [layout]}])
    with pytest.raises(AssertionError, match="cannot unmarshal array"):
        go_unmarshal(old_wire)  # what we wrote before: HAMi lost the node
    (profiles,) = [d["migProfiles"] for d in go_unmarshal(encode_node_devices_json([device]))]
    assert profiles == [
        {"name": "1g.10gb", "memoryMB": 9728, "core": 0, "sliceCount": 0, "placements": []},
        {"name": "3g.40gb", "memoryMB": 40192, "core": 0, "sliceCount": 0, "placements": []},
    ]
    # an agent not yet upgraded still registers the old form: read, not dropped
    (read,) = decode_node_devices(old_wire, "NVIDIA", "json")
    assert [p["name"] for p in read.partitions] == ["1g.10gb", "3g.40gb"] and read.partitions[0]["memory"] == 9728


_u32 = st.integers(0, 2**31 - 1)
_profile = st.fixed_dictionaries(
    {
        "name": st.text(max_size=12),
        "memory": _u32,
        "cores": _u32,
        "slices": _u32,
        "placements": st.lists(st.fixed_dictionaries({"start": _u32, "size": _u32}), max_size=3).map(tuple),
    }
)


@given(st.lists(_profile, max_size=4))
def test_partitions_round_trip_and_stay_go_readable(profiles):
    device = SchedulableDevice(id="GPU-x", vendor="NVIDIA", type="A100", count=1, memory=1000, partitions=profiles)
    text = encode_node_devices_json([device])
    go_unmarshal(text)
    (back,) = decode_node_devices(text, "NVIDIA", "json")
    assert back.partitions == tuple(profiles)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(st.sampled_from(["name", "memoryMB", "core", "sliceCount", "placements", "start", "size"]), c, max_size=5)
        ),
        max_leaves=12,
    )
)
def test_hostile_profiles_raise_only_annotation_error(value):
    text = json.dumps([{"id": "GPU-x", "count": 1, "devmem": 1000, "migProfiles": value}])
    try:
        (device,) = decode_node_devices(text, "NVIDIA", "json")
    except AnnotationError:
        return
    go_unmarshal(encode_node_devices_json([device]))  # whatever is accepted, HAMi can read back


# ---------------------------------------------------------------- CSV of HAMi <= 2.7

V24_CSV = "GPU-0,10,16384,100,NVIDIA-Tesla T4,0,true:GPU-1,10,16384,100,NVIDIA-Tesla T4,1,false:"
"""pkg/util/util.go EncodeNodeDevices at v2.4.0: id,count,devmem,devcore,type,numa,health"""
V27_CSV = "GPU-0,10,16384,100,NVIDIA-Tesla T4,0,true,0,hami-core:GPU-1,10,16384,100,NVIDIA-Tesla T4,1,true,1,hami-core:"
"""v2.5.0-v2.7.x: ...,health,index,mode"""


@pytest.mark.parametrize("text", [V24_CSV, V27_CSV])
def test_hami_27_csv_registration_is_read_for_a_json_kind(text):
    state = ClusterState({"NVIDIA": KIND})
    state.apply_node({"metadata": {"name": "old", "annotations": {KIND.annotations.node_register: text}}})
    node = state.node("old")
    assert node.problems == {}
    assert sorted(node.devices) == ["GPU-0", "GPU-1"]
    assert node.devices["GPU-1"].numa == 1 and node.devices["GPU-0"].memory == 16384 and node.devices["GPU-0"].count == 10


@pytest.mark.parametrize(
    ("spelling", "healthy"),
    [("1", True), ("t", True), ("T", True), ("TRUE", True), ("True", True), ("0", False), ("F", False), ("False", False)],
)
def test_csv_health_takes_every_parsebool_spelling(spelling, healthy):
    (device,) = decode_node_devices(f"GPU-0,10,16384,100,T4,0,{spelling}:", "NVIDIA", "json")
    assert device.healthy is healthy


def test_csv_health_that_parsebool_refuses_is_named():
    with pytest.raises(AnnotationError, match="health='yes' is not a boolean"):
        decode_node_devices("GPU-0,10,16384,100,T4,0,yes:", "NVIDIA", "json")


_id = st.text(alphabet="ABCDEFabcdef0123456789-", min_size=1, max_size=20)
_csv_device = st.builds(
    SchedulableDevice,
    id=_id,
    vendor=st.just("NVIDIA"),
    type=st.text(alphabet="ABCNVIDA-T4 ", min_size=1, max_size=12),
    count=st.integers(0, 1024),
    memory=st.integers(0, 10**7),
    cores=st.integers(0, 10_000),
    index=st.integers(0, 65535),
    numa=st.integers(0, 65535),
    mode=st.sampled_from(["hami-core", "mig", "mps", ""]),
    healthy=st.booleans(),
)


@given(st.lists(_csv_device, max_size=6, unique_by=lambda d: d.id))
def test_csv_form_round_trips_through_either_kind(devices):
    text = encode_node_devices_csv(devices)
    assert decode_node_devices(text, "NVIDIA", "json") == tuple(devices)
    assert decode_node_devices(text, "NVIDIA", "csv") == tuple(devices)
    assert decode_node_devices(encode_node_devices_json(devices), "NVIDIA", "csv") == tuple(devices)
