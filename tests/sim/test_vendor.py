"""The simulator names no vendor: which installed device kind a trace's devices are comes from the
backends' declared data (DeviceKind.models), the node file, or --vendor; pods use that kind's names."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hami.backendkit.standard import StandardBackend
from hami.plugin.manager import BackendManager
from hami.plugin.model import AnnotationKeys, BackendInfo, DeviceKind, ResourceNames
from hami.sim.cli import simulate_command
from hami.sim.cluster import trace_kind
from hami.sim.engine import Simulator
from hami.sim.pods import ShareResources, pod_for
from hami.sim.trace import GpuModelDevice, TraceError, TraceNode, TraceTask

from .conftest import write_nodes, write_pods


def kind(vendor: str, domain: str, models: tuple[str, ...] = (), *, selector: bool = True, shares: bool = True) -> DeviceKind:
    key = vendor.lower()
    return DeviceKind(
        vendor=vendor,
        resources=ResourceNames(
            count=f"{domain}/xpu",
            cores=f"{domain}/xpu-cores" if shares else None,
            memory_percentage=f"{domain}/xpu-mem-pct" if shares else None,
        ),
        annotations=AnnotationKeys.hami(f"hami.io/node-{key}-register", f"hami.io/node-handshake-{key}", f"hami.io/{key}"),
        type_selector=f"{domain}/use-xputype" if selector else None,
        models=models,
    )


ACME = kind("ACME", "acme.example", ("X1", "X2"))
BETA = kind("BETA", "beta.example", ("B7", "X2"))
KINDS = {"ACME": ACME, "BETA": BETA}


def nodes(*models: str, vendor: str | None = None) -> list[TraceNode]:
    return [TraceNode(f"n{i}", 64000, 262144, (GpuModelDevice(m, vendor=vendor),) * 2) for i, m in enumerate(models)]


def test_the_kind_that_declares_most_of_the_models_wins() -> None:
    assert trace_kind(KINDS, nodes("X1", "X2", "G1")) is ACME  # G1 is nobody's: the best match still decides
    assert trace_kind(KINDS, nodes("b7", "x2")) is BETA  # names compare case-insensitively


def test_ambiguous_or_unknown_models_ask_for_a_vendor() -> None:
    with pytest.raises(TraceError, match=r"fit several installed kinds equally \(ACME, BETA\): name the vendor with --vendor"):
        trace_kind(KINDS, nodes("X2"))
    with pytest.raises(TraceError, match=r"no installed backend declares the trace's device models \(G1, Q9\).*installed: ACME, BETA"):
        trace_kind(KINDS, nodes("Q9", "G1"))


def test_an_explicit_or_named_vendor_decides() -> None:
    assert trace_kind(KINDS, nodes("X1"), "BETA") is BETA
    with pytest.raises(TraceError, match=r"vendor 'GAMMA': no installed backend owns it \(installed vendor keys: ACME, BETA\)"):
        trace_kind(KINDS, nodes("X1"), "GAMMA")
    assert trace_kind(KINDS, nodes("Q9", vendor="BETA")) is BETA  # an inventory names its vendor
    mixed = nodes("X1", vendor="ACME") + nodes("B7", vendor="BETA")
    with pytest.raises(TraceError, match=r"devices of several vendors \(ACME, BETA\): choose one with --vendor"):
        trace_kind(KINDS, mixed)
    assert trace_kind(KINDS, mixed, "ACME") is ACME


def test_the_only_kind_needs_no_declaration() -> None:
    assert trace_kind({"ACME": ACME}, nodes("Q9")) is ACME


def test_pods_are_written_in_the_kinds_names() -> None:
    names = ShareResources.of(ACME)
    share = pod_for(TraceTask("s", 1000, 1024, 1, 250, ("X1", "X2")), "u1", names)
    limits = share["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"acme.example/xpu": "1", "acme.example/xpu-cores": "25", "acme.example/xpu-mem-pct": "25"}
    assert share["metadata"]["annotations"] == {"acme.example/use-xputype": "X1,X2"}
    whole = pod_for(TraceTask("w", 1000, 1024, 2, 1000), "u2", names)
    assert whole["spec"]["containers"][0]["resources"]["limits"] == {"acme.example/xpu": "2", "acme.example/xpu-cores": "100"}
    with pytest.raises(TraceError, match="vendor 'ACME' declares no cores or memory_percentage resource"):
        ShareResources.of(kind("ACME", "acme.example", shares=False))
    with pytest.raises(TraceError, match=r"task 't' allows only device models X1, but its device kind declares no type selector"):
        pod_for(TraceTask("t", 1000, 1024, 1, 500, ("X1",)), "u3", ShareResources.of(kind("ACME", "acme.example", selector=False)))


class Xpu(StandardBackend):
    """A vendor the core has never heard of, with HAMi's standard request rules."""


def test_a_trace_replays_on_any_vendors_backend() -> None:
    manager = BackendManager(strict=True, allow=(), deny=())
    manager.register(Xpu(BackendInfo(name="acme", kinds=[ACME])), distribution="in-process")
    workload = [TraceTask("a", 1000, 1024, 1, 1000), TraceTask("b", 1000, 1024, 1, 500), TraceTask("c", 1000, 1024, 1, 500)]
    result = Simulator(nodes("X1"), workload, manager=manager).run("binpack/binpack", 42, tune=0, shuffle=False)
    assert result.placements == ("n0", "n0", "n0") and result.allocated_milli == 2000


def test_cli_vendor_option(tmp_path) -> None:
    node_file = write_nodes(tmp_path / "nodes.csv", [("n0", 32000, 131072, 2, "T4")])
    pod_file = write_pods(tmp_path / "pods.csv", [("p0", 1000, 1024, 1, 500)])
    args = ["--nodes", str(node_file), "--pods", str(pod_file), "--policy", "binpack", "--json"]
    default = CliRunner().invoke(simulate_command, args)
    assert default.exit_code == 0, default.output  # T4 is a model the installed GPU backend declares
    unknown = CliRunner().invoke(simulate_command, [*args, "--vendor", "NOPE"])
    assert unknown.exit_code != 0 and "vendor 'NOPE': no installed backend owns it" in unknown.output
