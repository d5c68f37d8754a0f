"""SDK helpers several backends share (issue 22: "if two backends need the same helper, it belongs in the
SDK"): per-node unit ranges, tool-table pairing, discovery through a tool, whole-device backends."""

from __future__ import annotations

import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hami.sdk as sdk
from hami.backendkit.selectors import UUID_MISMATCH, pod_uuid_reason
from hami.errors import BackendError, BackendRefused
from hami.plugin.model import (
    AnnotationKeys,
    BackendInfo,
    DeviceKind,
    DeviceRequest,
    DeviceUsage,
    Grant,
    GrantedDevice,
    NodeContext,
    PhysicalDevice,
    ResourceNames,
)
from hami.testing.conformance import BackendConformance
from hami.wire.codec import decode_pod_devices


def test_the_sdk_exports_the_shared_helpers():
    for name in ("RangeLedger", "owner_key", "paired_rows", "tool_devices", "one_slot", "WholeDeviceBackend", "encode_pod_devices"):
        assert name in sdk.__all__ and getattr(sdk, name) is not None
    grants = [[Grant("a", "V", 10, 50)], []]
    assert sdk.encode_pod_devices(grants) == "a,V,10,50:;;"  # HAMi's pod allocation form, as the core writes it
    assert [list(c) for c in decode_pod_devices(sdk.encode_pod_devices(grants))] == grants


