"""Usage on NVIDIA nodes (issue 20): HAMi-core's shared region read against files a C program writes
from HAMi-core's own struct declarations (three points of its history), NVML host figures from the
fake libnvidia-ml, and HAMi's priority feedback acting through the region."""

from __future__ import annotations

import ctypes
import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hami.plugin.manager import BackendManager
from hami.sdk import ContainerShare, Grant, NodeContext, PhysicalDevice
from hami_nvidia import region as rg
from hami_nvidia.feedback import observe
from hami_nvidia.plugin import INFO, NvidiaBackend
from hami_nvidia.usage import UsageMonitor, region_dir

WRITER = Path(__file__).parent / "fakeregion" / "writer.c"
LAYOUTS = {"v0": ["-DLAYOUT_V0"], "v1.1": ["-DLAYOUT_V11"], "v1.2": []}
GPU0 = "GPU-0b5f7a3c-1111-2222-3333-444455556666"
GPU1 = "GPU-9a8b7c6d-aaaa-bbbb-cccc-ddddeeeeffff"


@pytest.fixture(scope="session")
def writers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc) on PATH to build the shared-region writer")
    root = tmp_path_factory.mktemp("region-writer")
    out = {}
    for name, flags in LAYOUTS.items():
        binary = root / f"writer-{name}"
        subprocess.run([compiler, "-O1", "-Wall", *flags, "-o", str(binary), str(WRITER)], check=True, capture_output=True)
        out[name] = binary
    return out


def write(
    writers: dict[str, Path], layout: str, path: Path, *uuids: str, procs: int = 4, seed: int = 7, priority: int = 1
) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(writers[layout]), str(path), str(len(uuids)), str(procs), str(seed), str(priority), *uuids],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)


# ---------------------------------------------------------------- layout against the C compiler


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_offsets_and_size_are_the_c_compilers(writers, layout, tmp_path):
    expected = write(writers, layout, tmp_path / "r.cache", GPU0)
    struct = rg.RegionV0 if layout == "v0" else rg.RegionV1
    assert ctypes.sizeof(struct) == expected["sizeof"]
    for field, offset in expected["offsets"].items():
        if field == "slot":
            assert struct.procs.size // rg.MAX_PROCS == offset
        else:
            assert getattr(struct, field).offset == offset, field


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("procs", "seed"), [(1, 0), (4, 7), (9, 123456)])
def test_reader_sees_what_the_c_writer_wrote(writers, layout, procs, seed, tmp_path):
    expected = write(writers, layout, tmp_path / "r.cache", GPU0, GPU1, procs=procs, seed=seed, priority=2)
    region = rg.open_region(tmp_path / "r.cache")
    assert region.version == ("v0" if layout == "v0" else "v1")
    got = region.devices()
    assert [d.uuid for d in got] == [GPU0, GPU1]
    for figures, want in zip(got, expected["devices"], strict=True):
        assert (
            figures.index,
            figures.limit,
            figures.sm_limit,
            figures.used,
            figures.context,
            figures.module,
            figures.buffer,
            figures.sm_util,
        ) == (
            want["index"],
            want["limit"],
            want["sm_limit"],
            want["used"],
            want["context"],
            want["module"],
            want["buffer"],
            want["sm_util"],
        )
    assert region.priority == 2
    assert region.last_kernel_time == expected["last_kernel_time"]
    region.close()


def test_feedback_fields_written_in_place_reach_the_file(writers, tmp_path):
    write(writers, "v1.2", tmp_path / "r.cache", GPU0)
    region = rg.open_region(tmp_path / "r.cache")
    region.recent_kernel, region.utilization_switch = -1, 1
    region.close()
    again = rg.open_region(tmp_path / "r.cache", writable=False)
    assert (again.recent_kernel, again.utilization_switch) == (-1, 1)


# ---------------------------------------------------------------- files that are not a region


