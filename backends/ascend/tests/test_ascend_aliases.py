"""HAMi's older Ascend names (huawei.com/Ascend910 + -memory, v2.3; huawei.com/Ascend910B, v2.4-v2.6)
are rewritten by the webhook to the per-chip names of the one family they can mean here."""

from __future__ import annotations

import pytest

from hami.sdk import HamiError, RequestError
from hami_ascend.plugin import plugin

OLD = {"huawei.com/Ascend910": "1", "huawei.com/Ascend910-memory": "2000"}


def _container(limits, requests=None):
    return {"name": "c", "resources": {"limits": limits, **({"requests": requests} if requests else {})}}


def test_the_older_names_become_the_one_chip_the_cluster_has(hami_manager, register_backend):
    register_backend(plugin)
    hami_manager.configure("ascend", {"cluster_chips": ["Ascend910B4"]})
    patch = hami_manager.mutate_container(_container(OLD), {})
    assert dict(patch.limits) == {"huawei.com/Ascend910B4": "1", "huawei.com/Ascend910B4-memory": "2000"}
    assert set(patch.remove) == set(OLD) and "older name" in patch.warnings[0]
    (request,) = hami_manager.container_requests(_container(OLD), {})
    assert (request.vendor, request.count, request.memory) == ("Ascend910B4", 1, 2000)


def test_910b_meant_the_910b3_chip(hami_manager, register_backend):
    register_backend(plugin)
    (request,) = hami_manager.container_requests(_container({"huawei.com/Ascend910B-memory": "16384"}), {})
    assert (request.vendor, request.count, request.memory) == ("Ascend910B3", 1, 16384)
    patch = hami_manager.mutate_container(_container({"huawei.com/Ascend910B-memory": "16384"}), {})
    assert dict(patch.limits) == {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "16384"}  # memory alone means one chip


def test_910c_modules_round_up_after_the_rewrite(hami_manager, register_backend):
    register_backend(plugin)
    hami_manager.configure("ascend", {"cluster_chips": ["Ascend910C"]})
    patch = hami_manager.mutate_container(_container({"huawei.com/Ascend910": "1"}), {})
    assert patch.limits["huawei.com/Ascend910C"] == "2"


@pytest.mark.parametrize(
    ("config", "limits", "message"),
    [
        ({}, OLD, "may mean huawei.com/Ascend910A, huawei.com/Ascend910B2"),  # no inventory, no cluster_chips: six families
        ({"cluster_chips": ["Ascend310P"]}, OLD, "this cluster has none of them"),
        ({"resource_aliases": {}}, OLD, "aliases are off"),
        ({"cluster_chips": ["Ascend910B3"]}, {**OLD, "huawei.com/Ascend910B3": "1"}, "write only huawei.com/Ascend910B3"),
        ({"cluster_chips": ["Ascend910B3"]}, {"huawei.com/Ascend910": "1", "huawei.com/Ascend910B-memory": "1"}, "mix two older names"),
    ],
)
def test_what_cannot_be_rewritten_is_refused_naming_the_names(hami_manager, register_backend, config, limits, message):
    register_backend(plugin)
    hami_manager.configure("ascend", config)
    with pytest.raises(RequestError, match=message):
        hami_manager.container_requests(_container(limits), {})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"huawei.com/Ascend999": ["Ascend910B3"]}, "not one of HAMi's older names"),
        ({"huawei.com/Ascend910": ["Ascend999"]}, "must be a list of chips"),
        ({"huawei.com/Ascend910": "Ascend910B3"}, "must be a list of chips"),
        (["huawei.com/Ascend910"], "must map an alias"),
    ],
)
def test_a_bad_alias_setting_is_named(hami_manager, register_backend, value, message):
    register_backend(plugin)
    hami_manager.configure("ascend", {"resource_aliases": value})
    with pytest.raises(HamiError, match=message):  # the manager names the backend around the setting's error
        hami_manager.container_requests(_container(OLD), {})


def test_the_per_chip_names_are_untouched(hami_manager, register_backend):
    register_backend(plugin)
    limits = {"huawei.com/Ascend910B3": "1", "huawei.com/Ascend910B3-memory": "16384"}
    assert hami_manager.mutate_container(_container(limits), {}).remove == ()
