"""The node's isolation annotation: which share modes are enforced on this node, and why not.

The agent writes ``hami.io/node-isolation`` beside the device lists at every registration, shaped
like a node condition so an operator reads it with ``kubectl get node -o yaml``::

    {"status": "False", "reason": "IsolationMissing",
     "message": "ACME partition: /usr/lib/libacme-limit.so is missing (whole-only)",
     "modes": [{"vendor": "ACME", "mode": "partition", "state": "whole-only",
                "mechanism": "limit library", "reason": "/usr/lib/libacme-limit.so is missing"}]}

``state`` is ``enforced`` (the mechanism is there), ``advisory`` (it is missing, and the backend's
config sets ``advisory_limits: true``: shares are offered, nothing enforces them) or ``whole-only``
(it is missing: the device is offered with one slot and the scheduler refuses partial requests on it,
naming this node and the reason). ``devices`` narrows an entry to some device ids.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from hami.errors import AnnotationError
from hami.plugin.model import SchedulableDevice, frozen_tuple

ISOLATION_ANNOTATION = "hami.io/node-isolation"
ENFORCED, ADVISORY, WHOLE_ONLY, UNVERIFIED = "enforced", "advisory", "whole-only", "unverified"
STATES = (ENFORCED, ADVISORY, WHOLE_ONLY)
MISSING_REASON = "IsolationMissing"
"""The condition reason and the scheduler's per-device reason for a partial request on a whole-only device."""
MAX_TEXT = 512


@attrs.frozen
class ModeState:
    """One entry of the annotation: a vendor's mode (``""``: all its modes) on this node."""

    vendor: str
    mode: str
    state: str
    mechanism: str = ""
    reason: str = ""
    devices: tuple[str, ...] = attrs.field(default=(), converter=frozen_tuple)

    def covers(self, device: SchedulableDevice) -> bool:
        return device.vendor == self.vendor and self.mode in ("", device.mode) and (not self.devices or device.id in self.devices)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vendor": self.vendor, "mode": self.mode, "state": self.state}
        if self.mechanism:
            out["mechanism"] = self.mechanism
        if self.reason:
            out["reason"] = self.reason
        if self.devices:
            out["devices"] = list(self.devices)
        return out


def state_for(device: SchedulableDevice, modes: Sequence[ModeState]) -> ModeState | None:
    """The entry that decides ``device``: one naming the device first, then its exact mode, then the
    vendor's every-mode entry; None when nothing was reported for it (unverified)."""
    covering = [m for m in modes if m.covers(device)]
    covering.sort(key=lambda m: (not m.devices, m.mode == ""))
    return covering[0] if covering else None


def encode_isolation(modes: Sequence[ModeState]) -> str:
    """The annotation value (stable: the same states give the same text, so writes can be compared)."""
    missing = [m for m in modes if m.state != ENFORCED]
    message = "; ".join(
        f"{m.vendor} {m.mode or 'all modes'}{' (' + ','.join(m.devices) + ')' if m.devices else ''}: {m.reason} ({m.state})"
        for m in missing
    )
    body = {
        "status": "False" if missing else "True",
        "reason": MISSING_REASON if missing else "IsolationReady",
        "message": message or "every share mode reported is enforced",
        "modes": [m.as_json() for m in sorted(modes, key=lambda m: (m.vendor, m.mode, m.devices))],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _text(entry: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT or (required and not value):
        raise AnnotationError(f"{ISOLATION_ANNOTATION} {where}.{key}={value!r:.80}: must be a string of at most {MAX_TEXT} characters")
    return value


@functools.lru_cache(maxsize=1024)
def decode_isolation(text: str) -> tuple[ModeState, ...]:
    """The entries of an annotation value; an unreadable one raises :class:`AnnotationError` naming
    what is wrong (cached: the scheduler asks for every device it considers)."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise AnnotationError(f"{ISOLATION_ANNOTATION}={text[:80]!r}: not JSON ({exc})") from None
    if not isinstance(body, Mapping) or not isinstance(body.get("modes", []), list):
        raise AnnotationError(f"{ISOLATION_ANNOTATION}={text[:80]!r}: must be an object with a list 'modes'")
    out = []
    for i, entry in enumerate(body.get("modes", [])):
        where = f"modes[{i}]"
        if not isinstance(entry, Mapping):
            raise AnnotationError(f"{ISOLATION_ANNOTATION} {where}={entry!r:.80}: must be an object")
        state = _text(entry, "state", where, required=True)
        if state not in STATES:
            raise AnnotationError(f"{ISOLATION_ANNOTATION} {where}.state={state!r}: must be one of {', '.join(STATES)}")
        devices = entry.get("devices", [])
        if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
            raise AnnotationError(f"{ISOLATION_ANNOTATION} {where}.devices={devices!r:.80}: must be a list of device ids")
        out.append(
            ModeState(
                _text(entry, "vendor", where, required=True),
                _text(entry, "mode", where),
                state,
                _text(entry, "mechanism", where),
                _text(entry, "reason", where),
                tuple(devices),
            )
        )
    return tuple(out)


def device_isolation(annotations: Mapping[str, str], device: SchedulableDevice) -> tuple[str, str]:
    """(state, reason) of ``device`` on the node with these annotations, for displays: ``unverified``
    when nothing was reported about it (or the annotation is unreadable: the reason says so)."""
    try:
        found = state_for(device, decode_isolation(annotations[ISOLATION_ANNOTATION])) if annotations.get(ISOLATION_ANNOTATION) else None
    except AnnotationError as exc:
        return UNVERIFIED, str(exc)
    return (found.state, found.reason) if found is not None else (UNVERIFIED, "")


def whole_only_reason(annotations: Mapping[str, str], device: SchedulableDevice) -> str | None:
    """Why only whole requests may land on ``device`` of the node with these annotations (None: any
    request may); an unreadable annotation counts as missing isolation (fail closed)."""
    text = annotations.get(ISOLATION_ANNOTATION)
    if not text:
        return None
    try:
        modes = decode_isolation(text)
    except AnnotationError as exc:
        return str(exc)
    found = state_for(device, modes)
    if found is None or found.state != WHOLE_ONLY:
        return None
    return found.reason or f"{found.mechanism or 'isolation'} is missing"
