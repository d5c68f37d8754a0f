"""HAMi-compatible encodings: the documented examples, round trips, and hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.errors import AnnotationError
from hami.plugin.model import Grant, SchedulableDevice
from hami.wire.codec import (
    MAX_DEVICE_CORES,
    MAX_DEVICE_INDEX,
    MAX_DEVICE_MEMORY_MIB,
    MAX_DEVICE_SLOTS,
    decode_node_devices,
    decode_node_devices_csv,
    decode_node_devices_json,
    decode_pod_devices,
    encode_node_devices,
    encode_node_devices_csv,
    encode_node_devices_json,
    encode_pod_devices,
)

# ---------------------------------------------------------------- the examples of hami-compat.md


def test_pod_allocation_example_two_containers():
    assert decode_pod_devices("GPU-aaa,NVIDIA,3000,0:;GPU-aaa,NVIDIA,5000,0:;") == (
        (Grant("GPU-aaa", "NVIDIA", 3000, 0),),
        (Grant("GPU-aaa", "NVIDIA", 5000, 0),),
    )


def test_pod_allocation_empty_container_entry_and_multi_device():
    decoded = decode_pod_devices(";GPU-a,NVIDIA,100,10:GPU-b,NVIDIA,200,20:;")
    assert decoded == ((), (Grant("GPU-a", "NVIDIA", 100, 10), Grant("GPU-b", "NVIDIA", 200, 20)))
    assert encode_pod_devices(decoded) == ";GPU-a,NVIDIA,100,10:GPU-b,NVIDIA,200,20:;"
    assert decode_pod_devices("") == ()


def test_json_device_list_missing_keys_mean_zero_and_false():
    (device,) = decode_node_devices_json('[{"id":"GPU-1","count":10,"devmem":32768,"devcore":100,"type":"NVIDIA-Tesla V100"}]', "NVIDIA")
    assert device == SchedulableDevice(
        id="GPU-1", vendor="NVIDIA", type="NVIDIA-Tesla V100", count=10, memory=32768, cores=100, index=0, numa=0, mode="", healthy=False
    )


def test_json_device_list_full_hami_entry():
    text = json.dumps(
        [
            {
                "id": "GPU-2",
                "index": 3,
                "count": 10,
                "devmem": 81920,
                "devcore": 200,
                "type": "NVIDIA-A100",
                "numa": 1,
                "mode": "hami-core",
                "migProfiles": [
                    {"name": "1g.10gb", "memoryMB": 9856, "core": 14, "sliceCount": 1, "placements": [{"start": 0, "size": 1}]}
                ],
                "health": True,
            }
        ]
    )
    (device,) = decode_node_devices_json(text, "NVIDIA")
    assert (device.index, device.cores, device.numa, device.mode, device.healthy) == (3, 200, 1, "hami-core", True)
    assert device.partitions == ({"name": "1g.10gb", "memory": 9856, "cores": 14, "slices": 1, "placements": ({"start": 0, "size": 1},)},)
    assert decode_node_devices_json(encode_node_devices_json([device]), "NVIDIA") == (device,)


def test_json_device_list_bytes_are_hamis():
    """The generic ``partitions`` field goes out under HAMi's key, in HAMi's field order (pkg/util/types.go
    DeviceInfo), so HAMi's own scheduler reads our node annotation unchanged."""
    device = SchedulableDevice(
        id="GPU-2",
        vendor="NVIDIA",
        type="NVIDIA-A100",
        count=7,
        memory=81920,
        cores=100,
        index=3,
        numa=1,
        mode="mig",
        partitions=[{"name": "1g.10gb", "memory": 9856, "cores": 14, "slices": 1, "placements": [{"start": 0, "size": 1}]}],
    )
    assert encode_node_devices_json([device]) == (
        '[{"id":"GPU-2","index":3,"count":7,"devmem":81920,"devcore":100,"type":"NVIDIA-A100","numa":1,"mode":"mig",'
        '"migProfiles":[{"name":"1g.10gb","memoryMB":9856,"core":14,"sliceCount":1,"placements":[{"start":0,"size":1}]}],"health":true}]'
    )


