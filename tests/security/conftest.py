"""The issue 19 checks reuse the deploy checks' helm binary and CEL evaluator by path (test
directories are not packages under pytest's importlib mode)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

TESTS = Path(__file__).resolve().parents[1]


def load(relative: str, name: str) -> ModuleType:
    """A module of the test tree by path, registered under ``name``."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS / relative)
    assert spec and spec.loader, relative
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def agent_node_policy() -> dict[str, Any]:
    """The chart's agent ValidatingAdmissionPolicy, rendered with the default values."""
    tools: Any = load("deploy/tools.py", "hami_deploy_tools")
    try:
        helm = tools.helm()
    except tools.ToolError as exc:  # fail, never skip: CI has PyPI
        pytest.fail(str(exc))
    args = ["template", "hami", str(tools.CHART), "--namespace", tools.NAMESPACE, "--kube-version", tools.VALUE_SETS["default"]]
    done = subprocess.run([str(helm), *args, *tools.values_file("default")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (policy,) = [
        d
        for d in yaml.safe_load_all(done.stdout)
        if d and d["kind"] == "ValidatingAdmissionPolicy" and d["metadata"]["name"] == "hami-agent-node-scope"
    ]
    return policy


@pytest.fixture(scope="session")
def node_policy_admit() -> Any:
    """tests/deploy/test_agent_node_policy.py's ``admit(policy, ...)``: the policy's CEL the way
    kube-apiserver applies it, None when a write is admitted, else the denial message."""
    return load("deploy/test_agent_node_policy.py", "hami_security_agent_node_policy").admit
