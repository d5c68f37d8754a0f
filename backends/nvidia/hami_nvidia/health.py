"""GPU health from NVML's XID critical-error events, watched by a background thread.

The thread starts on the first health check of NVML-discovered GPUs (never at import, never for
inventory devices). Application XIDs (13, 31, 43, 45, 68, 109 by default) are logged and ignored.
Unlike NVIDIA's own plugin, a GPU recovers: once no critical XID has arrived for
``health_recovery_seconds`` and the GPU answers NVML again, it is reported healthy.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from hami.sdk import BackendError, HealthEvent
from hami_nvidia.nvml import load_pynvml

log = logging.getLogger(__name__)

ALL_DEVICES = "*"
"""The device id of an event NVML did not attribute to one GPU: it applies to all of them."""


@attrs.frozen
class Xid:
    device_id: str
    xid: int


class EventSource(Protocol):
    def wait(self, timeout_ms: int) -> Xid | None: ...

    def close(self) -> None: ...


def _address(handle: Any) -> int | None:
    return ctypes.cast(handle, ctypes.c_void_p).value


class NvmlEventSource:
    """XID critical errors of ``device_ids`` from an NVML event set."""

    def __init__(self, device_ids: Iterable[str]) -> None:
        nvml = load_pynvml()
        if nvml is None:
            raise BackendError("cannot watch GPU health: nvidia-ml-py is not installed")
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise BackendError(f"cannot watch GPU health: NVML initialisation failed: {exc}") from None
        self.event_set = nvml.nvmlEventSetCreate()
        self.handles: dict[int | None, str] = {}
        for device_id in device_ids:
            handle = nvml.nvmlDeviceGetHandleByUUID(device_id)
            try:
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self.event_set)
            except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound) as exc:
                log.warning("event=xid_watch_unsupported device=%s reason=%r", device_id, str(exc))
                continue
            self.handles[_address(handle)] = device_id

    def wait(self, timeout_ms: int) -> Xid | None:
        nvml = self.nvml
        try:
            data = nvml.nvmlEventSetWait_v2(self.event_set, timeout_ms)
        except nvml.NVMLError_Timeout:
            return None
        if data.eventType != nvml.nvmlEventTypeXidCriticalError:
            return None
        return Xid(self.handles.get(_address(data.device), ALL_DEVICES), int(data.eventData))

    def close(self) -> None:
        try:
            self.nvml.nvmlEventSetFree(self.event_set)
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def nvml_probe(device_id: str) -> bool:
    """Whether the GPU answers NVML (a memory query) right now."""
    nvml = load_pynvml()
    if nvml is None:
        return False
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return False
    try:
        nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByUUID(device_id))
        return True
    except nvml.NVMLError:
        return False
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


@attrs.frozen
class _Fault:
    reason: str
    since: float


class XidWatcher:
    """Turns XID events into health changes; the event source runs on its own daemon thread."""

    def __init__(
        self,
        source_factory: Callable[[Sequence[str]], EventSource],
        *,
        ignored: frozenset[int],
        recovery_seconds: float,
        probe: Callable[[str], bool],
        wait_ms: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source_factory = source_factory
        self.ignored = ignored
        self.recovery_seconds = recovery_seconds
        self.probe = probe
        self.wait_ms = wait_ms
        self.clock = clock
        self.error: str | None = None
        self._lock = threading.Lock()
        self._faults: dict[str, _Fault] = {}
        self._reported: dict[str, bool] = {}
        self._ids: tuple[str, ...] = ()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def ensure_started(self, device_ids: Sequence[str]) -> None:
        """Watch exactly these GPUs; (re)starts the thread when the set changed or it died."""
        ids = tuple(sorted(device_ids))
        if self._thread is not None and self._thread.is_alive() and ids == self._ids:
            return
        self.stop()
        self._ids, self.error = ids, None
        self._stop = threading.Event()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ids, self._stop, ready), name="hami-nvidia-xid", daemon=True)
        self._thread.start()
        ready.wait(5)

    def _run(self, ids: Sequence[str], stop: threading.Event, ready: threading.Event) -> None:
        try:
            source = self.source_factory(ids)
        except Exception as exc:  # the agent keeps running; the failure shows in the log and .error
            self.error = str(exc)
            log.error("event=xid_watch_failed devices=%d error=%r", len(ids), self.error)
            ready.set()
            return
        ready.set()
        log.info("event=xid_watch_started devices=%d ignored=%s", len(ids), ",".join(map(str, sorted(self.ignored))))
        try:
            while not stop.is_set():
                event = source.wait(self.wait_ms)
                if event is not None:
                    self.record(event)
        except Exception as exc:
            self.error = str(exc)
            log.error("event=xid_watch_failed devices=%d error=%r", len(ids), self.error)
        finally:
            source.close()

    def record(self, event: Xid) -> None:
        if event.xid in self.ignored:
            log.info("event=xid_ignored device=%s xid=%d", event.device_id, event.xid)
            return
        targets = self._ids if event.device_id == ALL_DEVICES else (event.device_id,)
        now = self.clock()
        with self._lock:
            for device_id in targets:
                self._faults[device_id] = _Fault(f"XID {event.xid} (critical error)", now)
        log.warning("event=xid_critical device=%s xid=%d", event.device_id, event.xid)

    def changes(self, device_ids: Iterable[str]) -> list[HealthEvent]:
        """Health changes of these GPUs since the last call (recovering those quiet long enough)."""
        now = self.clock()
        events = []
        for device_id in device_ids:
            with self._lock:
                fault = self._faults.get(device_id)
            if fault is not None and now - fault.since >= self.recovery_seconds and self.probe(device_id):
                with self._lock:
                    if self._faults.get(device_id) is fault:
                        del self._faults[device_id]
                        fault = None
            healthy = fault is None
            if self._reported.get(device_id, True) != healthy:
                self._reported[device_id] = healthy
                events.append(HealthEvent(device_id, healthy, "recovered: no critical XID and NVML answers" if healthy else fault.reason))  # type: ignore[union-attr]
        return events

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
