"""Issue 28 on the backends whose shares only their vendor's own stack enforces (each README's "what
enforces each limit" table): through ``hami_enforcement`` and ``vendor_stack_enforcement``, a share is
ready where the vendor's tool is, whole-only with an install hint where it is not, and on a simulated
node ready unless the inventory says otherwise; whole devices beside the shares need nothing."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

from hami.sdk import NodeContext, PhysicalDevice

REAL = NodeContext("n1")
SIMULATED = NodeContext("n1", simulated=True)


@attrs.frozen
class Stack:
    backend: str
    share_vendor: Callable[[ModuleType], str]
    """The vendor key of the devices that carry shares."""
    config_key: str
    tool: str
    mechanism: str
    """What the ready report names as the enforcer."""
    whole_vendor: Callable[[ModuleType], str] | None = None
    """The vendor key of whole devices, where the backend also offers them."""


STACKS = [
    Stack("awsneuron", lambda m: m.VENDOR, "neuron_ls", "neuron-ls", "Neuron runtime"),
    Stack("iluvatar", lambda m: m.CHIPS[2], "ixsmi", "ixsmi", "vGPU stack"),
    Stack("kunlunxin", lambda m: m.VXPU.vendor, "xpu_smi", "xpu-smi", "vXPU stack", lambda m: m.WHOLE.vendor),
    Stack("metax", lambda m: m.SGPU.vendor, "mx_smi", "mx-smi", "sGPU driver stack", lambda m: m.GPU.vendor),
    Stack("mthreads", lambda m: m.VENDOR, "mthreads_gmi", "mthreads-gmi", "sGPU stack"),
]


@pytest.fixture(params=STACKS, ids=lambda s: s.backend)
def stack(request: pytest.FixtureRequest) -> tuple[Stack, ModuleType]:
    return request.param, importlib.import_module(f"hami_{request.param.backend}.plugin")


def _device(stack: Stack, module: ModuleType, index: int = 0, **attributes: str) -> PhysicalDevice:
    vendor = stack.share_vendor(module)
    return PhysicalDevice(id=f"{stack.backend}-{index}", vendor=vendor, type=vendor, memory=16384, index=index, attributes=attributes)


def _enforcement(module: ModuleType, devices: list[PhysicalDevice], node: NodeContext, **config: Any) -> Any:
    return module.plugin.hami_enforcement(devices, {**module.INFO.default_config, **config}, node)


def test_shares_are_enforced_where_the_vendor_stack_is(stack, tmp_path: Path) -> None:
    spec, module = stack
    tool = tmp_path / spec.tool  # the vendor's management tool as an executable on this node
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    (report,) = _enforcement(module, [_device(spec, module)], REAL, **{spec.config_key: str(tool)})
    assert report.ready and str(tool) in report.mechanism and spec.mechanism in report.mechanism


def test_without_the_vendor_stack_shares_are_whole_only_and_the_reason_says_what_to_install(stack, tmp_path: Path) -> None:
    spec, module = stack
    missing = str(tmp_path / spec.tool)
    (report,) = _enforcement(module, [_device(spec, module)], REAL, **{spec.config_key: missing})
    assert not report.ready
    assert missing in report.reason and "install" in report.reason and "advisory_limits: true" in report.reason


def test_a_simulated_node_is_enforced_unless_its_inventory_says_otherwise(stack) -> None:
    spec, module = stack
    devices = [_device(spec, module), _device(spec, module, 1, isolation_missing="no vendor stack")]
    reports = _enforcement(module, devices, SIMULATED)
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, (f"{spec.backend}-1",))]


@pytest.mark.parametrize("spec", [s for s in STACKS if s.whole_vendor], ids=lambda s: s.backend)
def test_whole_devices_need_nothing_to_enforce(spec: Stack, tmp_path: Path) -> None:
    module = importlib.import_module(f"hami_{spec.backend}.plugin")
    assert spec.whole_vendor is not None
    vendor = spec.whole_vendor(module)
    whole = PhysicalDevice(id=f"{spec.backend}-0", vendor=vendor, type=vendor, memory=16384, index=0)
    reports = _enforcement(module, [whole], REAL, **{spec.config_key: str(tmp_path / "absent")})
    assert [(r.vendor, r.ready) for r in reports] == [(vendor, True)]
