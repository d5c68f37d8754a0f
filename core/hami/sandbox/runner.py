"""Running a pod list through a sandbox: progress as it goes, and a partial report when a component fails.

A sandbox component that stops answering (the API server, the extender, an agent) used to end the
run with a traceback and nothing on stdout. Here a pod whose submission raises is reported as not
run with the error; after a few failures in a row the rest are reported as not run too (the
component is down, each would only time out), so the caller always has a document to print.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from hami.errors import HamiError
from hami.sandbox.outcome import PodOutcome

log = logging.getLogger(__name__)

GIVE_UP_AFTER = 3
"""Consecutive failed submissions after which the sandbox is considered broken."""

Progress = Callable[[int, int, float], None]
"""``(pods done, pods in all, seconds since the first)``."""


@attrs.frozen
class RunResult:
    outcomes: tuple[PodOutcome, ...]
    not_run: tuple[Mapping[str, str], ...] = ()
    """``{namespace, name, reason}`` of each pod that has no outcome: why it was not (fully) submitted."""
    error: str = ""
    """The first component failure, '' when none."""

    @property
    def ok(self) -> bool:
        return not self.error and all(o.as_expected for o in self.outcomes)


def describe_failure(exc: BaseException) -> str:
    """One line naming what failed: our errors say it themselves, others get their type."""
    if isinstance(exc, HamiError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}" if text else type(exc).__name__


def pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or meta.get("generateName") or "")


def not_run(pods: Sequence[Mapping[str, Any]], reason: str) -> tuple[dict[str, str], ...]:
    return tuple({"namespace": ns, "name": name, "reason": reason} for ns, name in map(pod_key, pods))


def run_pods(
    submit: Callable[[Mapping[str, Any]], PodOutcome],
    pods: Sequence[Mapping[str, Any]],
    progress: Progress | None = None,
    *,
    every: float = 1.0,
) -> RunResult:
    """Submit ``pods`` in order; ``progress`` is called at most every ``every`` seconds and once at the end."""
    outcomes: list[PodOutcome] = []
    failed: list[dict[str, str]] = []
    error = ""
    streak = 0
    started = last = time.monotonic()
    for position, pod in enumerate(pods):
        if streak >= GIVE_UP_AFTER:
            failed.extend(not_run(pods[position:], f"not submitted: the sandbox stopped after {error}"))
            break
        try:
            outcomes.append(submit(pod))
            streak = 0
        except Exception as exc:  # a component failed: report the pod, keep what was placed
            log.debug("submitting pod %s/%s failed", *pod_key(pod), exc_info=True)
            reason = describe_failure(exc)
            error = error or f"pod {'/'.join(pod_key(pod))}: {reason}"
            namespace, name = pod_key(pod)
            failed.append({"namespace": namespace, "name": name, "reason": f"submission failed: {reason}"})
            streak += 1
        now = time.monotonic()
        if progress is not None and now - last >= every:
            progress(position + 1, len(pods), now - started)
            last = now
    if progress is not None:
        progress(len(outcomes) + len(failed), len(pods), time.monotonic() - started)
    return RunResult(tuple(outcomes), tuple(failed), error)
