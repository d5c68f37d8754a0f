"""Allocation signatures: the node agent only hands out what the scheduler granted.

At filter time the scheduler signs, with HMAC-SHA256, the pod's UID, the chosen node and every
``…-devices-allocated`` annotation it wrote; the node agent verifies before Allocate. The
``…-devices-to-allocate`` annotations shrink as containers are allocated, so the agent checks that
each remaining entry equals the signed ``allocated`` entry at the same position.

Keys come from a Kubernetes Secret mounted as a directory into both the scheduler and the agent:
file ``key`` is the current key, optional file ``previous-key`` is still accepted for verification
while a rotation rolls out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from hami.errors import HamiError

SCHEME = "hmac-sha256"


class SignatureError(HamiError):
    """An allocation's signature is missing, malformed or does not match."""


def _keys(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)  # a typed ``converter=tuple`` (mypy's attrs plugin cannot solve the generic one)


@attrs.frozen
class SigningKeys:
    current: bytes = attrs.field(repr=False)
    previous: tuple[bytes, ...] = attrs.field(default=(), converter=_keys, repr=False)

    def __attrs_post_init__(self) -> None:
        if len(self.current) < 16:
            raise SignatureError(f"the signing key has {len(self.current)} bytes; at least 16 are needed")

    @classmethod
    def from_directory(cls, path: str | Path) -> SigningKeys:
        """Read ``key`` and optional ``previous-key`` (a mounted Secret); trailing newlines are ignored."""
        root = Path(path)
        try:
            current = (root / "key").read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise SignatureError(f"cannot read the signing key {str(root / 'key')!r}: {exc.strerror or exc}") from None
        previous_file = root / "previous-key"
        previous = (previous_file.read_bytes().rstrip(b"\r\n"),) if previous_file.is_file() else ()
        return cls(current, tuple(p for p in previous if p))


def _payload(pod_uid: str, node: str, allocated: Mapping[str, str]) -> bytes:
    return json.dumps({"uid": pod_uid, "node": node, "allocated": dict(sorted(allocated.items()))}, separators=(",", ":")).encode()


def _digest(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def sign(keys: SigningKeys, pod_uid: str, node: str, allocated: Mapping[str, str]) -> str:
    """The signature annotation value for an allocation, always with the current key."""
    return f"{SCHEME}:{_digest(keys.current, _payload(pod_uid, node, allocated))}"


def verify(keys: SigningKeys, signature: str | None, pod_uid: str, node: str, allocated: Mapping[str, str]) -> None:
    """Raise :class:`SignatureError` saying why unless ``signature`` matches with the current or a previous key."""
    if not signature:
        raise SignatureError("the pod carries no allocation signature: its device annotations were not written by the scheduler")
    scheme, _, digest = signature.partition(":")
    if scheme != SCHEME or len(digest) != 64:
        raise SignatureError(f"allocation signature {signature[:80]!r} is malformed (expected {SCHEME}:<64 hex digits>)")
    payload = _payload(pod_uid, node, allocated)
    if not any(hmac.compare_digest(digest, _digest(key, payload)) for key in (keys.current, *keys.previous)):
        raise SignatureError("allocation signature does not match the pod's device annotations: they were changed after scheduling")
