"""The MPS control daemon, driven through its CLI against a fake ``nvidia-cuda-mps-control``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hami.sdk import BackendError, Grant
from hami_nvidia.mps import MpsDaemon, MpsPaths

FAKE_CONTROL = """#!/bin/sh
# Behaves like nvidia-cuda-mps-control: `-d` starts the daemon (a marker in the pipe dir); otherwise
# commands arrive on stdin and fail when no daemon runs. Every call is appended to $FAKE_MPS_LOG.
marker="$CUDA_MPS_PIPE_DIRECTORY/control"
if [ "$1" = "-d" ]; then
  if [ -n "$FAKE_MPS_FAIL_START" ]; then echo "An instance of this daemon is already running with another pipe" >&2; exit 1; fi
  echo "start pipe=$CUDA_MPS_PIPE_DIRECTORY log=$CUDA_MPS_LOG_DIRECTORY" >> "$FAKE_MPS_LOG"
  : > "$marker"
  exit 0
fi
if [ ! -e "$marker" ]; then echo "Cannot find MPS control daemon process" >&2; exit 1; fi
while IFS= read -r line; do
  echo "cmd $line" >> "$FAKE_MPS_LOG"
  if [ "$line" = "quit" ]; then rm -f "$marker"; fi
done
exit 0
"""


@pytest.fixture
def control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "nvidia-cuda-mps-control"
    path.write_text(FAKE_CONTROL)
    path.chmod(0o755)
    monkeypatch.setenv("FAKE_MPS_LOG", str(tmp_path / "calls.log"))
    return path


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_start_creates_the_directories_and_is_idempotent(control, tmp_path):
    daemon = MpsDaemon(str(control), MpsPaths("/run/nvidia/mps"), host_root=str(tmp_path / "host"))
    assert not daemon.healthy()
    assert daemon.start() is True
    pipe = tmp_path / "host/run/nvidia/mps/pipe"
    assert pipe.is_dir() and (tmp_path / "host/run/nvidia/mps/shm").is_dir()
    assert daemon.healthy()
    assert daemon.start() is False  # already answering: not started twice
    starts = [c for c in calls(tmp_path) if c.startswith("start")]
    assert starts == [f"start pipe={pipe} log={tmp_path / 'host/run/nvidia/mps/log'}"]


def test_default_limits_are_set_through_the_control_channel(control, tmp_path):
    daemon = MpsDaemon(str(control), MpsPaths(), host_root=str(tmp_path))
    daemon.ensure(active_thread_percentage=50, pinned_memory={1: 8000, 0: 4000})
    assert [c for c in calls(tmp_path) if c.startswith("cmd set")] == [
        "cmd set_default_active_thread_percentage 50",
        "cmd set_default_device_pinned_mem_limit 0 4000M",
        "cmd set_default_device_pinned_mem_limit 1 8000M",
    ]
    daemon.ensure(active_thread_percentage=50)  # running already: defaults are not re-sent
    assert len([c for c in calls(tmp_path) if c.startswith("cmd set")]) == 3
    with pytest.raises(BackendError, match="percentage 150"):
        daemon.set_default_limits(active_thread_percentage=150)


def test_stop_quits_a_running_daemon(control, tmp_path):
    daemon = MpsDaemon(str(control), MpsPaths(), host_root=str(tmp_path))
    daemon.start()
    daemon.stop()
    assert not daemon.healthy() and "cmd quit" in calls(tmp_path)


def test_failures_are_backend_errors_saying_why(control, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MPS_FAIL_START", "1")
    with pytest.raises(BackendError, match=r"could not start the MPS control daemon .*-d\): An instance of this daemon is already running"):
        MpsDaemon(str(control), MpsPaths(), host_root=str(tmp_path)).start()
    with pytest.raises(BackendError, match="MPS control executable '/nowhere/nvidia-cuda-mps-control' not found"):
        MpsDaemon("/nowhere/nvidia-cuda-mps-control", MpsPaths(), host_root=str(tmp_path)).start()
    with pytest.raises(BackendError, match="Cannot find MPS control daemon process"):
        MpsDaemon(str(control), MpsPaths(), host_root=str(tmp_path)).command("get_default_active_thread_percentage")


def test_prepare_of_an_mps_pod_starts_the_daemon_with_node_defaults(control, nvidia, on_node, tmp_path):
    """The daemon starts once; each MPS container's GPUs get the default pinned-memory limit before
    the container starts, so a client that drops its own limits is still held to it."""
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": "n", "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960, "count": 2}]}]})
    )
    manager = nvidia(
        inventory=str(inventory),
        host_root=str(tmp_path / "host"),
        mps_control=str(control),
        mps_default_active_thread_percentage=25,
        mps_default_pinned_mem_limit=10000,
    )
    node = on_node(manager, "n")
    pod = {"metadata": {"name": "p", "uid": "u", "annotations": {"nvidia.com/vgpu-mode": "mps"}}}
    node.prepare([Grant("NVIDIA-n-0", "NVIDIA", 2000, 20)], pod, {"name": "main"})
    node.prepare([Grant("NVIDIA-n-1", "NVIDIA", 2000, 20)], pod, {"name": "second"})
    log = calls(tmp_path)
    assert len([c for c in log if c.startswith("start")]) == 1
    assert [c for c in log if c.startswith("cmd set")] == [
        "cmd set_default_active_thread_percentage 25",
        "cmd set_default_device_pinned_mem_limit 0 10000M",
        "cmd set_default_device_pinned_mem_limit 1 10000M",
    ]


def test_a_simulated_node_starts_no_daemon(control, nvidia, on_node, tmp_path):
    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(
        yaml.safe_dump({"nodes": [{"name": "n", "devices": [{"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 40960}]}]})
    )
    manager = nvidia(
        inventory=str(inventory), host_root=str(tmp_path / "host"), mps_control=str(control), mps_default_pinned_mem_limit=10000
    )
    pod = {"metadata": {"name": "p", "uid": "u", "annotations": {"nvidia.com/vgpu-mode": "mps"}}}
    on_node(manager, "n", simulated=True).prepare([Grant("NVIDIA-n-0", "NVIDIA", 2000, 20)], pod, {"name": "main"})
    assert calls(tmp_path) == []
