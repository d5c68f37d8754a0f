"""Allocation signatures: the node agent only hands out what the scheduler granted.

At filter time the scheduler signs, with its Ed25519 private key, the pod's UID, the chosen node and
every ``…-devices-allocated`` annotation it wrote; node agents verify with the public key before
Allocate. The ``…-devices-to-allocate`` annotations shrink as containers are allocated, so the agent
checks that each remaining entry equals the signed ``allocated`` entry at the same position.

Why asymmetric: every GPU node runs an agent, so anything the agent holds is as safe as the least safe
node. With a shared HMAC key one compromised node could mint allocations for any pod in the cluster;
with Ed25519 the agents hold only public keys, which cannot sign.

Key files, each a mounted Secret or ConfigMap directory:

- scheduler: ``key`` (PEM PKCS#8 Ed25519 private key), optional ``previous-public-key``;
- agents: ``public-key`` and optional ``previous-public-key`` (both also read by the scheduler).

A public-key file holds a PEM ``PUBLIC KEY`` or a PEM ``CERTIFICATE`` whose subject key is Ed25519
(the Helm chart can only derive a public key by wrapping it in a self-signed certificate; the
certificate is a container for the key, not a trust anchor, so its dates and issuer are ignored).

Upgrades from the HMAC scheme: records signed ``hmac-sha256:…`` are refused unless the component was
given the old key with ``--accept-legacy-hmac-key`` (docs/security.md, "Signing keys").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from hami.errors import HamiError

SCHEME = "ed25519"
LEGACY_SCHEME = "hmac-sha256"
PRIVATE_KEY_FILE = "key"
PUBLIC_KEY_FILE = "public-key"
PREVIOUS_PUBLIC_KEY_FILE = "previous-public-key"


class SignatureError(HamiError):
    """An allocation's signature is missing, malformed or does not match, or a key cannot be read."""


