"""The sandbox's stand-in for kube-scheduler's DRA allocator: CEL selectors (cel-python), exclusive
and shared devices, consumable capacity with request policies (KEP-5075), and clear refusals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.dra.classes import device_classes
from hami.dra.slices import build_slices
from hami.fakes.dra.allocator import AllocationError, Allocator, Usage, _consumed, node_devices
from hami.node.devices import Discovery, NodeDevice
from hami.plugin.model import PhysicalDevice, SchedulableDevice


def _device(i: int, *, count: int = 4, memory: int = 16384, vendor: str = "ACME") -> NodeDevice:
    physical = PhysicalDevice(f"{vendor}-n-{i}", vendor, "ACME X1", memory, index=i)
    return NodeDevice("acme", "acme.com/xpu", physical, SchedulableDevice(physical.id, vendor, "ACME X1", count, memory, 100, index=i))


def _setup(*devices: NodeDevice) -> tuple[Allocator, list[Any]]:
    classes = {c["metadata"]["name"]: c for c in device_classes(sorted({d.vendor for d in devices}))}
    return Allocator(classes), node_devices(build_slices(Discovery(devices), "n"), "n")


def _claim(
    *, klass: str = "acme.hami.io", count: int = 1, capacity: dict[str, str] | None = None, cel: str | None = None, mode: str | None = None
) -> dict[str, Any]:
    exact: dict[str, Any] = {"deviceClassName": klass, "count": count}
    if capacity:
        exact["capacity"] = {"requests": capacity}
    if cel:
        exact["selectors"] = [{"cel": {"expression": cel}}]
    if mode:
        exact = {"deviceClassName": klass, "allocationMode": mode}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "c", "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "r", "exactly": exact}]}},
    }


def test_share_consumes_what_it_asks_and_validates_strictly() -> None:
    allocator, devices = _setup(_device(0))
    claim = _claim(capacity={"memory": "3000Mi", "cores": "30"})
    allocation = allocator.allocate(claim, "n", devices, Usage())
    (result,) = allocation["devices"]["results"]
    assert result["consumedCapacity"] == {"memory": "3000Mi", "cores": "30", "shares": "1"}
    assert result["shareID"]
    claim["status"] = {"allocation": allocation, "reservedFor": [{"resource": "pods", "name": "p", "uid": "u"}]}
    kubernetes_validate.validate(claim, "1.34", strict=True)


def test_shares_stop_at_the_capacity() -> None:
    allocator, devices = _setup(_device(0))
    claims: list[dict[str, Any]] = []
    for _ in range(3):  # 3 x 30 % fits, a fourth would be 120 %
        allocation = allocator.allocate(_claim(capacity={"cores": "30", "memory": "1Gi"}), "n", devices, Usage.of(claims, devices))
        claims.append({"status": {"allocation": allocation}})
    with pytest.raises(AllocationError, match="not enough cores left"):
        allocator.allocate(_claim(capacity={"cores": "30", "memory": "1Gi"}), "n", devices, Usage.of(claims, devices))


def test_share_slots_limit_claims_per_device() -> None:
    allocator, devices = _setup(_device(0, count=2))
    claims: list[dict[str, Any]] = []
    for _ in range(2):
        allocation = allocator.allocate(_claim(capacity={"memory": "1Mi"}), "n", devices, Usage.of(claims, devices))
        claims.append({"status": {"allocation": allocation}})
    with pytest.raises(AllocationError, match="not enough shares left"):
        allocator.allocate(_claim(capacity={"memory": "1Mi"}), "n", devices, Usage.of(claims, devices))


def test_no_capacity_request_takes_the_whole_memory() -> None:
    allocator, devices = _setup(_device(0))
    first = allocator.allocate(_claim(), "n", devices, Usage())
    assert first["devices"]["results"][0]["consumedCapacity"]["memory"] == "16384Mi"
    with pytest.raises(AllocationError, match="memory"):
        allocator.allocate(_claim(capacity={"memory": "1Mi"}), "n", devices, Usage.of([{"status": {"allocation": first}}], devices))


def test_whole_only_device_goes_to_one_claim_and_refuses_capacity_requests() -> None:
    allocator, devices = _setup(_device(0, count=1))
    first = allocator.allocate(_claim(), "n", devices, Usage())
    assert "consumedCapacity" not in first["devices"]["results"][0]
    with pytest.raises(AllocationError, match="0 free"):
        allocator.allocate(_claim(), "n", devices, Usage.of([{"status": {"allocation": first}}], devices))
    with pytest.raises(AllocationError, match="allowMultipleAllocations"):
        allocator.allocate(_claim(capacity={"memory": "1Gi"}), "n", devices, Usage())


def test_cel_selectors_of_class_and_claim() -> None:
    allocator, devices = _setup(_device(0, memory=8192), _device(1, memory=32768), _device(0, vendor="OTHER"))
    big = allocator.allocate(_claim(cel='device.capacity["hami.io"].memory.compareTo(quantity("16Gi")) >= 0'), "n", devices, Usage())
    assert big["devices"]["results"][0]["device"].startswith("acme-1-")
    other = allocator.allocate(_claim(klass="other.hami.io"), "n", devices, Usage())
    assert other["devices"]["results"][0]["device"].startswith("other-0-")
    every = allocator.allocate(_claim(klass="hami.io", mode="All"), "n", devices, Usage())
    assert len(every["devices"]["results"]) == 3
    by_attribute = allocator.allocate(
        _claim(cel='device.attributes["hami.io"].index == 1 && device.allowMultipleAllocations'), "n", devices, Usage()
    )
    assert by_attribute["devices"]["results"][0]["device"].startswith("acme-1-")


def test_bad_selector_and_unmodelled_features_are_named() -> None:
    allocator, devices = _setup(_device(0))
    with pytest.raises(AllocationError, match="does not compile"):
        allocator.allocate(_claim(cel="device.driver =="), "n", devices, Usage())
    with pytest.raises(AllocationError, match=r"'nope\.hami\.io' not found"):
        allocator.allocate(_claim(klass="nope.hami.io"), "n", devices, Usage())
    claim = _claim()
    claim["spec"]["devices"]["constraints"] = [{"matchAttribute": "hami.io/numa"}]
    with pytest.raises(AllocationError, match="constraints"):
        allocator.allocate(claim, "n", devices, Usage())
    with pytest.raises(AllocationError, match="no capacity"):
        allocator.allocate(_claim(capacity={"bandwidth": "1"}), "n", devices, Usage())


def test_device_classes_validate_strictly() -> None:
    for body in device_classes(["ACME", "ACME-X2"]):
        kubernetes_validate.validate(body, "1.34", strict=True)


@given(st.integers(min_value=1, max_value=16384))
def test_memory_requests_round_up_to_the_step_and_never_below_the_ask(mib: int) -> None:
    (device,) = node_devices(build_slices(Discovery((_device(0),)), "n"), "n")
    amounts = _consumed(device, {"memory": f"{mib}Mi"})
    assert amounts["memory"] == Decimal(mib << 20)
    assert amounts["cores"] == 0 and amounts["shares"] == 1


@given(st.integers(min_value=16385, max_value=10**6))
def test_memory_requests_over_the_device_are_refused_naming_the_amount(mib: int) -> None:
    (device,) = node_devices(build_slices(Discovery((_device(0),)), "n"), "n")
    with pytest.raises(AllocationError, match=f"memory {mib}Mi"):
        _consumed(device, {"memory": f"{mib}Mi"})
