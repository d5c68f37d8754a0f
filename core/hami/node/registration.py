"""The node's device annotations and handshake: how the scheduler learns what this node has.

Every vendor kind with devices gets its HAMi node annotation (JSON, or HAMi's legacy CSV where the kind asks for it) and a
handshake ``Reported_<time>``; a kind that had devices and lost them is written as an empty list
rather than left stale. All annotations go in one merge patch, so the scheduler never sees half an
update. Failures are retried with :class:`Backoff` by the agent's loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs
from kubernetes.client import CoreV1Api

from hami.kube import release
from hami.node.devices import Discovery
from hami.plugin.model import DeviceKind, SchedulableDevice
from hami.wire.annotations import HANDSHAKE_TIME_LAYOUT
from hami.wire.codec import encode_node_devices
from hami.wire.isolation import ISOLATION_ANNOTATION, encode_isolation

log = logging.getLogger(__name__)

REPORTED = "Reported"


class Backoff:
    """Exponential retry delays: ``initial``, doubled after each failure up to ``maximum``."""

    def __init__(self, initial: float = 1.0, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def handshake_value(now: float) -> str:
    """``Reported_2006-01-02 15:04:05`` in local time, as HAMi's device plugin writes it."""
    return f"{REPORTED}_{time.strftime(HANDSHAKE_TIME_LAYOUT, time.localtime(now))}"


def node_annotations(
    kinds: Mapping[str, DeviceKind],
    discovery: Discovery,
    health: Mapping[str, bool],
    existing: Mapping[str, str],
    now: float,
) -> dict[str, str]:
    """The annotations to write: the backends' extra annotations (topology) and, per kind with
    devices (or with a stale list on the node), the encoded device list with current health and the
    handshake."""
    by_vendor = discovery.by_vendor()
    out: dict[str, str] = dict(discovery.annotations)
    for vendor, kind in sorted(kinds.items()):
        devices = by_vendor.get(vendor, [])
        keys = kind.annotations
        if not devices and keys.node_register not in existing:
            continue
        schedulable: list[SchedulableDevice] = [_with_health(d.schedulable, health.get(d.id, d.schedulable.healthy)) for d in devices]
        out[keys.node_register] = encode_node_devices(schedulable, kind.node_encoding)
        out[keys.handshake] = handshake_value(now)
    if discovery.isolation or ISOLATION_ANNOTATION in existing:
        out[ISOLATION_ANNOTATION] = encode_isolation(discovery.isolation)
    return out


def _with_health(device: SchedulableDevice, healthy: bool) -> SchedulableDevice:
    if device.healthy == healthy:
        return device
    return attrs.evolve(device, healthy=healthy)


class NodeRegistrar:
    """Writes :func:`node_annotations` onto the Node through the API server."""

    def __init__(
        self,
        core_v1: CoreV1Api,
        node: str,
        kinds: Mapping[str, DeviceKind],
        *,
        request_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core_v1 = core_v1
        self.node = node
        self.kinds = kinds
        self.request_timeout = request_timeout
        self.clock = clock

    def write(self, discovery: Discovery, health: Mapping[str, bool]) -> dict[str, str]:
        """Read the node's annotations, write ours; raises the client's exceptions (the caller retries)."""
        resp = self.core_v1.read_node(self.node, _preload_content=False, _request_timeout=self.request_timeout)
        existing = (json.loads(cast(Any, resp).data).get("metadata") or {}).get("annotations") or {}
        annotations = node_annotations(self.kinds, discovery, health, existing, self.clock())
        if annotations:
            release(  # read to its end: an unread answer keeps its connection out of the pool
                self.core_v1.patch_node(
                    self.node,
                    {"metadata": {"annotations": annotations}},
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                    _content_type="application/merge-patch+json",
                )
            )
        log.info(
            "event=node_registered node=%s annotations=%s devices=%d", self.node, ",".join(sorted(annotations)), len(discovery.devices)
        )
        after = annotations.get(ISOLATION_ANNOTATION)
        if after is not None and after != existing.get(ISOLATION_ANNOTATION):
            self.isolation_event(after)
        return annotations

    def isolation_event(self, text: str) -> None:
        """A Node event when the isolation state changes: Warning ``IsolationMissing`` naming what is
        missing, Normal ``IsolationReady`` once everything is enforced (a failed write is logged only)."""
        body_json = json.loads(text)
        missing = body_json.get("status") == "False"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        body = {
            "metadata": {"generateName": f"{self.node}.", "namespace": "default"},
            "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node},
            "reason": body_json.get("reason", ""),
            "message": str(body_json.get("message", ""))[:1024],
            "type": "Warning" if missing else "Normal",
            "source": {"component": "hami-agent", "host": self.node},
            "reportingComponent": "hami-agent",
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        if missing:
            log.warning("event=isolation_missing node=%s message=%r", self.node, body["message"])
        try:
            release(
                self.core_v1.create_namespaced_event(
                    "default", cast(Any, body), _preload_content=False, _request_timeout=self.request_timeout
                )
            )
        except Exception as exc:
            log.warning("event=isolation_event_failed node=%s error=%r", self.node, f"{type(exc).__name__}: {exc}")
