"""The node agent's usage sampler: asks every backend what its devices and the containers holding
them really use (``hami_sample_usage``) every ``interval`` seconds and keeps the last sample.

``/metrics`` scrapes, ``hami top`` and the dashboard read only this cached sample, so a scrape never
calls a vendor tool or parses a file (HAMi's vGPU monitor reads the shared regions on each scrape).
The exception is a container set that changed since the last sample (a pod started or left): the
next reader samples at once, at most once per ``min_gap`` seconds, so a new pod shows up without
waiting an interval. The sampler's round is also the priority-feedback round of backends that have
one (HAMi's ``feedback.go`` ticks every 5 s, the default interval here).

A backend that fails is logged and left out of the sample; what a backend could not read (a
truncated or foreign file) is logged once per reason, not on every round.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from hami.errors import AnnotationError
from hami.kube import release
from hami.periodic import Periodic
from hami.plugin.model import ContainerShare, UsageReport, frozen_map
from hami.wire.allocation import ordered_containers, read_allocated

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0
USAGE_ANNOTATION = "hami.io/node-usage"
"""Node annotation with a compact summary of the last sample, for ``hami top`` (which reads nodes,
not every agent): ``{"t": unix seconds, "devices": {id: [bytes used, utilization %]}, "shares":
{"<namespace>/<pod>/<container>": {id: [bytes used, utilization %, throttled 0/1]}}}``; written at
most every ``publish_interval`` (30 s, the registration period), so it costs one PATCH per node then."""
PUBLISH_INTERVAL = 30.0
_TERMINATED = ("Succeeded", "Failed")
ShareKey = tuple[str, str]  # (pod uid, container name)


def container_shares(pods: Iterable[Mapping[str, Any]], kinds: Mapping[str, Any]) -> dict[str, list[ContainerShare]]:
    """Vendor key → the live containers holding its devices, from the pods' allocation annotations."""
    out: dict[str, list[ContainerShare]] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in _TERMINATED:
            continue
        meta = pod.get("metadata") or {}
        try:
            allocated = read_allocated(meta.get("annotations") or {}, kinds)
        except AnnotationError:
            continue  # the scheduler's cache and the metrics collector report these
        if not meta.get("uid") or not allocated:
            continue
        containers = ordered_containers(pod)
        for vendor, per_container in allocated.items():
            for index, grants in enumerate(per_container):
                if not grants or index >= len(containers):
                    continue
                container = containers[index]
                limits = ((container.get("resources") or {}).get("limits")) or {}
                out.setdefault(vendor, []).append(
                    ContainerShare(
                        namespace=meta.get("namespace") or "default",
                        pod=meta.get("name") or "?",
                        pod_uid=str(meta["uid"]),
                        container=container.get("name") or f"#{index}",
                        grants=grants,
                        limits=limits,
                    )
                )
    return out


@attrs.frozen
class UsageSnapshot:
    """One round: every backend's report, when it was taken, and which containers it covered."""

    taken_at: float = 0.0
    """``time.monotonic()`` of the round (0: never sampled)."""
    reports: Mapping[str, UsageReport] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    covered: frozenset[ShareKey] = frozenset()
    duration: float = 0.0

    def shares(self) -> list[Any]:
        return [s for report in self.reports.values() for s in report.shares]

    def devices(self) -> list[Any]:
        return [d for report in self.reports.values() for d in report.devices]


