"""The usage hook (issue 20): backend-dispatched, results merged and checked against what was asked."""

from __future__ import annotations

import pytest

from hami.errors import BackendCrashed, ContractError, ValidationError
from hami.plugin.manager import BackendManager
from hami.sdk import (
    AnnotationKeys,
    BackendInfo,
    ContainerShare,
    DeviceKind,
    DeviceLoad,
    Grant,
    PhysicalDevice,
    ResourceNames,
    ShareLoad,
    UsageReport,
    hookimpl,
)

GIB = 1 << 30


def _info(name: str, vendor: str) -> BackendInfo:
    low = name.lower()
    return BackendInfo(
        name=name,
        kinds=[
            DeviceKind(
                vendor=vendor,
                resources=ResourceNames(count=f"{low}.com/xpu"),
                annotations=AnnotationKeys.hami(f"hami.io/node-{low}-register", f"hami.io/node-handshake-{low}", f"hami.io/{low}"),
            )
        ],
    )


class Acme:
    def __init__(self, report: object = None, fail: Exception | None = None) -> None:
        self.report = report
        self.fail = fail
        self.calls: list[tuple[list[str], list[str], str]] = []

    @hookimpl
    def hami_backend(self):
        return _info("acme", "ACME")

    @hookimpl
    def hami_sample_usage(self, devices, containers, config, node):
        self.calls.append(([d.id for d in devices], [c.container for c in containers], node.name))
        if self.fail is not None:
            raise self.fail
        return self.report


class Other:
    @hookimpl
    def hami_backend(self):
        return _info("other", "OTHER")

    @hookimpl
    def hami_sample_usage(self, devices, containers, config, node):
        raise AssertionError("another backend's devices never reach this hook")


DEVICES = [
    PhysicalDevice(id="acme-0", vendor="ACME", type="X1", memory=16384),
    PhysicalDevice(id="acme-1", vendor="ACME", type="X1", memory=16384, index=1),
]
SHARE = ContainerShare("ns", "p", "uid-1", "main", [Grant("acme-0", "ACME", 2048, 30)], {"acme.com/xpu": "1"})


def _manager(*plugins: object) -> BackendManager:
    manager = BackendManager(strict=True, allow=(), deny=(), builtins=False)
    for plugin in plugins:
        manager.register(plugin)
    return manager


def test_only_the_owner_is_asked_and_its_report_comes_back():
    report = UsageReport(
        devices=[
            DeviceLoad("acme-0", memory_used=3 * GIB, memory_total=16 * GIB, utilization=0.5, power_watts=120.0, temperature_celsius=55.0)
        ],
        shares=[ShareLoad("acme-0", "ns", "p", "main", memory_used=GIB, memory_limit=2 * GIB, utilization=0.25, last_kernel_seconds=2.0)],
        skipped=["uid-2_main: truncated"],
    )
    acme = Acme(report)
    manager = _manager(acme, Other())
    got = manager.sample_usage("acme", DEVICES, [SHARE], "node-a")
    assert got == report
    assert acme.calls == [(["acme-0", "acme-1"], ["main"], "node-a")]


def test_none_is_an_empty_report():
    assert _manager(Acme(None)).sample_usage("acme", DEVICES, [], "n") == UsageReport()


@pytest.mark.parametrize(
    ("report", "words"),
    [
        (UsageReport(devices=[DeviceLoad("acme-9", memory_used=1)]), "device 'acme-9'"),
        (UsageReport(shares=[ShareLoad("acme-0", "ns", "q", "main")]), "ns/q[main]"),
        (UsageReport(shares=[ShareLoad("acme-7", "ns", "p", "main")]), "'acme-7'"),
        ({"devices": []}, "expected UsageReport"),
    ],
)
def test_figures_nobody_asked_for_are_a_contract_error(report, words):
    with pytest.raises(ContractError, match="hami_sample_usage") as caught:
        _manager(Acme(report)).sample_usage("acme", DEVICES, [SHARE], "n")
    assert words in str(caught.value) and caught.value.backend == "acme"


def test_a_crash_is_named():
    with pytest.raises(BackendCrashed, match="OSError: gone"):
        _manager(Acme(fail=OSError("gone"))).sample_usage("acme", DEVICES, [SHARE], "n")


@pytest.mark.parametrize(
    "build",
    [
        lambda: DeviceLoad("d", memory_used=-1),
        lambda: DeviceLoad("d", memory_used=0, utilization=1.5),
        lambda: ShareLoad("d", "ns", "p", "c", utilization=-0.1),
        lambda: ShareLoad("d", "ns", "p", "c", last_kernel_seconds=-3.0),
        lambda: ContainerShare("ns", "", "uid", "c"),
    ],
)
def test_impossible_figures_are_refused_naming_the_field(build):
    with pytest.raises(ValidationError, match=r"\w+\.\w+="):
        build()
