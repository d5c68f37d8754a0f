"""The Ascend backend declares one device kind per chip with HAMi's per-chip names."""

from __future__ import annotations

import pytest

from hami_ascend.plugin import CHIPS, INFO, plugin


@pytest.mark.parametrize("chip", CHIPS)
def test_per_chip_wire_names(chip):
    kind = next(k for k in INFO.kinds if k.vendor == chip)
    assert kind.resources.count == f"huawei.com/{chip}"
    assert kind.resources.memory == f"huawei.com/{chip}-memory"
    assert kind.annotations.node_register == f"hami.io/node-register-{chip}"
    assert kind.annotations.to_allocate == f"hami.io/{chip}-devices-to-allocate"
    assert kind.annotations.allocated == f"hami.io/{chip}-devices-allocated"


def test_a_pod_asking_for_two_chip_kinds_gets_one_request_each(hami_manager, register_backend):
    register_backend(plugin)
    limits = {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend310P-memory": "3072"}
    requests = hami_manager.container_requests({"name": "c", "resources": {"limits": limits}}, {})
    assert sorted((r.vendor, r.count, r.memory) for r in requests) == [("Ascend310P", 1, 3072), ("Ascend910B3", 1, 0)]