def test_csv_device_list_seven_and_nine_fields():
    devices = decode_node_devices_csv("DCU-1,4,16384,100,Z100,0,true:DCU-2,4,16384,100,Z100,1,false,1,hami-core:", "DCU")
    assert [(d.id, d.index, d.numa, d.healthy, d.mode) for d in devices] == [("DCU-1", 0, 0, True, ""), ("DCU-2", 1, 1, False, "hami-core")]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("GPU-a,NVIDIA,100:;", "expected <uuid>,<vendor>,<usedmem>,<usedcores>"),
        ("GPU-a,NVIDIA,lots,0:;", "usedmem='lots'"),
        ("GPU-a,NVIDIA,100,-5:;", "Grant.cores=-5"),
        (",NVIDIA,100,0:;", "Grant.id=''"),
        ("GPU-a,NVIDIA,100,101:;", "Grant.cores=101"),
    ],
)
def test_bad_pod_allocation_names_the_part(text, fragment):
    with pytest.raises(AnnotationError, match="container #0") as caught:
        decode_pod_devices(text)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "not JSON"),
        ('{"id": "x"}', "must be a JSON array"),
        ('[{"id": "x", "count": "10"}]', "count='10' is not an integer"),
        ('[{"id": "x", "count": true}]', "count=True is not an integer"),
        ('[{"id": "x", "devmem": -1}]', "memory=-1"),
        ('[{"count": 1}]', "id=''"),
        ('[{"id": "x", "health": "yes"}]', "health='yes'"),
        ("[1]", "expected an object"),
        ("[" * 100000 + "]" * 100000, "not JSON"),
    ],
)
def test_bad_json_device_list_names_the_part(text, fragment):
    with pytest.raises(AnnotationError) as caught:
        decode_node_devices_json(text, "NVIDIA")
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("DCU-1,4,16384,100,Z100,0:", "expected 7 or 9"),
        ("DCU-1,4,16384,100,Z100,0,maybe:", "health='maybe'"),
        ("DCU-1,four,16384,100,Z100,0,true:", "count='four'"),
    ],
)
def test_bad_csv_device_list_names_the_part(text, fragment):
    with pytest.raises(AnnotationError) as caught:
        decode_node_devices_csv(text, "DCU")
    assert fragment in str(caught.value)


def test_encoders_refuse_values_the_format_cannot_carry():
    with pytest.raises(AnnotationError, match="separator"):
        encode_pod_devices([[Grant("GPU;a", "NVIDIA", 1, 0)]])
    with pytest.raises(AnnotationError, match="separator"):
        encode_node_devices_csv([SchedulableDevice(id="a:b", vendor="DCU", type="Z", count=1, memory=1)])


# ---------------------------------------------------------------- properties

_safe_text = st.text(st.characters(blacklist_characters=",:;", blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(str.strip)
_small = st.integers(min_value=0, max_value=2**40)

_id_text = st.builds(  # a letter or digit first: a CSV list starting with "[" reads as JSON
    str.__add__,
    st.characters(whitelist_categories=("L", "N")),
    st.text(st.characters(whitelist_categories=("L", "N", "P", "S"), blacklist_characters=",:;"), max_size=19),
)
devices = st.builds(
    SchedulableDevice,
    id=_id_text,
    vendor=_safe_text,
    type=st.text(st.characters(blacklist_characters=",:;", blacklist_categories=("Cs",)), max_size=20),
    count=st.integers(0, MAX_DEVICE_SLOTS),
    memory=st.integers(0, MAX_DEVICE_MEMORY_MIB),
    cores=st.integers(0, MAX_DEVICE_CORES),
    index=st.integers(0, MAX_DEVICE_INDEX),
    numa=st.integers(0, MAX_DEVICE_INDEX),
    mode=st.text(st.characters(blacklist_characters=",:;", blacklist_categories=("Cs",)), max_size=10),
    healthy=st.booleans(),
)
grants = st.builds(Grant, id=_safe_text, vendor=_safe_text, memory=_small, cores=st.integers(0, 100))


@given(st.lists(devices, max_size=8), st.sampled_from(["json", "csv"]))
def test_node_device_list_round_trip(items, encoding):
    vendors = {d.vendor for d in items}
    for vendor in vendors:
        mine = [d for d in items if d.vendor == vendor]
        assert decode_node_devices(encode_node_devices(mine, encoding), vendor, encoding) == tuple(mine)


@given(st.lists(st.lists(grants, max_size=4), max_size=5))
def test_pod_allocation_round_trip(containers):
    text = encode_pod_devices(containers)
    assert decode_pod_devices(text) == tuple(tuple(c) for c in containers)
    assert text.count(";") == len(containers)


@given(st.text(max_size=300))
def test_garbage_raises_only_annotation_error(text):
    for decode in (lambda t: decode_node_devices_json(t, "V"), lambda t: decode_node_devices_csv(t, "V"), decode_pod_devices):
        try:
            decode(text)
        except AnnotationError:
            pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["id", "index", "count", "devmem", "devcore", "type", "numa", "mode", "migProfiles", "health", "x"]),
                children,
                max_size=6,
            )
        ),
    )
)
def test_arbitrary_json_raises_only_annotation_error(value):
    try:
        decoded = decode_node_devices_json(json.dumps(value), "V")
    except AnnotationError:
        return
    assert all(isinstance(d, SchedulableDevice) for d in decoded)


