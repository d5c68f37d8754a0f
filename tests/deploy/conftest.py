"""Shared fixtures of the deploy checks: the helm binary (fetched once, see tools.py) and the chart
rendered per value set."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


def _load_tools() -> object:
    """tools.py by path, registered as ``hami_deploy_tools`` for the test modules to import (the test
    directories are not packages under pytest's importlib mode)."""
    spec = importlib.util.spec_from_file_location("hami_deploy_tools", Path(__file__).with_name("tools.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tools: Any = _load_tools()
CHART, NAMESPACE, VALUE_SETS, values_file = tools.CHART, tools.NAMESPACE, tools.VALUE_SETS, tools.values_file


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return tools.helm()
    except tools.ToolError as exc:  # fail, never skip: CI has PyPI
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def render(helm: Path) -> Callable[..., Rendered]:
    """``render(value_set, *extra_args)`` → the chart's documents (cached per arguments)."""
    cache: dict[tuple[str, ...], list[dict[str, Any]]] = {}

    def run(value_set: str = "default", *extra: str, kube_version: str | None = None) -> Rendered:
        args = (
            "template",
            "hami",
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            kube_version or VALUE_SETS[value_set],
            *values_file(value_set),
            *extra,
        )
        if args not in cache:
            done = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            cache[args] = Rendered(d for d in yaml.safe_load_all(done.stdout) if d)
        return cache[args]

    return run


class Rendered(list):  # type: ignore[type-arg]
    """The chart's documents, with lookups by kind and name."""

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [d for d in self if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.find(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def containers(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, container) for every container and init container of every workload."""
        out = []
        for doc in self:
            if doc["kind"] in ("Deployment", "DaemonSet", "Job"):
                spec = doc["spec"]["template"]["spec"]
                out.extend((doc, c) for c in [*(spec.get("initContainers") or []), *spec["containers"]])
        return out