# --- RangeLedger ------------------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("claim"), st.sampled_from("abcdef"), st.sampled_from(["d0", "d1"]), st.integers(1, 6)),
        st.tuples(st.just("release"), st.sampled_from("abcdef"), st.just(""), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_ledger_runs_never_overlap_and_claims_are_idempotent(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("ledger") / "node" / "ranges.json"
    ledger, total = sdk.RangeLedger(path), 8
    held: dict[tuple[str, str], tuple[int, int]] = {}
    for op, owner, device, size in ops:
        if op == "release":
            ledger.release(owner)
            held = {k: v for k, v in held.items() if k[1] != owner}
            continue
        try:
            run = ledger.claim(device, owner, size, total)
        except BackendRefused as exc:
            assert f"no {size} contiguous free units on {device}" in str(exc)
            free = set(range(total)) - {u for (d, _), (s, n) in held.items() if d == device for u in range(s, s + n)}
            assert (device, owner) not in held and not any(set(range(s, s + size)) <= free for s in range(total - size + 1))
            continue
        if (device, owner) in held:
            assert run == held[(device, owner)]  # asked again (Allocate retried): the same run
        held[(device, owner)] = run
        assert run[0] >= 0 and run[0] + run[1] <= total
    for device in ("d0", "d1"):
        units = [u for (d, _), (s, n) in held.items() if d == device for u in range(s, s + n)]
        assert len(units) == len(set(units))


def test_ledger_survives_a_restart_and_names_a_corrupt_file(tmp_path):
    path = tmp_path / "cu.json"
    assert sdk.RangeLedger(path).claim("gpu0", "uid/c", 4, 10) == (0, 4)
    assert sdk.RangeLedger(path).claim("gpu0", "uid/d", 4, 10) == (4, 4)
    sdk.RangeLedger(path).release("uid/c")
    assert sdk.RangeLedger(path).claim("gpu0", "uid/e", 3, 10) == (0, 3)  # the freed run is reused
    path.write_text("{not json")
    with pytest.raises(BackendRefused, match=re.escape(str(path))):
        sdk.RangeLedger(path).claim("gpu0", "uid/f", 1, 10)


def test_owner_key_prefers_the_uid():
    assert sdk.owner_key({"metadata": {"uid": "u1", "name": "p"}}, {"name": "c"}) == "u1/c"
    assert sdk.owner_key({"metadata": {"namespace": "ns", "name": "p"}}, {"name": "c"}) == "ns/p/c"


# --- paired_rows --------------------------------------------------------------------------------------

HEAD = re.compile(r"^\|\s*(\d+)\s+(.+?)\s*\|\s*([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s*\|")
MEMORY = re.compile(r"\|\s*(\d+)MiB\s*/\s*(\d+)MiB\s*\|")
DEVICE = st.tuples(st.from_regex(r"\A[A-Z][A-Za-z0-9-]{0,10}\Z"), st.integers(0, 255), st.integers(1, 1 << 20))


def _table(devices, noise: str) -> str:
    lines = ["+-----------------------------+", f"| {noise} |"]
    for i, (name, bus, memory) in enumerate(devices):
        lines += [f"| {i}  {name} | 0000:{bus:02x}:00.0 |", f"| {noise} |", f"| 33C  P0 | 0MiB / {memory}MiB | 0% |"]
    return "\n".join([*lines, "+-----------------------------+"])


@settings(max_examples=150, deadline=None)
@given(st.lists(DEVICE, max_size=8), st.text(alphabet="abc XYZ%-", max_size=20))
def test_paired_rows_reads_every_device_back(devices, noise):
    rows = sdk.paired_rows(_table(devices, noise), HEAD, MEMORY, tool="acme-smi")
    assert all(isinstance(r, sdk.TableRow) and r.memory and r.reason == "" for r in rows)
    assert [(r.head[2], r.head[3], int(r.memory[2])) for r in rows if r.memory] == [(n, f"0000:{b:02x}:00.0", m) for n, b, m in devices]


@settings(max_examples=150, deadline=None)
@given(st.lists(DEVICE, min_size=1, max_size=6), st.data())
def test_paired_rows_keeps_every_device_when_memory_lines_are_missing(devices, data):
    """Issue 25: any set of memory lines removed (the last device's included: a cut table), every head
    still gives its row, in order; the ones without memory carry a reason naming the tool, the device and
    its line number and text; the others keep their own memory, never a neighbour's."""
    dropped = data.draw(st.sets(st.integers(0, len(devices) - 1)))
    lines, heads = [], {}
    for i, (name, bus, memory) in enumerate(devices):
        heads[i] = (len(lines) + 1, f"| {i}  {name} | 0000:{bus:02x}:00.0 |")
        lines += [heads[i][1], "| x |"]
        if i not in dropped:
            lines.append(f"| 33C  P0 | 0MiB / {memory}MiB | 0% |")
    rows = sdk.paired_rows("\n".join(lines), HEAD, MEMORY, tool="acme-smi", noun="card")
    assert [int(r.head[1]) for r in rows] == list(range(len(devices)))
    for i, r in enumerate(rows):
        if i in dropped:
            number, line = heads[i]
            assert r.memory is None
            assert r.reason == f"memory unknown: acme-smi printed no memory line for card {i} ({devices[i][0]}) (line {number}: {line!r})"
        else:
            assert r.memory is not None and int(r.memory[2]) == devices[i][2] and r.reason == ""


def test_a_row_without_memory_needs_no_other_row():
    (only,) = sdk.paired_rows("| 0  Acme X1 | 0000:01:00.0 |\n| 1MiB / 2MiB |", HEAD, MEMORY, tool="acme-smi")
    assert only.memory is not None and only.memory[2] == "2"
    (cut,) = sdk.paired_rows("| 0  Acme X1 | 0000:01:00.0 |\n+-----+", HEAD, MEMORY, tool="acme-smi")
    assert cut.memory is None and "GPU 0 (Acme X1) (line 1: '| 0  Acme X1 | 0000:01:00.0 |')" in cut.reason
    assert sdk.paired_rows("| 1MiB / 2MiB |\nno table", HEAD, MEMORY, tool="acme-smi") == []  # memory before any head: no row


# --- tool_devices -------------------------------------------------------------------------------------

LOG = logging.getLogger("test.backendkit.shared")


def _read_failing(exc: BackendError):
    def read() -> list[PhysicalDevice]:
        raise exc

    return read


def test_tool_devices_simulated_reads_the_inventory_and_runs_nothing(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes: [{name: n1, devices: [{vendor: V, type: t, memory: 1}, {vendor: W, type: t, memory: 1}]}]")
    devices = sdk.tool_devices(
        NodeContext("n1", simulated=True), {"inventory": str(path)}, ["V"], _read_failing(BackendError("ran")), tool="acme-smi", log=LOG
    )
    assert [d.id for d in devices] == ["V-n1-0"]


def test_tool_devices_absent_is_info_failing_is_warning(caplog):
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert sdk.tool_devices(NodeContext("n1"), {}, ["V"], _read_failing(sdk.ToolNotFound("gone")), tool="acme-smi", log=LOG) == []
        assert sdk.tool_devices(NodeContext("n1"), {}, ["V"], _read_failing(BackendError("exit 3")), tool="acme-smi", log=LOG) == []
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "event=acme_smi_absent detail='gone'"),
        (logging.WARNING, "event=acme_smi_failed error='exit 3'"),
    ]
    found = [PhysicalDevice(id="d0", vendor="V", type="t", memory=1)]
    assert sdk.tool_devices(NodeContext("n1"), {}, ["V"], lambda: found, tool="acme-smi", log=LOG) == found


def test_tool_devices_lets_other_errors_through():
    def broken() -> list[PhysicalDevice]:
        raise KeyError("a bug, not a tool failure")

    with pytest.raises(KeyError):
        sdk.tool_devices(NodeContext("n1"), {}, ["V"], broken, tool="acme-smi", log=LOG)


# --- selectors and whole devices ----------------------------------------------------------------------


def test_pod_uuid_reason_checks_every_spelling():
    pairs = (("a/use", "a/nouse"), ("b/use", "b/nouse"))
    assert pod_uuid_reason({}, "d1", *pairs) is None
    assert pod_uuid_reason({"metadata": {"annotations": {"b/use": "d2"}}}, "d1", *pairs) == UUID_MISMATCH
    assert pod_uuid_reason({"metadata": {"annotations": {"a/nouse": "d1"}}}, "d1", *pairs) == UUID_MISMATCH
    assert pod_uuid_reason({"metadata": {"annotations": {"a/use": "d1,d2", "b/nouse": "d3"}}}, "d1", *pairs) is None


KIND = DeviceKind(
    vendor="Acme",
    resources=ResourceNames(count="acme.com/card"),
    annotations=AnnotationKeys.hami("hami.io/node-acme-register", "hami.io/node-handshake-acme", "hami.io/acme"),
)


class AcmeWhole(sdk.WholeDeviceBackend):
    uuid_keys = ("acme.com/use-uuid", "acme.com/nouse-uuid")
    visible_env = "ACME_VISIBLE_DEVICES"


WHOLE = AcmeWhole(BackendInfo(name="acmewhole", kinds=[KIND], description="whole Acme cards", default_config={}))


class TestWholeDeviceConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return WHOLE


def test_whole_devices_one_slot_uuid_and_env():
    device = PhysicalDevice(id="c7", vendor="Acme", type="Acme X", memory=4096, index=3, numa=1)
    split = WHOLE.hami_split_device(device, {})
    assert (split.count, split.memory, split.cores, split.index, split.numa) == (1, 4096, 100, 3, 1)
    (request,) = WHOLE.hami_container_requests({"name": "c", "resources": {"limits": {"acme.com/card": 2}}}, {}, {})
    assert (request.count, request.memory_percentage) == (2, 100)
    pod = {"metadata": {"annotations": {"acme.com/nouse-uuid": "c7"}}}
    assert WHOLE.hami_device_fits(DeviceRequest("Acme"), DeviceUsage(split), pod, {}) == UUID_MISMATCH
    edits = WHOLE.hami_container_edits([GrantedDevice(Grant("c7", "Acme", 4096, 100), device, split)])
    assert (dict(edits.env), list(edits.devices)) == ({"ACME_VISIBLE_DEVICES": "3"}, [])


def test_tool_json_names_the_tool_and_what_it_printed():
    assert sdk.tool_json('{"card0": {}}', "acme-smi") == {"card0": {}}
    with pytest.raises(BackendError, match=r"^acme-smi printed no JSON \(.*\): 'ERROR: device 0 busy'$"):
        sdk.tool_json("ERROR: device 0 busy", "acme-smi")
