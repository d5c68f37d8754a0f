"""Meta-tests (datasette's idea): every hook is documented, and a test implements and drives it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from hami.plugin import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("hami_"))


def test_there_are_hooks_for_every_phase():
    assert {
        "hami_backend",
        "hami_discover_devices",
        "hami_device_health",
        "hami_split_device",
        "hami_container_requests",
        "hami_mutate_container",
        "hami_device_fits",
        "hami_normalize_request",
        "hami_policies",
        "hami_container_edits",
        "hami_prepare",
        "hami_release",
    } <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 150, f"{hook} needs a docstring saying when it is called, dispatch, params and return"
    assert "Example::" in doc and f"def {hook}(" in doc, f"{hook}: the docstring needs an example implementation"
    assert re.search(r"(Vendor-dispatched|Open hook|backend-dispatched|Called once per plugin)", doc), f"{hook}: say how it is dispatched"
    example_params = re.search(rf"def {hook}\(([^)]*)\)", doc).group(1)
    spec_params = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert [p.strip() for p in example_params.split(",") if p.strip()] == spec_params, (
        f"{hook}: the example's parameters drift from the spec"
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_in_the_backend_guide(hook):
    assert f"`{hook}`" in (ROOT / "docs" / "writing-a-backend.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test_implementation(hook):
    sources = [p.read_text() for p in (ROOT / "tests").rglob("test_*.py")]
    sources += [p.read_text() for p in (ROOT / "backends").glob("*/tests/test_*.py")]
    assert any(f"def {hook}(" in s for s in sources), f"no test implements {hook}"
