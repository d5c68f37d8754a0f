"""Issue 28: a share is advertised only where something enforces it.

The hook (``hami_enforcement``) is backend-dispatched and checked; the agent's discovery holds each
device to its report (whole-only when missing, shares when enforced or when the operator opted into
advisory limits); the node annotation carries the state; the scheduler refuses partial requests on a
whole-only device naming the node's reason; ``/metrics`` has ``hami_isolation_ready``; the ELF check
reads real shared objects built here with the C compiler."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from hami.backendkit.enforcement import library_problem, simulated_enforcement
from hami.errors import AnnotationError, ContractError, ValidationError
from hami.node.devices import discover_node
from hami.node.metrics import AgentCollector
from hami.node.registration import node_annotations
from hami.plugin.manager import BackendManager
from hami.scheduler.fit import fit_node
from hami.scheduler.state import NodeState
from hami.sdk import (
    AnnotationKeys,
    BackendInfo,
    DeviceKind,
    DeviceRequest,
    Enforcement,
    PhysicalDevice,
    ResourceNames,
    SchedulableDevice,
    hookimpl,
)
from hami.wire.codec import encode_node_devices
from hami.wire.isolation import ISOLATION_ANNOTATION, ModeState, decode_isolation, encode_isolation, whole_only_reason

KIND = DeviceKind(
    vendor="ACME",
    resources=ResourceNames(count="acme.com/xpu", memory="acme.com/xpumem", cores="acme.com/xpucores"),
    annotations=AnnotationKeys.hami("hami.io/node-acme-register", "hami.io/node-handshake-acme", "hami.io/acme"),
)
DEVICES = [PhysicalDevice(id=f"acme-{i}", vendor="ACME", type="X1", memory=16384, index=i) for i in range(2)]


class Acme:
    """Two devices split four ways in mode ``partition``; ``reports`` is what the check says."""

    def __init__(self, reports: object = (), fail: Exception | None = None) -> None:
        self.reports = reports
        self.fail = fail
        self.asked: list[list[str]] = []

    @hookimpl
    def hami_backend(self):
        return BackendInfo(name="acme", kinds=[KIND])

    @hookimpl
    def hami_discover_devices(self, config, node_name, node):
        return DEVICES

    @hookimpl
    def hami_split_device(self, device, config, node):
        return SchedulableDevice(
            id=device.id, vendor="ACME", type=device.type, count=4, memory=device.memory, index=device.index, mode="partition"
        )

    @hookimpl
    def hami_enforcement(self, devices, config, node):
        self.asked.append([d.id for d in devices])
        if self.fail is not None:
            raise self.fail
        return self.reports


def _manager(plugin: Acme, *, builtins: bool = False, **config: object) -> BackendManager:
    manager = BackendManager(strict=True, allow=(), deny=(), builtins=builtins)
    manager.register(plugin)
    if config:
        manager.configure("acme", config)
    return manager


MISSING = Enforcement("ACME", "partition", ready=False, mechanism="acme_vdev", reason="kernel module acme_vdev is not loaded")


def test_a_mechanism_that_is_not_ready_needs_the_reason():
    with pytest.raises(ValidationError, match="reason"):
        Enforcement("ACME", "partition", ready=False)
    with pytest.raises(ValidationError, match="mode"):
        Enforcement("ACME", "a,b")


def test_the_manager_refuses_a_report_for_a_vendor_the_backend_does_not_own():
    manager = _manager(Acme([Enforcement("OTHER", "x")]))
    with pytest.raises(ContractError, match="OTHER"):
        manager.enforcement("acme", DEVICES, "n1")
    with pytest.raises(ContractError, match="Enforcement"):
        _manager(Acme(["ready"])).enforcement("acme", DEVICES, "n1")


def test_enforced_devices_keep_their_shares(tmp_path):
    plugin = Acme([Enforcement("ACME", "partition", mechanism="acme_vdev 1.2")])
    found = discover_node(_manager(plugin), "n1", tmp_path)
    assert plugin.asked == [["acme-0", "acme-1"]]
    assert [(d.schedulable.count, d.isolation) for d in found.devices] == [(4, "enforced")] * 2


def test_missing_enforcement_leaves_whole_devices_only(tmp_path):
    found = discover_node(_manager(Acme([MISSING])), "n1", tmp_path)
    assert [(d.schedulable.count, d.schedulable.memory, d.isolation) for d in found.devices] == [(1, 16384, "whole-only")] * 2
    row = found.devices[0].as_json()
    assert (row["isolation"], row["slots"]) == ("whole-only", 1) and "acme_vdev" in row["isolation_reason"]


def test_advisory_limits_are_an_explicit_opt_in(tmp_path):
    assert [d.schedulable.count for d in discover_node(_manager(Acme([MISSING]), advisory_limits="yes"), "n1", tmp_path).devices] == [1, 1]
    found = discover_node(_manager(Acme([MISSING]), advisory_limits=True), "n1", tmp_path)
    assert [(d.schedulable.count, d.isolation) for d in found.devices] == [(4, "advisory")] * 2


def test_a_report_for_one_device_overrides_the_modes_report(tmp_path):
    reports = [
        Enforcement("ACME", "partition", mechanism="m"),
        Enforcement("ACME", "", ready=False, reason="chip 1 has the feature off", device_ids=["acme-1"]),
    ]
    found = discover_node(_manager(Acme(reports)), "n1", tmp_path)
    assert [(d.id, d.schedulable.count, d.isolation) for d in found.devices] == [("acme-0", 4, "enforced"), ("acme-1", 1, "whole-only")]


def test_an_unreported_mode_stays_unverified(tmp_path):
    found = discover_node(_manager(Acme([Enforcement("ACME", "other-mode", ready=False, reason="r")])), "n1", tmp_path)
    assert [(d.schedulable.count, d.isolation) for d in found.devices] == [(4, "unverified")] * 2


def test_a_failing_check_counts_as_missing(tmp_path):
    found = discover_node(_manager(Acme(fail=RuntimeError("sysfs unreadable"))), "n1", tmp_path)
    assert [(d.schedulable.count, d.isolation) for d in found.devices] == [(1, "whole-only")] * 2
    assert "sysfs unreadable" in found.devices[0].isolation_reason and found.errors == {}


def test_the_node_annotation_says_which_mode_lacks_what(tmp_path):
    found = discover_node(_manager(Acme([MISSING])), "n1", tmp_path)
    out = node_annotations({"ACME": KIND}, found, {}, {}, 0.0)
    body = json.loads(out[ISOLATION_ANNOTATION])
    assert body["status"] == "False" and body["reason"] == "IsolationMissing"
    assert "ACME partition: kernel module acme_vdev is not loaded (whole-only)" in body["message"]
    assert json.loads(out[KIND.annotations.node_register])[0]["count"] == 1
    ready = discover_node(_manager(Acme([Enforcement("ACME", "partition")])), "n1", tmp_path)
    assert json.loads(node_annotations({"ACME": KIND}, ready, {}, out, 0.0)[ISOLATION_ANNOTATION])["status"] == "True"


@given(st.text(max_size=200))
def test_decoding_any_text_raises_only_annotation_errors(text):
    try:
        modes = decode_isolation(text)
    except AnnotationError:
        return
    assert all(m.state in ("enforced", "advisory", "whole-only") for m in modes)


@given(
    st.lists(
        st.builds(
            ModeState,
            vendor=st.sampled_from(["ACME", "ZETA"]),
            mode=st.sampled_from(["", "partition", "mps"]),
            state=st.sampled_from(["enforced", "advisory", "whole-only"]),
            mechanism=st.text(max_size=20),
            reason=st.text(max_size=20),
            devices=st.lists(st.sampled_from(["a-0", "a-1"]), max_size=2, unique=True).map(tuple),
        ),
        max_size=4,
    )
)
def test_the_annotation_round_trips(modes):
    decoded = decode_isolation(encode_isolation(modes))
    assert sorted(decoded, key=repr) == sorted(modes, key=repr)


def test_a_bad_annotation_names_the_field():
    with pytest.raises(AnnotationError, match=r"modes\[0\]\.state='broken'"):
        decode_isolation('{"modes": [{"vendor": "ACME", "state": "broken"}]}')
    device = SchedulableDevice(id="acme-0", vendor="ACME", type="X1", count=1, memory=16384, mode="partition")
    assert "not JSON" in (whole_only_reason({ISOLATION_ANNOTATION: "{"}, device) or "")  # unreadable: fail closed


def _node(annotations: dict[str, str]) -> NodeState:
    state = NodeState("n1")
    devices = [SchedulableDevice(id="acme-0", vendor="ACME", type="X1", count=1, memory=16384, mode="partition")]
    state.devices = {d.id: d for d in devices}
    state.by_vendor = {"ACME": tuple(state.devices)}
    state.annotations = {**annotations, KIND.annotations.node_register: encode_node_devices(devices, "json")}
    return state


def test_the_scheduler_refuses_a_share_where_isolation_is_missing_and_says_why():
    text = encode_isolation([ModeState("ACME", "partition", "whole-only", "acme_vdev", "kernel module acme_vdev is not loaded")])
    manager = _manager(Acme(), builtins=True)
    share = DeviceRequest(vendor="ACME", count=1, memory=4096, cores=30)
    misfit = fit_node(manager, _node({ISOLATION_ANNOTATION: text}), {"metadata": {}}, [[share]], "binpack")
    assert misfit.node == "n1"
    assert "IsolationMissing (kernel module acme_vdev is not loaded; only whole devices)" in misfit.reason  # type: ignore[union-attr]
    whole = DeviceRequest(vendor="ACME", count=1, memory_percentage=100, cores=100)
    assert hasattr(fit_node(manager, _node({ISOLATION_ANNOTATION: text}), {"metadata": {}}, [[whole]], "binpack"), "devices")
    advisory = encode_isolation([ModeState("ACME", "partition", "advisory", "acme_vdev", "not loaded")])
    assert hasattr(fit_node(manager, _node({ISOLATION_ANNOTATION: advisory}), {"metadata": {}}, [[share]], "binpack"), "devices")
    assert hasattr(fit_node(manager, _node({}), {"metadata": {}}, [[share]], "binpack"), "devices")


class _Agent:
    node = "n1"
    core_v1 = None

    def __init__(self, manager: BackendManager, discovery: object) -> None:
        self.manager = manager
        self.discovery = discovery

    def healthy(self, device: object) -> bool:
        return True


def test_metrics_show_isolation_ready_per_vendor_and_mode(tmp_path):
    from prometheus_client import CollectorRegistry

    reports = [Enforcement("ACME", "partition", mechanism="m"), Enforcement("ACME", "mps", ready=False, reason="no pipe")]
    manager = _manager(Acme(reports))
    registry = CollectorRegistry()
    registry.register(AgentCollector(_Agent(manager, discover_node(manager, "n1", tmp_path)), pods=lambda: []))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'hami_isolation_ready{mode="partition",node="n1",vendor="ACME",zone="vGPU"} 1.0' in text
    assert 'hami_isolation_ready{mode="mps",node="n1",vendor="ACME",zone="vGPU"} 0.0' in text


# ---------------------------------------------------------------- the ELF check, on real files


@pytest.fixture(scope="module")
def shared_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler (cc/gcc) is needed to build the test's shared object")
    root = tmp_path_factory.mktemp("elf")
    (root / "v.c").write_text("int vgpu_probe(void) { return 1; }\n")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(root / "libtest.so"), str(root / "v.c")], check=True, capture_output=True)
    return root / "libtest.so"


def test_a_real_shared_object_for_this_host_looks_loadable(shared_object):
    assert library_problem(shared_object) is None


def test_every_way_a_library_can_be_wrong_is_named(shared_object, tmp_path):
    assert library_problem(tmp_path / "nope.so") == f"{tmp_path / 'nope.so'} is missing"
    assert "not a regular file" in (library_problem(tmp_path) or "")
    text = tmp_path / "text.so"
    text.write_text("#!/bin/sh\n")
    assert "is not an ELF file" in (library_problem(text) or "")
    short = tmp_path / "short.so"
    short.write_bytes(b"\x7fELF\x02\x01")
    assert "truncated" in (library_problem(short) or "")
    data = bytearray(shared_object.read_bytes())
    other = tmp_path / "other-arch.so"
    data[18:20] = (183 if data[18] != 183 else 62).to_bytes(2, "little")
    other.write_bytes(bytes(data))
    assert "is built for" in (library_problem(other) or "") and "this node is" in (library_problem(other) or "")
    executable = tmp_path / "exec.so"
    data = bytearray(shared_object.read_bytes())
    data[16:18] = (2).to_bytes(2, "little")
    executable.write_bytes(bytes(data))
    assert "not a shared object" in (library_problem(executable) or "")


def test_simulated_nodes_are_enforced_unless_the_inventory_says_otherwise():
    devices = [
        DEVICES[0],
        PhysicalDevice(id="acme-1", vendor="ACME", type="X1", memory=1, attributes={"isolation_missing": "no vdev module"}),
    ]
    reports = simulated_enforcement(devices, "ACME", ["partition"], "acme_vdev")
    assert [(r.ready, r.device_ids) for r in reports] == [(True, ()), (False, ("acme-1",))]
    assert reports[1].reason == "no vdev module (simulated)"