def test_truncated_foreign_and_unknown_files_are_refused_with_the_reason(writers, tmp_path):
    good = tmp_path / "good.cache"
    write(writers, "v1.2", good, GPU0)
    data = good.read_bytes()
    cases = {
        "empty": (b"", "truncated"),
        "header": (data[:8], "truncated"),
        "short": (data[: rg.V0_SIZE - 1], "unknown layout"),
        "foreign": (b"\x7fELF" + data[4:], "foreign file"),
        "major2": (data[:4] + (2).to_bytes(4, "little") + data[8:], "major version 2"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / f"{name}.cache"
        path.write_bytes(content)
        with pytest.raises(rg.RegionError, match=words):
            rg.open_region(path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_bytes_are_a_region_error_or_a_bounded_read(tmp_path, data):
    """Hostile files (random sizes, the magic flag, garbage counts) never crash the reader."""
    size = data.draw(st.sampled_from([0, 3, 12, rg.V0_SIZE - 1, rg.V0_SIZE, rg.V1_SIZE - 1, rg.V1_SIZE, rg.V1_SIZE + 64]))
    head = data.draw(st.binary(min_size=0, max_size=64))
    magic = data.draw(st.booleans())
    body = bytearray(size)
    body[: len(head)] = head[:size]
    if magic and size >= 12:
        body[:4] = rg.MAGIC.to_bytes(4, "little", signed=True)
        body[4:8] = data.draw(st.sampled_from([0, 1, 7])).to_bytes(4, "little")
    if size >= rg.V0_SIZE:  # garbage device and process counts
        struct = rg.RegionV1 if size >= rg.V1_SIZE else rg.RegionV0
        for field in ("num", "proc_num"):
            off, width = getattr(struct, field).offset, getattr(struct, field).size
            body[off : off + width] = data.draw(st.integers(0, 2 ** (8 * width) - 1)).to_bytes(width, "little")
    path = tmp_path / "fuzz.cache"
    path.write_bytes(bytes(body))
    try:
        region = rg.open_region(path)
    except rg.RegionError:
        return
    figures = region.devices()
    assert len(figures) <= rg.MAX_DEVICES
    region.close()


# ---------------------------------------------------------------- the hook on a real node


@pytest.fixture
def gpu_manager(tmp_path: Path) -> tuple[BackendManager, NodeContext, NvidiaBackend]:
    backend = NvidiaBackend(INFO)
    manager = BackendManager(strict=True, allow=(), deny=(), builtins=False)
    manager.register(backend, distribution="hami-nvidia")
    manager.configure("nvidia", {"host_root": str(tmp_path / "host")})
    context = NodeContext(name="gpu-1", simulated=False, config=manager.config("nvidia"), state_dir=tmp_path / "state")
    backend._usage = UsageMonitor(clock=lambda: 1_700_000_010.0)
    backend._usage._nvml_state = "absent"  # host figures come from the fake NVML in a subprocess below
    yield manager, context, backend
    backend.close()


DEVICES = [
    PhysicalDevice(id=GPU0, vendor="NVIDIA", type="NVIDIA A100", memory=40960),
    PhysicalDevice(id=GPU1, vendor="NVIDIA", type="NVIDIA A100", memory=40960, index=1),
]


def share(name: str, *ids: str, uid: str | None = None) -> ContainerShare:
    return ContainerShare("team-a", f"pod-{name}", uid or f"uid-{name}", "main", [Grant(i, "NVIDIA", 4096, 30) for i in ids])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_hook_reports_each_container_from_its_region(gpu_manager, writers, layout, caplog):
    manager, node, _ = gpu_manager
    config = manager.config("nvidia")
    a, b = share("a", GPU0, GPU1), share("b", GPU1)
    want_a = write(writers, layout, region_dir(config, "uid-a", "main") / "4f0e.cache", GPU0, GPU1, seed=3)
    write(writers, layout, region_dir(config, "uid-b", "main") / "77aa.cache", GPU1, seed=5)
    stale = region_dir(config, "uid-gone", "main")
    write(writers, layout, stale / "dead.cache", GPU0)
    caplog.set_level(logging.DEBUG, "hami_nvidia.usage")
    report = manager.sample_usage("nvidia", DEVICES, [a, b], node)
    by = {(s.pod, s.device_id): s for s in report.shares}
    assert set(by) == {("pod-a", GPU0), ("pod-a", GPU1), ("pod-b", GPU1)}
    first = by["pod-a", GPU0]
    assert (first.vdevice_index, first.memory_used, first.memory_limit) == (0, want_a["devices"][0]["used"], want_a["devices"][0]["limit"])
    assert first.utilization == pytest.approx(want_a["devices"][0]["sm_util"] / 100)
    assert by["pod-a", GPU1].vdevice_index == 1
    assert first.memory_context == want_a["devices"][0]["context"] and first.memory_buffer == want_a["devices"][0]["buffer"]
    if layout == "v0":
        assert first.last_kernel_seconds is None  # v0 has no last_kernel_time
    else:
        assert first.last_kernel_seconds == pytest.approx(1_700_000_010 - want_a["last_kernel_time"])
    assert report.skipped == ("uid-gone_main: stale, no live container",)
    assert "stale" in caplog.text


def test_a_truncated_or_foreign_region_is_a_skip_and_the_rest_is_read(gpu_manager, writers):
    manager, node, _ = gpu_manager
    config = manager.config("nvidia")
    good, cut, alien, nothing = share("good", GPU0), share("cut", GPU0), share("alien", GPU1), share("new", GPU1)
    write(writers, "v1.2", region_dir(config, "uid-good", "main") / "a.cache", GPU0)
    path = region_dir(config, "uid-cut", "main") / "b.cache"
    write(writers, "v1.2", path, GPU0)
    path.write_bytes(path.read_bytes()[:100])
    (region_dir(config, "uid-alien", "main")).mkdir(parents=True)
    (region_dir(config, "uid-alien", "main") / "c.cache").write_bytes(b"not a region at all" * 10)
    report = manager.sample_usage("nvidia", DEVICES, [good, cut, alien, nothing], node)
    assert [s.pod for s in report.shares] == ["pod-good"]
    reasons = "\n".join(report.skipped)
    assert "team-a/pod-cut[main]: truncated" not in reasons  # 100 bytes: a header, but no layout
    assert "team-a/pod-cut[main]: unknown layout: 100 bytes" in reasons
    assert "team-a/pod-alien[main]: foreign file" in reasons
    assert "team-a/pod-new[main]: no shared region" in reasons


def test_a_region_device_that_is_not_granted_is_skipped(gpu_manager, writers):
    manager, node, _ = gpu_manager
    write(writers, "v1.2", region_dir(manager.config("nvidia"), "uid-x", "main") / "x.cache", GPU0, GPU1)
    report = manager.sample_usage("nvidia", DEVICES, [share("x", GPU0)], node)
    assert [s.device_id for s in report.shares] == [GPU0]
    assert any("region device 1" in r and GPU1 in r for r in report.skipped)


def test_a_rewritten_region_is_mapped_again(gpu_manager, writers):
    manager, node, backend = gpu_manager
    path = region_dir(manager.config("nvidia"), "uid-r", "main") / "r.cache"
    write(writers, "v1.2", path, GPU0, seed=1)
    first = manager.sample_usage("nvidia", DEVICES, [share("r", GPU0)], node).shares[0]
    path.unlink()
    want = write(writers, "v0", path, GPU0, seed=99)
    second = manager.sample_usage("nvidia", DEVICES, [share("r", GPU0)], node).shares[0]
    assert second.memory_used == want["devices"][0]["used"] != first.memory_used
    manager.sample_usage("nvidia", DEVICES, [], node)
    assert backend._usage.regions == {}  # the container left: its mapping is dropped


# ---------------------------------------------------------------- priority feedback (feedback.go)


def test_a_low_priority_container_is_throttled_while_a_high_one_runs_and_released_after(gpu_manager, writers):
    manager, node, _ = gpu_manager
    config = manager.config("nvidia")
    write(writers, "v1.2", region_dir(config, "uid-hi", "main") / "h.cache", GPU0, priority=0)
    write(writers, "v1.2", region_dir(config, "uid-lo", "main") / "l.cache", GPU0, priority=1)
    write(writers, "v1.2", region_dir(config, "uid-other", "main") / "o.cache", GPU1, priority=1)
    shares = [share("hi", GPU0), share("lo", GPU0), share("other", GPU1)]
    hi = rg.open_region(next(region_dir(config, "uid-hi", "main").glob("*.cache")))
    lo = rg.open_region(next(region_dir(config, "uid-lo", "main").glob("*.cache")))
    other = rg.open_region(next(region_dir(config, "uid-other", "main").glob("*.cache")))
    hi.recent_kernel, lo.recent_kernel, other.recent_kernel = 3, 2, 2  # HAMi-core marks launches like this

    def sample() -> dict[str, bool]:
        return {s.pod: s.throttled for s in manager.sample_usage("nvidia", DEVICES, shares, node).shares}

    assert sample() == {"pod-hi": False, "pod-lo": True, "pod-other": False}
    assert (lo.recent_kernel, lo.utilization_switch) == (-1, 1)  # blocked, limiter on
    assert (hi.recent_kernel, hi.utilization_switch) == (2, 0)
    assert other.utilization_switch == 0  # another GPU: untouched by GPU0's priorities
    assert sample()["pod-lo"] is True  # hi still counts down (2 -> 1): still active
    assert sample()["pod-lo"] is False  # hi went idle (1 -> 0): released
    assert (lo.recent_kernel, lo.utilization_switch) == (0, 0)


def test_two_busy_containers_of_one_priority_turn_the_limiter_on_and_block_nobody(writers, tmp_path):
    paths = [tmp_path / "a.cache", tmp_path / "b.cache"]
    for path in paths:
        write(writers, "v1.1", path, GPU0, priority=1)
    regions = [rg.open_region(p) for p in paths]
    for region in regions:
        region.recent_kernel = 5
    observe(regions)
    assert [(r.recent_kernel, r.utilization_switch) for r in regions] == [(4, 1), (4, 1)]


def test_feedback_can_be_turned_off(gpu_manager, writers):
    manager, _, _ = gpu_manager
    manager.configure("nvidia", {"host_root": manager.config("nvidia")["host_root"], "priority_feedback": False})
    config = manager.config("nvidia")
    node = NodeContext(name="gpu-1", config=config)
    write(writers, "v1.2", region_dir(config, "uid-hi", "main") / "h.cache", GPU0, priority=0)
    write(writers, "v1.2", region_dir(config, "uid-lo", "main") / "l.cache", GPU0, priority=1)
    for uid in ("uid-hi", "uid-lo"):
        rg.open_region(next(region_dir(config, uid, "main").glob("*.cache"))).recent_kernel = 3
    manager.sample_usage("nvidia", DEVICES, [share("hi", GPU0), share("lo", GPU0)], node)
    lo = rg.open_region(next(region_dir(config, "uid-lo", "main").glob("*.cache")))
    assert lo.recent_kernel == 3


# ---------------------------------------------------------------- NVML host figures


def test_host_figures_come_from_nvml(run_nvml):
    scenario = {
        "devices": [
            {
                "uuid": GPU0,
                "name": "NVIDIA A100-SXM4-40GB",
                "memory_mib": 40960,
                "used_mib": 12288,
                "util": [37, 12],
                "power_mw": 215000,
                "temp_c": 61,
            },
            {"uuid": GPU1, "name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960, "used_mib": 0},
        ]
    }
    out, _ = run_nvml(scenario, "2", action="usage")
    for loads in (r["devices"] for r in out["rounds"]):  # NVML stays initialised between samples
        first, second = loads
        assert first == {
            "device_id": GPU0,
            "memory_used": 12288 << 20,
            "memory_total": 40960 << 20,
            "utilization": 0.37,
            "memory_utilization": 0.12,
            "power_watts": 215.0,
            "temperature_celsius": 61.0,
        }
        assert second["memory_used"] == 0 and second["utilization"] is None and second["power_watts"] is None


def test_a_lost_gpu_is_a_skip_not_a_failed_sample(run_nvml):
    scenario = {"devices": [{"uuid": GPU0, "memory_mib": 40960, "used_mib": 1, "util": [1, 1]}, {"uuid": GPU1, "memory_mib": 40960}]}
    out, _ = run_nvml(scenario, action="usage")
    assert [d["device_id"] for d in out["rounds"][0]["devices"]] == [GPU0, GPU1]
    scenario["devices"][1]["lost"] = True
    out, _ = run_nvml(scenario, action="usage")
    assert out.get("error") or [d["device_id"] for d in out["rounds"][0]["devices"]] == [GPU0]
