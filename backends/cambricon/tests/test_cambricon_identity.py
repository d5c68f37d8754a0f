"""The Cambricon backend speaks HAMi's names and accepts the seed's ``mlunum`` spelling."""

from __future__ import annotations

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
    # the alias counts as the count resource, so the webhook adds nothing
    assert hami_manager.mutate_container({"name": "c", "resources": {"limits": limits}}, {}).limits == {}
