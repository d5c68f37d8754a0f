"""Scheduler settings; defaults are HAMi's (node binpack, device spread, 5 minute node lock)."""

from __future__ import annotations

from datetime import timedelta

import attrs

DEFAULT_SCHEDULER_NAME = "hami-scheduler"


@attrs.frozen
class SchedulerConfig:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    node_policy: str = "binpack"
    device_policy: str = "spread"
    lock_expiry: timedelta = timedelta(minutes=5)
    bind_lock_timeout: float = 0.0
    """Seconds bind waits for a busy node lock before failing (kube-scheduler retries the pod)."""
    allocation_write_wait: float = 30.0
    """Seconds bind waits for the filter's allocation write before failing; a write that lands later
    is refused by the API server (it is conditional, docs/scheduler.md "Bind")."""
    events: bool = True
    """Write FilteringSucceed / FilteringFailed events on pods."""