def _crypto() -> Any:
    """The ``cryptography`` modules used here, imported on first use (hami --help stays fast)."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return x509, InvalidSignature, serialization, ed25519


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)  # a typed ``converter=tuple`` (mypy's attrs plugin cannot solve the generic one)


def _raw_public(key: Any) -> bytes:
    _, _, serialization, _ = _crypto()
    return bytes(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@attrs.frozen
class SigningKeys:
    """Public keys that verify (the current one first, then those still accepted during a rotation),
    the private key only where allocations are signed (the scheduler), and the old HMAC keys only when
    legacy records were explicitly accepted."""

    public: tuple[Any, ...] = attrs.field(converter=_tuple, repr=False)
    private: Any = attrs.field(default=None, repr=False)
    legacy_hmac: tuple[bytes, ...] = attrs.field(default=(), converter=_tuple, repr=False)

    def __attrs_post_init__(self) -> None:
        _, _, _, ed25519 = _crypto()
        if not self.public:
            raise SignatureError("no public key to verify allocation signatures with")
        for key in self.public:
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise SignatureError(f"allocation keys are Ed25519; got a {type(key).__name__}")
        if self.private is not None:
            if not isinstance(self.private, ed25519.Ed25519PrivateKey):
                raise SignatureError(f"the signing key is Ed25519; got a {type(self.private).__name__}")
            if _raw_public(self.private.public_key()) != _raw_public(self.public[0]):
                raise SignatureError("the current public key does not belong to the private signing key")
        for old in self.legacy_hmac:
            if len(old) < 16:
                raise SignatureError(f"the legacy HMAC key has {len(old)} bytes; at least 16 are needed")

    @property
    def can_sign(self) -> bool:
        return self.private is not None

    @classmethod
    def from_private(cls, private: Any, previous: Iterable[Any] = (), legacy_hmac: Iterable[bytes] = ()) -> SigningKeys:
        return cls((private.public_key(), *previous), private, tuple(legacy_hmac))

    @classmethod
    def generate(cls) -> SigningKeys:
        """A fresh key pair (the sandbox, tests)."""
        _, _, _, ed25519 = _crypto()
        return cls.from_private(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKeys:
        """A reproducible key pair from a 32-byte seed (tests and benches only: a known seed is a known key)."""
        _, _, _, ed25519 = _crypto()
        if len(seed) != 32:
            raise SignatureError(f"an Ed25519 seed has 32 bytes; got {len(seed)}")
        return cls.from_private(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    def verifier(self) -> SigningKeys:
        """The same keys without the private one: what an agent may hold."""
        return attrs.evolve(self, private=None)

    def with_legacy_hmac(self, *keys: bytes) -> SigningKeys:
        return attrs.evolve(self, legacy_hmac=(*self.legacy_hmac, *keys))

    def public_pem(self, index: int = 0) -> bytes:
        _, _, serialization, _ = _crypto()
        return bytes(self.public[index].public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def private_pem(self) -> bytes:
        _, _, serialization, _ = _crypto()
        if self.private is None:
            raise SignatureError("these keys hold no private key")
        return bytes(
            self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )

    def write(self, directory: str | Path, *, private: bool) -> Path:
        """Write the key files a component reads (``private``: also ``key``, for the scheduler)."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        if private:
            target = root / PRIVATE_KEY_FILE
            target.write_bytes(self.private_pem())
            target.chmod(0o600)
        (root / PUBLIC_KEY_FILE).write_bytes(self.public_pem(0))
        if len(self.public) > 1:
            (root / PREVIOUS_PUBLIC_KEY_FILE).write_bytes(self.public_pem(1))
        return root

    @classmethod
    def from_directory(cls, path: str | Path, *, legacy_hmac_key: str | Path | None = None) -> SigningKeys:
        """The scheduler's keys: ``key`` (private, required), optional ``previous-public-key``."""
        root = Path(path)
        private = _load_private(root / PRIVATE_KEY_FILE)
        previous = _optional_public(root / PREVIOUS_PUBLIC_KEY_FILE)
        legacy = (load_legacy_hmac_key(legacy_hmac_key),) if legacy_hmac_key else ()
        keys = cls.from_private(private, previous, legacy)
        current_file = root / PUBLIC_KEY_FILE
        if current_file.is_file() and _raw_public(load_public_key(current_file)) != _raw_public(keys.public[0]):
            raise SignatureError(
                f"{str(current_file)!r} is not the public key of {str(root / PRIVATE_KEY_FILE)!r}: the key pair was rotated halfway"
            )
        return keys

    @classmethod
    def public_from_directory(cls, path: str | Path, *, legacy_hmac_key: str | Path | None = None) -> SigningKeys:
        """An agent's keys: ``public-key`` and optional ``previous-public-key``. A private key in the
        directory is refused: it would give every node the power to sign."""
        root = Path(path)
        if (root / PRIVATE_KEY_FILE).exists():
            raise SignatureError(
                f"{str(root / PRIVATE_KEY_FILE)!r} is a private signing key: node agents verify with '{PUBLIC_KEY_FILE}' only; "
                "mount the public-key ConfigMap (chart: <release>-signing-public-key), not the scheduler's Secret"
            )
        current = load_public_key(root / PUBLIC_KEY_FILE)
        legacy = (load_legacy_hmac_key(legacy_hmac_key),) if legacy_hmac_key else ()
        return cls((current, *_optional_public(root / PREVIOUS_PUBLIC_KEY_FILE)), None, legacy)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read the {what} {str(path)!r}: {exc.strerror or exc}") from None


