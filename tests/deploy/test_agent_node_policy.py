"""The agents' node-scoped writes (issue 19 item 9): the chart's ValidatingAdmissionPolicy, rendered and
its CEL evaluated with cel-python (the maintained Python CEL implementation, also behind hami[dra]) the
way kube-apiserver applies it: matchConditions, then variables, then every validation."""

from __future__ import annotations

from typing import Any

import celpy
import pytest

NS = "hami-system"
AGENT = f"system:serviceaccount:{NS}:hami-agent"
NODE_KEY = "authentication.kubernetes.io/node-name"


@pytest.fixture(scope="module")
def policy(render) -> dict[str, Any]:
    docs = render("default")
    policy = docs.one("ValidatingAdmissionPolicy", "hami-agent-node-scope")
    binding = docs.one("ValidatingAdmissionPolicyBinding", "hami-agent-node-scope")
    assert binding["spec"] == {"policyName": "hami-agent-node-scope", "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    return policy


def admit(
    policy: dict[str, Any],
    *,
    user: str = AGENT,
    node: str | list[str] | None = "node-a",
    resource: str = "pods",
    operation: str = "UPDATE",
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
) -> str | None:
    """None when the write is admitted, else the denial message (as kube-apiserver would report it)."""
    env = celpy.Environment()
    extra = {} if node is None else {NODE_KEY: node if isinstance(node, list) else [node]}
    request = {
        "operation": operation,
        "userInfo": {"username": user, "groups": ["system:serviceaccounts"], "extra": extra},
        "resource": {"group": "", "version": "v1", "resource": resource},
    }
    activation: dict[str, Any] = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
    }

    def run(expression: str) -> Any:
        return env.program(env.compile(expression)).evaluate(activation)

    spec = policy["spec"]
    if not all(bool(run(c["expression"])) for c in spec["matchConditions"]):
        return None  # not an agent: the policy does not apply
    variables: dict[str, Any] = {}
    for variable in spec["variables"]:
        activation["variables"] = celpy.json_to_cel(variables)
        variables[variable["name"]] = _plain(run(variable["expression"]))
    activation["variables"] = celpy.json_to_cel(variables)
    for validation in spec["validations"]:
        if not bool(run(validation["expression"])):
            return str(run(validation["messageExpression"])) if "messageExpression" in validation else validation["message"]
    return None


def _plain(value: Any) -> Any:
    """A CEL value back to JSON-like Python, so the next expression sees it as a map or string."""
    if isinstance(value, celpy.celtypes.MapType):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, celpy.celtypes.ListType):
        return [_plain(v) for v in value]
    if isinstance(value, celpy.celtypes.StringType):
        return str(value)
    return value


def pod(node: str | None, name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "team"}, "spec": {"nodeName": node} if node else {}}


def node_object(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


def test_the_agent_may_change_its_own_node_and_the_pods_bound_to_it(policy):
    assert admit(policy, resource="nodes", old=node_object("node-a"), new=node_object("node-a")) is None
    assert admit(policy, resource="pods", old=pod("node-a"), new=pod("node-a")) is None


def test_another_node_or_its_pods_are_refused_naming_both(policy):
    denied = admit(policy, resource="nodes", old=node_object("node-b"), new=node_object("node-b"))
    assert denied == "the HAMi agent of node node-a may change only its own Node, not node-b"
    denied = admit(policy, resource="pods", old=pod("node-b", "victim"), new=pod("node-b", "victim"))
    assert denied == "the HAMi agent of node node-a may change only pods bound to its node, not team/victim"
    assert "team/pending" in (admit(policy, old=pod(None, "pending"), new=pod(None, "pending")) or "")  # not yet bound: not the agent's
    assert admit(policy, operation="DELETE", old=pod("node-b")) is not None


@pytest.mark.parametrize("extra", [None, [], ["node-a", "node-b"]])
def test_a_token_without_one_node_name_is_refused_saying_what_is_needed(policy, extra):
    denied = admit(policy, node=extra, resource="nodes", old=node_object("node-a"), new=node_object("node-a"))
    assert denied is not None and "ServiceAccountTokenPodNodeInfo" in denied and "agent.nodeRestriction=false" in denied


def test_other_users_are_not_matched(policy):
    assert admit(policy, user=f"system:serviceaccount:{NS}:hami-scheduler", node=None, old=pod("node-b"), new=pod("node-b")) is None
    assert admit(policy, user="system:serviceaccount:other:hami-agent", node="node-a", old=pod("node-b"), new=pod("node-b")) is None


def test_the_policy_covers_what_the_agent_may_write(policy, render):
    """Every resource the agent's ClusterRole may change is matched (a new write path stays scoped)."""
    role = render("default").one("ClusterRole", "hami-agent")
    writable = {r for rule in role["rules"] if set(rule["verbs"]) & {"patch", "update", "delete", "create"} for r in rule["resources"]}
    matched = {r for rule in policy["spec"]["matchConstraints"]["resourceRules"] for r in rule["resources"]}
    assert writable - {"events"} <= matched  # events: the agent's own AllocationFailed records, not device state


def test_rendered_only_where_the_api_and_the_token_claim_exist(render):
    assert not render("ha-ascend").find("ValidatingAdmissionPolicy")  # Kubernetes 1.28: no v1 policy API, no node claim
    assert render("all-backends").find("ValidatingAdmissionPolicy")
    off = render("default", "--set", "agent.nodeRestriction=false")
    assert not off.find("ValidatingAdmissionPolicy") and not off.find("ValidatingAdmissionPolicyBinding")
