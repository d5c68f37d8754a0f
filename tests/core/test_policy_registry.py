"""Scoring policies are objects registered through ``hami_policies``: built-ins and third parties alike."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import ClassVar

import pytest

from hami import hookimpl
from hami.errors import BackendCrashed, BackendLoadError, ContractError, RequestError, ValidationError
from hami.plugin.manager import BackendManager
from hami.plugin.model import DeviceRequest, DeviceUsage, NodeUsage, SchedulableDevice
from hami.plugin.policy import ClusterView, DevicePolicy, DeviceScoreContext, NodePolicy, Policy, ScoreContext

POD = {"metadata": {"name": "p", "annotations": {}}}
ROOT = Path(__file__).resolve().parents[2]


class FewestPodsPolicy(NodePolicy):
    name = "fewest-pods"
    description = "prefer idle nodes"
    seen: ClassVar[list[ScoreContext]] = []

    def score_node(self, node, context):
        FewestPodsPolicy.seen.append(context)
        return -sum(d.used for d in node.devices)


class EmptiestPolicy(DevicePolicy):
    name = "emptiest"
    description = "prefer free memory"

    def score_device(self, device, context):
        return device.free_memory


class FewestPods:
    @hookimpl
    def hami_policies(self):
        return [FewestPodsPolicy(), EmptiestPolicy()]


class BulkPolicy(FewestPodsPolicy):
    name = "fewest-pods-bulk"
    calls = 0

    def score_nodes(self, nodes, context):
        BulkPolicy.calls += 1
        return [-sum(d.used for d in node.devices) for node in nodes]


def offering(*policies):
    """A plugin that offers ``policies``."""

    class Plugin:
        @hookimpl
        def hami_policies(self):
            return list(policies)

    return Plugin()


def node_policy(name, score):
    """A node policy called ``name`` whose score_node is ``score(node, context)``."""
    return type("Scripted", (NodePolicy,), {"name": name, "score_node": lambda self, node, context: score(node, context)})()


def _usage(used: int) -> DeviceUsage:
    return DeviceUsage(SchedulableDevice(id=f"d{used}", vendor="V", type="t", count=10, memory=100), used=used)


def test_the_builtins_are_registered_objects(hami_manager):
    policies = hami_manager.policies()
    for level in ("node", "device"):
        assert {n for lvl, n in policies if lvl == level} >= {"binpack", "spread", "random", "bestfit", "fgd"}
    assert all(isinstance(p, Policy) and p.level == level and p.description for (level, _), p in policies.items())
    assert not policies[("node", "binpack")].per_pod and policies[("node", "fgd")].per_pod
    # one plugin record, named after the package
    assert [r.name for r in hami_manager.records if r.builtin] == ["hami.policies"]


def test_every_manager_gets_its_own_stateful_policies():
    one, two = BackendManager(allow=(), deny=()), BackendManager(allow=(), deny=())
    assert one.policies()[("node", "fgd")] is not two.policies()[("node", "fgd")]
    assert one.policies()[("node", "fgd")].fgd is one.policies()[("device", "fgd")].fgd  # node and device share a learner


def test_a_third_party_policy_registers_the_same_way(hami_manager):
    hami_manager.register(FewestPods(), name="fewest")
    busy, idle = NodeUsage("busy", [_usage(5)]), NodeUsage("idle", [_usage(1)])
    assert hami_manager.score_node("fewest-pods", idle, [], POD) > hami_manager.score_node("fewest-pods", busy, [], POD)
    # the built-ins answer their own names and leave the new one alone
    assert hami_manager.score_node("binpack", busy, [], POD) > hami_manager.score_node("binpack", idle, [], POD)
    full = DeviceUsage(SchedulableDevice(id="f", vendor="V", type="t", count=10, memory=100), memory=90)
    assert hami_manager.score_device("emptiest", DeviceRequest("V"), full, POD) == 10
    assert hami_manager.score_device("emptiest", DeviceRequest("V"), _usage(0), POD) == 100


def test_a_policy_gets_a_context_instead_of_a_policy_name(hami_manager):
    hami_manager.register(FewestPods(), name="fewest")
    FewestPodsPolicy.seen.clear()
    request = DeviceRequest("V", count=2)
    view = ClusterView(seed=3)
    hami_manager.score_node("fewest-pods", NodeUsage("n"), [request], POD, view)
    hami_manager.score_node("fewest-pods", NodeUsage("n"), [], POD)
    with_view, default = FewestPodsPolicy.seen
    assert with_view == ScoreContext(POD, (request,), view)
    # without one, the manager's own view: one object, which carries the backends' predicate
    assert default.cluster is hami_manager.cluster and hami_manager.cluster.device_fits == hami_manager.device_fits
    assert isinstance(DeviceScoreContext(POD, request, view).request, DeviceRequest)


def test_unknown_policy_lists_the_known_ones(hami_manager):
    with pytest.raises(ValidationError, match=r"unknown node scheduling policy 'tetris'; known: .*binpack, .*spread") as caught:
        hami_manager.score_node("tetris", NodeUsage("n"), [], POD)
    known = str(caught.value).split("known: ")[1].split(", ")
    assert known == sorted(known)
    hami_manager.register(FewestPods(), name="fewest")
    with pytest.raises(ValidationError, match="unknown device scheduling policy 'fewest-pods'"):  # a node policy only
        hami_manager.policy("device", "fewest-pods")


def test_a_name_offered_twice_at_one_level_names_both_plugins(hami_manager):
    hami_manager.register(offering(node_policy("binpack", lambda node, context: 0.0)), name="copycat")
    with pytest.raises(
        BackendLoadError, match=r"node scoring policy 'binpack' is offered twice: by plugin 'hami\.policies' and by plugin 'copycat'"
    ):
        hami_manager.policies()


def test_one_name_at_both_levels_is_fine(hami_manager):
    hami_manager.register(
        offering(
            node_policy("coolest", lambda n, c: 1.0), type("D", (DevicePolicy,), {"name": "coolest", "score_device": lambda s, d, c: 2.0})()
        ),
        name="cool",
    )
    assert hami_manager.score_node("coolest", NodeUsage("n"), [], POD) == 1.0
    assert hami_manager.score_device("coolest", DeviceRequest("V"), _usage(0), POD) == 2.0


@pytest.mark.parametrize(
    ("offered", "fragment"),
    [
        ("binpack", "returned 'binpack', expected a list of Policy"),
        (["binpack"], "returned 'binpack', expected Policy"),
        ([node_policy("", lambda n, c: 0.0)], "offered a bad policy"),
        ([type("Bare", (Policy,), {"level": "node", "name": "bare"})()], "subclass NodePolicy or DevicePolicy"),
    ],
)
def test_a_bad_offer_names_the_plugin(hami_manager, offered, fragment):
    class Odd:
        @hookimpl
        def hami_policies(self):
            return offered

    hami_manager.register(Odd(), name="odd")
    with pytest.raises(ContractError) as caught:
        hami_manager.policies()
    assert fragment in str(caught.value) and caught.value.backend == "odd" and caught.value.hook == "hami_policies"


def test_a_plugin_whose_offer_raises_is_named(hami_manager):
    class Broken:
        @hookimpl
        def hami_policies(self):
            raise RuntimeError("no licence")

    hami_manager.register(Broken(), name="broken")
    with pytest.raises(BackendCrashed, match="backend 'broken', hami_policies: RuntimeError: no licence"):
        hami_manager.policies()


def test_a_policy_that_raises_is_named_with_its_plugin(hami_manager):
    hami_manager.register(offering(node_policy("flaky", lambda node, context: 1 / 0)), name="flaky-plugin")
    with pytest.raises(BackendCrashed, match="backend 'flaky-plugin', node policy 'flaky' score_node: ZeroDivisionError") as caught:
        hami_manager.score_node("flaky", NodeUsage("n"), [], POD)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    with pytest.raises(BackendCrashed, match="node policy 'flaky' score_nodes: ZeroDivisionError"):  # the per-node fallback too
        hami_manager.score_nodes("flaky", [NodeUsage("n")], [], POD)


def test_a_request_error_from_a_policy_stays_the_pods_mistake(hami_manager):
    weights = {"metadata": {"annotations": {"hami.io/device-scoring-weights": "memory=lots"}}}
    with pytest.raises(RequestError, match="weight 'lots' is not a number"):
        hami_manager.score_device("binpack", DeviceRequest("V"), _usage(0), weights)


@pytest.mark.parametrize("wrong", ["1.0", None, float("nan"), True])
def test_a_wrong_score_type_is_named(hami_manager, wrong):
    hami_manager.register(offering(node_policy("wrong", lambda node, context: wrong)), name="wrong-plugin")
    with pytest.raises(ContractError, match=r"backend 'wrong-plugin', node policy 'wrong' score_node: returned .*expected a number"):
        hami_manager.score_node("wrong", NodeUsage("n"), [], POD)


def test_bulk_scoring_and_its_per_node_fallback(hami_manager):
    hami_manager.register(FewestPods(), name="fewest")
    hami_manager.register(offering(BulkPolicy()), name="bulk")
    nodes = [NodeUsage("busy", [_usage(5)]), NodeUsage("idle", [_usage(1)])]
    BulkPolicy.calls = 0
    assert hami_manager.score_nodes("fewest-pods-bulk", nodes, [], POD) == [-5.0, -1.0]
    assert BulkPolicy.calls == 1  # one call for all nodes
    assert hami_manager.score_nodes("fewest-pods", nodes, [], POD) == [-5.0, -1.0]  # no bulk method: node by node
    assert hami_manager.score_nodes("binpack", nodes, [], POD) == [hami_manager.score_node("binpack", n, [], POD) for n in nodes]


@pytest.mark.parametrize(
    ("scores", "fragment"),
    [
        ([1.0], "returned 1 scores for 2 nodes"),
        (None, "returned None, not scores"),
        (["x", "y"], "expected numbers"),
        ([1.0, float("nan")], "NaN"),
    ],
)
def test_bulk_scores_are_checked(hami_manager, scores, fragment):
    short = type("Short", (NodePolicy,), {"name": "short", "score_node": lambda s, n, c: 0.0, "score_nodes": lambda s, nodes, c: scores})()
    hami_manager.register(offering(short), name="short-plugin")
    with pytest.raises(ContractError, match="backend 'short-plugin', node policy 'short' score_nodes: ") as caught:
        hami_manager.score_nodes("short", [NodeUsage("a"), NodeUsage("b")], [], POD)
    assert fragment in str(caught.value)


def test_a_policy_without_its_scoring_method_cannot_be_made():
    class Incomplete(NodePolicy):
        name = "incomplete"

    with pytest.raises(TypeError, match="score_node"):
        Incomplete()


def test_policies_use_model_types_and_the_context_only():
    """One-way data flow: ``hami.policies`` never imports the scheduler or the simulator, and
    nothing reaches the pluggy manager behind the contract."""
    for path in sorted((ROOT / "core" / "hami" / "policies").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith(("hami.scheduler", "hami.sim"))], path.name
    for package in ("policies", "scheduler", "sim"):
        for path in sorted((ROOT / "core" / "hami" / package).glob("*.py")):
            assert ".pm." not in path.read_text(), f"{package}/{path.name} reaches through manager.pm"