class UsageSampler:
    """Samples on its own thread (``start``) and on demand when the container set changed."""

    def __init__(
        self,
        agent: Any,
        pods: Callable[[], Iterable[Mapping[str, Any]]],
        *,
        interval: float = DEFAULT_INTERVAL,
        min_gap: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        publish_interval: float = PUBLISH_INTERVAL,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.pods = pods
        self.interval = interval
        self.min_gap = min_gap
        self.clock = clock
        self.wall = wall
        self.publish_interval = publish_interval
        self._published = float("-inf")
        self._published_covered: frozenset[ShareKey] = frozenset()
        self.snapshot = UsageSnapshot()
        self.rounds = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self._loop: Periodic | None = None

    def sample(self, pods: Iterable[Mapping[str, Any]] | None = None) -> UsageSnapshot:
        """One round now (``pods``: the pods already listed, else listed here)."""
        with self._lock:
            started = self.clock()
            by_vendor = container_shares(self.pods() if pods is None else pods, self.agent.manager.kinds)
            discovery = self.agent.discovery
            physical: dict[str, list[Any]] = {}
            vendors: dict[str, set[str]] = {}
            for device in discovery.devices:
                physical.setdefault(device.backend, []).append(device.physical)
                vendors.setdefault(device.backend, set()).add(device.vendor)
            reports: dict[str, UsageReport] = {}
            covered: set[ShareKey] = set()
            for backend, devices in sorted(physical.items()):
                ids = {d.id for d in devices}
                shares = []
                for vendor in sorted(vendors[backend]):
                    for share in by_vendor.get(vendor, ()):
                        mine = tuple(g for g in share.grants if g.id in ids)
                        if mine:
                            shares.append(attrs.evolve(share, grants=mine))
                covered.update((s.pod_uid, s.container) for s in shares)
                context = discovery.contexts.get(backend) or self.agent.node
                try:
                    report = self.agent.manager.sample_usage(backend, devices, shares, context)
                except Exception as exc:  # one backend failing leaves the others' figures
                    self.errors += 1
                    log.warning("event=usage_sample_failed backend=%s error=%r", backend, f"{type(exc).__name__}: {exc}")
                    continue
                reports[backend] = report
                for reason in report.skipped:
                    if reason not in self._logged:
                        self._logged.add(reason)
                        log.info("event=usage_skip backend=%s reason=%r", backend, reason)
            ended = self.clock()
            self.snapshot = UsageSnapshot(taken_at=ended, reports=reports, covered=frozenset(covered), duration=ended - started)
            self.rounds += 1
            if len(self._logged) > 4096:  # reasons of long-gone containers
                self._logged.clear()
            return self.snapshot

    def summary(self, snap: UsageSnapshot | None = None) -> str:
        """The :data:`USAGE_ANNOTATION` value of ``snap`` (default: the last sample)."""
        snap = snap or self.snapshot
        devices: dict[str, list[float | None]] = {}
        shares: dict[str, dict[str, list[float | int | None]]] = {}
        for load in snap.devices():
            pct = round(load.utilization * 100, 1) if load.utilization is not None else None
            devices[load.device_id] = [load.memory_used, pct]
        for share in snap.shares():
            pct = round(share.utilization * 100, 1) if share.utilization is not None else None
            shares.setdefault(f"{share.namespace}/{share.pod}/{share.container}", {})[share.device_id] = [
                share.memory_used,
                pct,
                int(share.throttled),
            ]
        return json.dumps({"t": int(self.wall()), "devices": devices, "shares": shares}, separators=(",", ":"), sort_keys=True)

    def publish(self) -> bool:
        """Write the summary on the Node when ``publish_interval`` has passed; False when not due or
        the API server refused (logged; the next round tries again)."""
        core_v1 = getattr(self.agent, "core_v1", None)
        since = self.clock() - self._published
        changed = self.snapshot.covered != self._published_covered and since >= self.interval  # a pod came or went
        if core_v1 is None or self.publish_interval <= 0 or (since < self.publish_interval and not changed):
            return False
        try:
            release(  # read to its end: an unread answer keeps its connection out of the pool
                core_v1.patch_node(
                    self.agent.node,
                    {"metadata": {"annotations": {USAGE_ANNOTATION: self.summary()}}},
                    _preload_content=False,
                    _request_timeout=5.0,
                    _content_type="application/merge-patch+json",
                )
            )
        except Exception as exc:
            log.warning("event=usage_publish_failed node=%s error=%r", self.agent.node, f"{type(exc).__name__}: {exc}")
            return False
        self._published = self.clock()
        self._published_covered = self.snapshot.covered
        return True

    def _round(self) -> None:
        self.sample()
        self.publish()

    def latest(self, live: Iterable[ShareKey] | None = None, pods: Iterable[Mapping[str, Any]] | None = None) -> UsageSnapshot:
        """The cached sample; sampled now if none is recent or ``live`` (the containers a reader sees
        now) is not what the sample covered (rate-limited by ``min_gap``)."""
        snap = self.snapshot
        age = self.clock() - snap.taken_at
        stale = snap.taken_at == 0.0 or age > 2 * self.interval
        changed = live is not None and frozenset(live) != snap.covered
        if (stale or changed) and age >= self.min_gap:
            try:
                return self.sample(pods)
            except Exception as exc:
                self.errors += 1
                log.warning("event=usage_sample_failed error=%r", f"{type(exc).__name__}: {exc}")
        return self.snapshot

    def start(self) -> UsageSampler:
        self._loop = Periodic("hami-usage", self.interval, self._round, run_first=True).start()
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