def _load_private(path: Path) -> Any:
    _, _, serialization, ed25519 = _crypto()
    data = _read(path, "allocation signing key")
    if b"-----BEGIN" not in data:
        raise SignatureError(
            f"{str(path)!r} is not a PEM private key (the HMAC key of an older release?): the scheduler signs with Ed25519 now; "
            "generate a pair with 'hami signing-keys --out-dir DIR' and pass the old file with --accept-legacy-hmac-key while old pods remain"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{str(path)!r} is not a readable PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{str(path)!r} holds a {type(key).__name__}; the allocation signing key must be Ed25519")
    return key


def load_public_key(path: Path) -> Any:
    """An Ed25519 public key from a PEM public key or certificate file; errors name the file."""
    x509, _, serialization, ed25519 = _crypto()
    data = _read(path, "allocation public key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{str(path)!r} is neither a PEM public key nor a PEM certificate: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{str(path)!r} holds a {type(key).__name__}; the allocation public key must be Ed25519")
    return key


def _optional_public(path: Path) -> tuple[Any, ...]:
    """A rotation's previous public key; an empty file (a Secret key kept blank) counts as none."""
    if not path.is_file() or not path.read_bytes().strip():
        return ()
    return (load_public_key(path),)


def load_legacy_hmac_key(path: str | Path) -> bytes:
    """The HMAC key of releases before Ed25519 signatures (``--accept-legacy-hmac-key``); trailing newlines are ignored."""
    key = _read(Path(path), "legacy HMAC key").rstrip(b"\r\n")
    if len(key) < 16:
        raise SignatureError(f"the legacy HMAC key {str(path)!r} has {len(key)} bytes; at least 16 are needed")
    return key


def _payload(pod_uid: str, node: str, allocated: Mapping[str, str]) -> bytes:
    return json.dumps({"uid": pod_uid, "node": node, "allocated": dict(sorted(allocated.items()))}, separators=(",", ":")).encode()


def _hmac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def sign(keys: SigningKeys, pod_uid: str, node: str, allocated: Mapping[str, str]) -> str:
    """The signature annotation value for an allocation, always with the current private key."""
    if keys.private is None:
        raise SignatureError("these keys can only verify: allocations are signed by the scheduler's private key")
    return f"{SCHEME}:{keys.private.sign(_payload(pod_uid, node, allocated)).hex()}"


def legacy_sign(key: bytes, pod_uid: str, node: str, allocated: Mapping[str, str]) -> str:
    """A record as releases before Ed25519 signed it (upgrade tests, the chaos suite's forged records)."""
    return f"{LEGACY_SCHEME}:{_hmac(key, _payload(pod_uid, node, allocated))}"


def verify(keys: SigningKeys, signature: str | None, pod_uid: str, node: str, allocated: Mapping[str, str]) -> None:
    """Raise :class:`SignatureError` saying why unless ``signature`` matches a current or previous public
    key (or, only where explicitly accepted, a legacy HMAC key)."""
    _, invalid_signature, _, _ = _crypto()
    if not signature:
        raise SignatureError("the pod carries no allocation signature: its device annotations were not written by the scheduler")
    scheme, _, digest = signature.partition(":")
    payload = _payload(pod_uid, node, allocated)
    if scheme == LEGACY_SCHEME:
        if not keys.legacy_hmac:
            raise SignatureError(
                f"allocation signature uses the legacy {LEGACY_SCHEME} scheme (before Ed25519 signatures), accepted only with --accept-legacy-hmac-key "
                "(the pod was scheduled before the upgrade to Ed25519 signatures)"
            )
        if len(digest) != 64 or not any(hmac.compare_digest(digest, _hmac(key, payload)) for key in keys.legacy_hmac):
            raise SignatureError(
                "legacy allocation signature does not match the pod's device annotations: they were changed after scheduling"
            )
        return
    if scheme != SCHEME or len(digest) != 128:
        raise SignatureError(f"allocation signature {signature[:80]!r} is malformed (expected {SCHEME}:<128 hex digits>)")
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raise SignatureError(f"allocation signature {signature[:80]!r} is malformed (expected {SCHEME}:<128 hex digits>)") from None
    for key in keys.public:
        try:
            key.verify(raw, payload)
            return
        except invalid_signature:
            continue
    raise SignatureError("allocation signature does not match the pod's device annotations: they were changed after scheduling")
