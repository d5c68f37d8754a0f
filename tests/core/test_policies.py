"""The built-in binpack/spread policies follow HAMi's formulas (hami-compat.md)."""

from __future__ import annotations

import re

import pytest

from hami.errors import RequestError
from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage, SchedulableDevice
from hami.policies.usage import (
    Weights,
    device_usage_score,
    node_usage_score,
    parse_weights,
)


def usage(used=0, memory=0, cores=0, count=10, total_memory=1000, total_cores=100, name="d"):
    return DeviceUsage(
        SchedulableDevice(id=name, vendor="V", type="t", count=count, memory=total_memory, cores=total_cores), used, memory, cores
    )


def test_node_score_formula():
    node = NodeUsage("n", [usage(2, 250, 10, name="a"), usage(3, 250, 30, name="b")])
    # 10 × (5/20 + 40/200 + 500/2000) = 10 × (0.25 + 0.2 + 0.25)
    assert node_usage_score(node) == pytest.approx(7.0)
    assert node_usage_score(NodeUsage("empty")) == 0


def test_device_score_formula_and_weights():
    device = usage(1, 200, 20)
    request = DeviceRequest("V", memory=300, cores=30)
    # 10 × (1·2/10 + 1·50/100 + 1·500/1000) = 12
    assert device_usage_score(request, device, Weights()) == pytest.approx(12.0)
    # memory weighted 3: 10 × (0.2 + 0.5 + 1.5) = 22
    assert device_usage_score(request, device, parse_weights("slot=1,core=1,memory=3")) == pytest.approx(22.0)


def test_binpack_and_spread_order_nodes_oppositely(hami_manager):
    busy, idle = NodeUsage("busy", [usage(5, 500, 50)]), NodeUsage("idle", [usage(1, 100, 10)])
    assert hami_manager.score_node("binpack", busy, [], {}) > hami_manager.score_node("binpack", idle, [], {})
    assert hami_manager.score_node("spread", idle, [], {}) > hami_manager.score_node("spread", busy, [], {})


def test_device_weights_come_from_the_pod_annotation(hami_manager):
    request = DeviceRequest("V", memory=100)
    low_mem_busy_slots = usage(9, 0, 0, name="slots")
    high_mem_free_slots = usage(0, 800, 0, name="mem")
    plain = {"metadata": {"annotations": {}}}
    memory_heavy = {"metadata": {"annotations": {"hami.io/device-scoring-weights": "slot=0,core=0,memory=5"}}}
    assert hami_manager.score_device("binpack", request, low_mem_busy_slots, plain) > hami_manager.score_device(
        "binpack", request, high_mem_free_slots, plain
    )
    assert hami_manager.score_device("binpack", request, high_mem_free_slots, memory_heavy) > hami_manager.score_device(
        "binpack", request, low_mem_busy_slots, memory_heavy
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("slot=x", "weight 'x' is not a number"), ("gpu=1", "'gpu=1' is not"), ("memory=-1", "between 0 and 1000"), ("memory=nan", "between")],
)
def test_bad_weights_name_the_value(text, fragment):
    with pytest.raises(RequestError, match=re.escape("hami.io/device-scoring-weights")) as caught:
        parse_weights(text)
    assert fragment in str(caught.value)
