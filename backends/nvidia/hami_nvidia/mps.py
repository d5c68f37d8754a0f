"""The node's MPS control daemon: start it, give it default limits, check that it answers.

MPS clients can only lower the limits the daemon gives them and can drop their own environment,
so the daemon-side defaults are what hold for untrusted tenants. The daemon is driven through its
own CLI (``nvidia-cuda-mps-control -d`` to start; commands on stdin otherwise), which is also what
makes it testable against a fake executable.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import attrs

from hami.sdk import BackendError

log = logging.getLogger(__name__)


@attrs.frozen
class MpsPaths:
    """Where the daemon's pipes, logs and shared memory live on the host (one root, NVIDIA's layout)."""

    root: str = "/run/nvidia/mps"

    @property
    def pipe(self) -> str:
        return f"{self.root.rstrip('/')}/pipe"

    @property
    def log(self) -> str:
        return f"{self.root.rstrip('/')}/log"

    @property
    def shm(self) -> str:
        return f"{self.root.rstrip('/')}/shm"


class MpsDaemon:
    """Controls one ``nvidia-cuda-mps-control`` daemon; ``host_root`` is where the agent sees the host."""

    def __init__(self, control: str, paths: MpsPaths, *, host_root: str = "/", timeout: float = 10.0) -> None:
        self.control = control
        self.paths = paths
        self.host_root = host_root
        self.timeout = timeout
        self._lock = threading.Lock()

    def _host(self, path: str) -> str:
        return str(Path(self.host_root, path.lstrip("/")))

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": self._host(self.paths.pipe), "CUDA_MPS_LOG_DIRECTORY": self._host(self.paths.log)}

    def _run(self, args: list[str], commands: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.control, *args], input=commands, env=self._env(), capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError:
            raise BackendError(
                f"MPS control executable {self.control!r} not found; install the CUDA MPS tools or set mps_control"
            ) from None
        except subprocess.TimeoutExpired:
            raise BackendError(f"{self.control} did not answer within {self.timeout:g} s") from None

    def command(self, *lines: str) -> str:
        """Send commands to the running daemon; its answer, or a BackendError saying why not."""
        result = self._run([], "".join(f"{line}\n" for line in lines))
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
            raise BackendError(f"MPS control daemon refused {list(lines)}: {why}")
        return result.stdout

    def healthy(self) -> bool:
        """Whether the daemon is up and answering (``get_server_list``)."""
        try:
            self.command("get_server_list")
        except BackendError:
            return False
        return True

    def start(self) -> bool:
        """Start the daemon unless it already answers; True when this call started it."""
        with self._lock:
            if self.healthy():
                return False
            for path in (self.paths.pipe, self.paths.log, self.paths.shm):
                Path(self._host(path)).mkdir(parents=True, exist_ok=True)
            result = self._run(["-d"])
            if result.returncode != 0:
                why = (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
                raise BackendError(f"could not start the MPS control daemon ({self.control} -d): {why}")
            if not self.healthy():
                raise BackendError(f"the MPS control daemon started by {self.control} -d does not answer on {self._host(self.paths.pipe)}")
            log.info("event=mps_daemon_started control=%s pipe=%s", self.control, self.paths.pipe)
            return True

    def set_default_limits(self, *, active_thread_percentage: int = 0, pinned_memory: Mapping[int, int] | None = None) -> None:
        """Daemon-wide defaults for new clients: a compute share (%) and pinned MiB per GPU index."""
        lines = []
        if active_thread_percentage:
            if not 0 < active_thread_percentage <= 100:
                raise BackendError(f"MPS default active thread percentage {active_thread_percentage!r}: must be 1..100")
            lines.append(f"set_default_active_thread_percentage {active_thread_percentage}")
        for index, mib in sorted((pinned_memory or {}).items()):
            lines.append(f"set_default_device_pinned_mem_limit {index} {mib}M")
        if lines:
            self.command(*lines)
            log.info("event=mps_default_limits commands=%r", lines)

    def ensure(self, *, active_thread_percentage: int = 0, pinned_memory: Mapping[int, int] | None = None) -> None:
        """Running, with the defaults set when this call had to start it."""
        if self.start():
            self.set_default_limits(active_thread_percentage=active_thread_percentage, pinned_memory=pinned_memory)

    def stop(self) -> None:
        if self.healthy():
            self.command("quit")
            log.info("event=mps_daemon_stopped control=%s", self.control)
