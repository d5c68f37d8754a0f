"""The Cambricon backend speaks HAMi's names and accepts the seed's ``mlunum`` spelling."""

from __future__ import annotations

import pytest

from hami.sdk import RequestError
from hami_cambricon.plugin import KIND, plugin


def test_hami_wire_names():
    assert KIND.vendor == "MLU"
    assert KIND.resources.count == "cambricon.com/vmlu"
    assert KIND.resources.memory == "cambricon.com/mlu.smlu.vmemory"
    assert KIND.resources.cores == "cambricon.com/mlu.smlu.vcore"
    assert KIND.annotations.to_allocate == "hami.io/cambricon-mlu-devices-to-allocate"


def test_seed_example_with_mlunum_alias(hami_manager, register_backend):
    register_backend(plugin)
    limits = {"cambricon.com/mlunum": "1", "cambricon.com/mlu.smlu.vmemory": "20", "cambricon.com/mlu.smlu.vcore": "10"}
    (request,) = hami_manager.container_requests({"name": "c", "resources": {"limits": limits}}, {})
    # vmemory is in 256 MiB slices (HAMi's MemoryFactor), so the request asks 20 x 256 MiB
    assert (request.vendor, request.count, request.memory, request.cores) == ("MLU", 1, 5120, 10)
    # the webhook rewrites the alias to the name the device plugin advertises (kubelet skips any other)
    patch = hami_manager.mutate_container({"name": "c", "resources": {"limits": limits}}, {})
    assert patch.limits == {"cambricon.com/vmlu": "1"} and patch.remove == ("cambricon.com/mlunum",)
    assert any("20 slices of 256 MiB = 5120 MiB" in w for w in patch.warnings)


def test_vmemory_as_a_percentage_when_the_operator_says_so(hami_manager, register_backend):
    register_backend(plugin)
    hami_manager.configure("cambricon", {"vmemory_percent": True})
    limits = {"cambricon.com/vmlu": "1", "cambricon.com/mlu.smlu.vmemory": "20"}
    (request,) = hami_manager.container_requests({"name": "c", "resources": {"limits": limits}}, {})
    assert (request.memory, request.memory_percentage) == (0, 20)
    assert any(
        "read as 20 % of the card" in w for w in hami_manager.mutate_container({"name": "c", "resources": {"limits": limits}}, {}).warnings
    )
    with pytest.raises(RequestError, match=r"mlu\.smlu\.vmemory=120 is over 100"):
        hami_manager.container_requests({"name": "c", "resources": {"limits": {**limits, "cambricon.com/mlu.smlu.vmemory": "120"}}}, {})
    hami_manager.configure("cambricon", {"vmemory_percent": "yes"})
    with pytest.raises(Exception, match="vmemory_percent='yes' must be true or false"):
        hami_manager.container_requests({"name": "c", "resources": {"limits": limits}}, {})
