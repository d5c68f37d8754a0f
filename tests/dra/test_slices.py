"""ResourceSlices built from discovery: shapes, limits, names, and strict validation (Kubernetes 1.34)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.dra.slices import MAX_DEVICES_PER_SLICE, build_slices, check_slice, device_name, quantity_value
from hami.errors import ValidationError
from hami.node.devices import Discovery, NodeDevice
from hami.plugin.model import PhysicalDevice, SchedulableDevice


def _device(i: int, *, count: int = 4, vendor: str = "ACME", attributes: dict[str, Any] | None = None, healthy: bool = True) -> NodeDevice:
    physical = PhysicalDevice(f"{vendor}-n-{i}", vendor, "ACME X1", 16384, index=i, attributes=attributes or {}, healthy=healthy)
    split = SchedulableDevice(physical.id, vendor, "ACME X1", count, 16384, 100, index=i, healthy=healthy)
    return NodeDevice("acme", "acme.com/xpu", physical, split)


def _strict(body: dict[str, Any]) -> None:
    kubernetes_validate.validate(body, "1.34", strict=True)


def test_shared_and_whole_devices() -> None:
    shared, whole = _device(0), _device(1, count=1)
    (slice_,) = build_slices(Discovery((shared, whole)), "n")
    _strict(slice_)
    a, b = slice_["spec"]["devices"]
    assert a["allowMultipleAllocations"] is True
    assert a["capacity"]["shares"] == {"value": "4", "requestPolicy": {"default": "1", "validValues": ["1"]}}
    assert "allowMultipleAllocations" not in b and "requestPolicy" not in b["capacity"]["memory"]
    assert b["capacity"]["memory"] == {"value": "16384Mi"}


def test_many_devices_make_several_slices_of_one_pool() -> None:
    devices = tuple(_device(i) for i in range(MAX_DEVICES_PER_SLICE + 5))
    slices = build_slices(Discovery(devices), "n", generation=3)
    assert [len(s["spec"]["devices"]) for s in slices] == [MAX_DEVICES_PER_SLICE, 5]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {2}
    assert {s["spec"]["pool"]["generation"] for s in slices} == {3}
    for s in slices:
        _strict(s)


def test_empty_node_publishes_an_empty_pool() -> None:
    (slice_,) = build_slices(Discovery(()), "n")
    assert slice_["spec"]["devices"] == []
    _strict(slice_)


def test_unhealthy_devices_are_left_out() -> None:
    slices = build_slices(Discovery((_device(0), _device(1))), "n", health={"ACME-n-1": False})
    assert [d["attributes"]["index"]["int"] for d in slices[0]["spec"]["devices"]] == [0]


def test_backend_facts_become_attributes_only_when_dra_can_hold_them() -> None:
    facts = {"pci-bus-id": "0000:3b:00.0", "links": [1, 2], "ratio": 0.5, "long": "x" * 65, "ecc": True, "2nd": 7}
    (slice_,) = build_slices(Discovery((_device(0, attributes=facts),)), "n")
    attributes = slice_["spec"]["devices"][0]["attributes"]
    assert attributes["pci_bus_id"] == {"string": "0000:3b:00.0"}
    assert attributes["ecc"] == {"bool": True} and attributes["_2nd"] == {"int": 7}
    assert not {"links", "ratio", "long"} & set(attributes)
    _strict(slice_)


def test_attributes_stop_at_the_per_device_limit() -> None:
    facts = {f"fact{i}": i for i in range(40)}
    (slice_,) = build_slices(Discovery((_device(0, attributes=facts),)), "n")
    device = slice_["spec"]["devices"][0]
    assert len(device["attributes"]) + len(device["capacity"]) == 32
    _strict(slice_)


def test_device_names_are_dns_labels_and_stable() -> None:
    device = _device(3, vendor="Weird_Vendor.Key")
    name = device_name(device)
    assert name.startswith("weird-vendor-key-3-") and len(name) <= 63
    assert device_name(device) == name


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "devices", 0, "name"), "Bad_Name", "DNS label"),
        (("spec", "devices", 0, "capacity", "memory", "value"), "3.5Gi", "whole quantity"),
        (("spec", "devices", 0, "capacity", "cores", "requestPolicy", "default"), "101", "min <= default <= max"),
        (("spec", "devices", 0, "capacity", "shares", "requestPolicy", "default"), "2", "one of validValues"),
        (("spec", "pool", "resourceSliceCount"), 0, "resourceSliceCount"),
    ],
)
def test_check_slice_names_the_bad_field(path: tuple[Any, ...], value: Any, message: str) -> None:
    (slice_,) = build_slices(Discovery((_device(0),)), "n")
    target: Any = slice_
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError, match=message) as info:
        check_slice(slice_)
    assert repr(value) in str(info.value)


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["", "Ki", "Mi", "Gi", "Ti"]))
def test_quantity_value_round_trip(number: int, suffix: str) -> None:
    scale = {"": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[suffix]
    assert quantity_value(f"{number}{suffix}") == number * scale


@given(st.text(max_size=12))
def test_quantity_value_refuses_anything_else_by_name(text: str) -> None:
    try:
        value = quantity_value(text)
    except ValidationError as exc:
        assert repr(text) in str(exc)
    else:
        assert value >= 0 and text[:1].isdigit()