def test_non_string_input_is_an_annotation_error():
    with pytest.raises(AnnotationError, match="expected a string"):
        decode_pod_devices(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- issue 19 item 7: hostile registrations


def _in_bounds(device: SchedulableDevice) -> bool:
    return (
        0 <= device.memory <= MAX_DEVICE_MEMORY_MIB
        and 0 <= device.count <= MAX_DEVICE_SLOTS
        and 0 <= device.cores <= MAX_DEVICE_CORES
        and 0 <= device.index <= MAX_DEVICE_INDEX
        and 0 <= device.numa <= MAX_DEVICE_INDEX
        and not any(c in ",:;" or c.isspace() or not c.isprintable() for c in device.id)
        and 0 < len(device.id) <= 256
    )


_hostile_int = st.one_of(st.integers(), st.integers(min_value=10**17, max_value=10**400), st.sampled_from([2**63, 2**64, -1, 10**6]))
_hostile_id = st.one_of(st.text(max_size=12), st.sampled_from(["a,b", "a:b", "a;b", "a b", "a\tb", "a\nb", "x" * 300, "", "G\x00"]))
_hostile_entry = st.fixed_dictionaries(
    {"id": _hostile_id},
    optional={
        "devmem": _hostile_int,
        "count": _hostile_int,
        "devcore": _hostile_int,
        "index": _hostile_int,
        "numa": _hostile_int,
        "health": st.booleans(),
        "type": st.text(max_size=5),
    },
)


@given(st.lists(_hostile_entry, max_size=4))
def test_hostile_json_registration_never_yields_an_out_of_bound_device(entries):
    try:
        decoded = decode_node_devices_json(json.dumps(entries), "V")
    except AnnotationError:
        return
    assert all(_in_bounds(d) for d in decoded), decoded


@given(st.lists(st.tuples(_hostile_id, _hostile_int, _hostile_int, _hostile_int, _hostile_int), max_size=4))
def test_hostile_csv_registration_never_yields_an_out_of_bound_device(rows):
    text = "".join(f"{i},{count},{mem},{cores},T,{numa},true:" for i, count, mem, cores, numa in rows)
    try:
        decoded = decode_node_devices_csv(text, "V")
    except AnnotationError:
        return
    assert all(_in_bounds(d) for d in decoded), decoded


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"id": "a", "devmem": 10**400}, "devmem=1000"),
        ({"id": "a", "count": 10**18}, "count=1000000000000000000 is larger than 1024"),
        ({"id": "a", "devcore": 10**6}, "devcore=1000000 is larger than 10000"),
        ({"id": "a", "numa": 70000}, "numa=70000"),
        ({"id": "GPU-0,GPU-1"}, "contains ','"),
        ({"id": "GPU 0"}, "contains ' '"),
        ({"id": "GPU:0"}, "contains ':'"),
        ({"id": "x" * 300}, "1 to 256 characters"),
    ],
)
def test_hostile_registration_is_refused_naming_the_value(entry, fragment):
    with pytest.raises(AnnotationError, match="V node device #0") as err:
        decode_node_devices_json(json.dumps([entry]), "V")
    assert fragment in str(err.value)


def test_bounds_allow_what_real_devices_register():
    text = json.dumps(
        [
            {
                "id": "GPU-8d9f9b8e-1c2a-4c5e-9a7b-0f1e2d3c4b5a",
                "count": 10,
                "devmem": 81920 * 100,
                "devcore": 100 * 100,
                "type": "NVIDIA H100 80GB HBM3",
                "numa": 7,
                "index": 255,
                "health": True,
            }
        ]
    )
    assert decode_node_devices_json(text, "NVIDIA")[0].memory == 8192000
