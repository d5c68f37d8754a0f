"""What NVIDIA GPUs and the containers sharing them use (``hami_sample_usage``): HAMi's vGPU monitor.

Host figures come from NVML, as upstream ``cmd/vGPUmonitor/metrics.go`` reads them (memory used,
utilization rates) plus power and temperature; per container, HAMi-core's shared region
(:mod:`hami_nvidia.region`) in ``<host_root><hook_path>/vgpu/containers/<pod uid>_<container>/``, the
directory the container's ``/usr/local/vgpu`` is mounted from (:func:`hami_nvidia.edits.cache_dir`).

A region that cannot be read (truncated, foreign, unknown version) or belongs to no live container
(stale: its pod is gone) is a skip named in the report, never an error; the mapping of a readable one
is kept between samples, as upstream's ContainerLister keeps it, and dropped when its container goes.
On a simulated node the figures are made up from the grants (``hami.sdk.simulated_usage``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hami.sdk import ContainerShare, DeviceLoad, PhysicalDevice, ShareLoad, UsageReport
from hami_nvidia import nvml as nvml_discovery
from hami_nvidia.edits import cache_dir, host_path
from hami_nvidia.feedback import observe
from hami_nvidia.region import Region, RegionError, open_region

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class UsageMonitor:
    """Per backend instance: NVML initialised once, regions mapped once per container."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._nvml: Any = None
        self._nvml_state = "unknown"  # "ok" | "absent"
        self.regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ host figures (NVML)

    def _driver(self) -> Any | None:
        if self._nvml_state == "absent":
            return None
        if self._nvml is None:
            nvml = nvml_discovery.load_pynvml()
            if nvml is None:
                self._nvml_state = "absent"
                log.info("event=usage_nvml_unavailable reason=%r", "nvidia-ml-py is not installed")
                return None
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                self._nvml_state = "absent"
                log.info("event=usage_nvml_unavailable reason=%r", f"{type(exc).__name__}: {exc}")
                return None
            self._nvml, self._nvml_state = nvml, "ok"
        return self._nvml

    def host_loads(self, devices: Sequence[PhysicalDevice], skipped: list[str]) -> list[DeviceLoad]:
        nvml = self._driver()
        if nvml is None:
            return []
        out = []
        for device in devices:
            try:
                handle = nvml.nvmlDeviceGetHandleByUUID(device.id)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:
                skipped.append(f"{device.id}: NVML {type(exc).__name__}: {exc}")
                continue

            def optional(call: Callable[..., Any], *args: Any, handle: Any = handle) -> Any:
                try:
                    return call(handle, *args)
                except nvml.NVMLError:
                    return None

            rates = optional(nvml.nvmlDeviceGetUtilizationRates)
            power = optional(nvml.nvmlDeviceGetPowerUsage)
            temperature = optional(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
            out.append(
                DeviceLoad(
                    device.id,
                    memory_used=int(memory.used),
                    memory_total=int(memory.total),
                    utilization=min(rates.gpu, 100) / 100 if rates is not None else None,
                    memory_utilization=min(rates.memory, 100) / 100 if rates is not None else None,
                    power_watts=power / 1000 if power is not None else None,
                    temperature_celsius=float(temperature) if temperature is not None else None,
                )
            )
        return out

    # ------------------------------------------------------------ per container (HAMi-core's region)

    def region_for(self, share: ContainerShare, config: Mapping[str, Any]) -> Region:
        """The mapped region of ``share`` (cached while its file stays the same), or RegionError."""
        directory = host_path(config, cache_dir(config, (share.pod_uid, share.container)))
        files = sorted(p for p in directory.glob("*.cache") if p.is_file()) if directory.is_dir() else []
        if not files:
            raise RegionError(f"no shared region in {directory} yet (HAMi-core writes it when CUDA starts)")
        if len(files) > 1:
            raise RegionError(f"{len(files)} region files in {directory}: {', '.join(p.name for p in files)}")
        path = files[0]
        key = str(directory)
        cached = self.regions.get(key)
        if cached is not None:
            try:
                stat = path.stat()
                if cached.path == path and cached.identity == (stat.st_ino, stat.st_size):
                    return cached
            except OSError:
                pass
            cached.close()
            del self.regions[key]
        region = open_region(path)
        self.regions[key] = region
        return region

    def forget(self, live: set[str]) -> None:
        for key in [k for k in self.regions if k not in live]:
            self.regions.pop(key).close()

    def share_loads(
        self, containers: Sequence[ContainerShare], config: Mapping[str, Any], skipped: list[str], *, feedback: bool = True
    ) -> list[ShareLoad]:
        """Each container's figures from its region; one feedback round first (so ``throttled`` is
        what HAMi-core sees from now on)."""
        now = self.clock()
        mapped: list[tuple[ContainerShare, Region]] = []
        live: set[str] = set()
        for share in containers:
            live.add(str(region_dir(config, share.pod_uid, share.container)))
            try:
                mapped.append((share, self.region_for(share, config)))
            except RegionError as exc:
                skipped.append(f"{share.namespace}/{share.pod}[{share.container}]: {exc}")
        self.forget(live)
        if feedback:
            observe([region for _, region in mapped])
        out: list[ShareLoad] = []
        for share, region in mapped:
            where = f"{share.namespace}/{share.pod}[{share.container}]"
            granted = {g.id for g in share.grants}
            last = region.last_kernel_time
            for device in region.devices():
                if device.uuid not in granted:
                    skipped.append(f"{where}: region device {device.index} is {device.uuid!r}, not one of its grants")
                    continue
                out.append(
                    ShareLoad(
                        device.uuid,
                        share.namespace,
                        share.pod,
                        share.container,
                        vdevice_index=device.index,
                        memory_used=device.used,
                        memory_limit=device.limit or None,
                        utilization=min(device.sm_util, 100) / 100,
                        last_kernel_seconds=max(now - last, 0.0) if last > 0 else None,
                        memory_context=device.context,
                        memory_module=device.module,
                        memory_buffer=device.buffer,
                        throttled=region.recent_kernel < 0,
                    )
                )
        return out

    def stale_regions(self, containers: Sequence[ContainerShare], config: Mapping[str, Any]) -> list[str]:
        """Region directories of containers the agent no longer has (upstream removes them after a
        grace period; the release hook removes ours): named, never read."""
        root = host_path(config, cache_dir(config, ("x", "x"))).parent
        if not root.is_dir():
            return []
        live = {f"{c.pod_uid}_{c.container}" for c in containers}
        return [f"{p.name}: stale, no live container" for p in sorted(root.iterdir()) if p.is_dir() and p.name not in live]

    def sample(self, devices: Sequence[PhysicalDevice], containers: Sequence[ContainerShare], config: Mapping[str, Any]) -> UsageReport:
        skipped: list[str] = []
        with self._lock:
            loads = self.host_loads(devices, skipped)
            shares = self.share_loads(containers, config, skipped, feedback=bool(config.get("priority_feedback", True)))
            skipped += self.stale_regions(containers, config)
        for reason in skipped:
            log.debug("event=usage_skip reason=%r", reason)
        return UsageReport(devices=loads, shares=shares, skipped=skipped)

    def close(self) -> None:
        with self._lock:
            self.forget(set())
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except self._nvml.NVMLError:
                    pass
                self._nvml, self._nvml_state = None, "unknown"


def region_dir(config: Mapping[str, Any], pod_uid: str, container: str) -> Path:
    """Where the agent finds a container's region on the host (tests write theirs there)."""
    return host_path(config, cache_dir(config, (pod_uid, container)))
