"""Allocation signatures: right keys pass, anything changed or forged is refused with a reason, and an
agent's key material cannot sign (issue 19 item 9)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from hami.certs import signing_keys_command
from hami.wire.signing import SignatureError, SigningKeys, legacy_sign, sign, verify

KEYS = SigningKeys.from_seed(b"k" * 32)
ALLOCATED = {"hami.io/vgpu-devices-allocated": "GPU-a,NVIDIA,3000,0:;"}
LEGACY_KEY = b"0123456789abcdef0123456789abcdef"


def test_round_trip():
    signature = sign(KEYS, "uid-1", "node-a", ALLOCATED)
    assert signature.startswith("ed25519:") and len(signature) == len("ed25519:") + 128
    verify(KEYS, signature, "uid-1", "node-a", ALLOCATED)
    verify(KEYS.verifier(), signature, "uid-1", "node-a", ALLOCATED)


@pytest.mark.parametrize(
    ("uid", "node", "allocated"),
    [
        ("uid-2", "node-a", ALLOCATED),
        ("uid-1", "node-b", ALLOCATED),
        ("uid-1", "node-a", {"hami.io/vgpu-devices-allocated": "GPU-a,NVIDIA,30000,0:;"}),
        ("uid-1", "node-a", {**ALLOCATED, "hami.io/dcu-devices-allocated": "DCU-1,DCU,1,0:;"}),
    ],
)
def test_any_change_is_refused(uid, node, allocated):
    signature = sign(KEYS, "uid-1", "node-a", ALLOCATED)
    with pytest.raises(SignatureError, match="changed after scheduling"):
        verify(KEYS.verifier(), signature, uid, node, allocated)


@pytest.mark.parametrize(
    ("signature", "fragment"),
    [
        (None, "no allocation signature"),
        ("", "no allocation signature"),
        ("md5:abc", "malformed"),
        ("ed25519:zz", "malformed"),
        ("ed25519:" + "g" * 128, "malformed"),
        ("hmac-sha256:" + "0" * 64, "--accept-legacy-hmac-key"),
    ],
)
def test_missing_or_malformed(signature, fragment):
    with pytest.raises(SignatureError, match=fragment):
        verify(KEYS, signature, "uid-1", "node-a", ALLOCATED)


def test_agent_key_material_cannot_sign():
    """Everything an agent holds (public keys, and the PEM/raw bytes of them) fails to produce a signature
    the scheduler or other agents accept: not by sign(), not as an HMAC key, not as an Ed25519 seed."""
    agent = SigningKeys.public_from_directory(KEYS.write(_tmp_dir(), private=False))
    assert not agent.can_sign
    with pytest.raises(SignatureError, match="can only verify"):
        sign(agent, "uid-1", "node-a", ALLOCATED)
    raw = agent.public[0].public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = agent.public_pem()
    payload_forgeries = [
        legacy_sign(pem, "uid-1", "node-a", ALLOCATED),  # the old scheme keyed with what the agent holds
        legacy_sign(raw, "uid-1", "node-a", ALLOCATED),
        sign(SigningKeys.from_seed(raw), "uid-1", "node-a", ALLOCATED),  # the public bytes used as a seed
        sign(SigningKeys.from_seed(hashlib.sha256(pem).digest()), "uid-1", "node-a", ALLOCATED),
        "ed25519:" + hmac.new(raw, b"x", hashlib.sha512).hexdigest(),
    ]
    for forged in payload_forgeries:
        for verifier in (KEYS, agent):
            with pytest.raises(SignatureError):
                verify(verifier, forged, "uid-1", "node-a", ALLOCATED)


def test_an_agent_refuses_a_private_key_in_its_directory(tmp_path):
    KEYS.write(tmp_path, private=True)
    with pytest.raises(SignatureError, match=r"/key' is a private signing key: node agents verify with 'public-key' only"):
        SigningKeys.public_from_directory(tmp_path)


def test_rotation_accepts_the_previous_public_key_for_verification_only(tmp_path):
    old = SigningKeys.from_seed(b"o" * 32)
    signed_before_rotation = sign(old, "uid", "n", ALLOCATED)
    new = SigningKeys.from_seed(b"n" * 32)
    new.write(tmp_path, private=True)
    (tmp_path / "previous-public-key").write_bytes(old.public_pem())
    for rotated in (SigningKeys.from_directory(tmp_path), _agent_copy(tmp_path)):
        verify(rotated, signed_before_rotation, "uid", "n", ALLOCATED)
    rotated = SigningKeys.from_directory(tmp_path)
    signed_after = sign(rotated, "uid", "n", ALLOCATED)
    assert signed_after != signed_before_rotation
    with pytest.raises(SignatureError):
        verify(old, signed_after, "uid", "n", ALLOCATED)  # an agent not yet rotated refuses the new key's records
    (tmp_path / "previous-public-key").unlink()
    with pytest.raises(SignatureError, match="changed after scheduling"):
        verify(SigningKeys.from_directory(tmp_path), signed_before_rotation, "uid", "n", ALLOCATED)


def _agent_copy(directory):
    """What an agent mounts: the public files of a scheduler's key directory."""
    return SigningKeys.public_from_directory(_copy_public(directory))


_counter = iter(range(1_000_000))


def _tmp_dir():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix=f"hami-keys-{next(_counter)}-"))


def test_certificate_wrapped_public_key_is_read(tmp_path):
    """The chart can only derive the public key by wrapping it in a self-signed certificate (sprig's
    genSelfSignedCertWithKey): the agent reads the key out of it."""
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hami-allocation-signer")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEYS.public[0])
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(KEYS.private, None)
    )
    (tmp_path / "public-key").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    agent = SigningKeys.public_from_directory(tmp_path)
    verify(agent, sign(KEYS, "u", "n", ALLOCATED), "u", "n", ALLOCATED)


@pytest.mark.parametrize(
    ("files", "loader", "fragment"),
    [
        ({}, "scheduler", r"cannot read the allocation signing key '.*/key'"),
        (
            {"key": b"0123456789abcdef0123456789abcdef\n"},
            "scheduler",
            r"'.*/key' is not a PEM private key \(the HMAC key of an older release\?\)",
        ),
        (
            {"key": b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"},
            "scheduler",
            r"'.*/key' is not a readable PEM private key",
        ),
        ({"key": "ec"}, "scheduler", r"'.*/key' holds a ECPrivateKey; the allocation signing key must be Ed25519"),
        ({}, "agent", r"cannot read the allocation public key '.*/public-key'"),
        ({"public-key": b"garbage"}, "agent", r"'.*/public-key' is neither a PEM public key nor a PEM certificate"),
        ({"public-key": "ok", "previous-public-key": b"garbage"}, "agent", r"'.*/previous-public-key' is neither"),
        ({"key": "ok", "public-key": "other"}, "scheduler", r"'.*/public-key' is not the public key of '.*/key'"),
    ],
)
def test_key_loading_errors_name_the_file(tmp_path, files, loader, fragment):
    other = SigningKeys.from_seed(b"x" * 32)
    for name, content in files.items():
        if content == "ec":
            content = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        elif content == "ok":
            content = KEYS.private_pem() if name == "key" else KEYS.public_pem()
        elif content == "other":
            content = other.public_pem()
        (tmp_path / name).write_bytes(content)
    load = SigningKeys.from_directory if loader == "scheduler" else SigningKeys.public_from_directory
    with pytest.raises(SignatureError, match=fragment):
        load(tmp_path)


def test_legacy_hmac_records_only_with_the_explicit_key(tmp_path):
    (tmp_path / "legacy").write_bytes(LEGACY_KEY + b"\n")
    old_record = legacy_sign(LEGACY_KEY, "uid", "n", ALLOCATED)
    with pytest.raises(SignatureError, match="accepted only with --accept-legacy-hmac-key"):
        verify(KEYS.verifier(), old_record, "uid", "n", ALLOCATED)
    KEYS.write(tmp_path / "agent", private=False)
    agent = SigningKeys.public_from_directory(tmp_path / "agent", legacy_hmac_key=tmp_path / "legacy")
    verify(agent, old_record, "uid", "n", ALLOCATED)
    with pytest.raises(SignatureError, match="legacy allocation signature does not match"):
        verify(agent, old_record, "uid", "other-node", ALLOCATED)
    assert sign(KEYS.with_legacy_hmac(LEGACY_KEY), "uid", "n", ALLOCATED).startswith("ed25519:")  # new records never use HMAC
    (tmp_path / "short").write_bytes(b"short")
    with pytest.raises(SignatureError, match=r"legacy HMAC key '.*/short' has 5 bytes"):
        SigningKeys.public_from_directory(tmp_path / "agent", legacy_hmac_key=tmp_path / "short")


def test_value_checks():
    with pytest.raises(SignatureError, match="32 bytes; got 5"):
        SigningKeys.from_seed(b"short")
    with pytest.raises(SignatureError, match="no public key"):
        SigningKeys(())
    with pytest.raises(SignatureError, match="does not belong to the private signing key"):
        SigningKeys((SigningKeys.from_seed(b"z" * 32).public[0],), KEYS.private)
    with pytest.raises(SignatureError, match="Ed25519"):
        SigningKeys((ed25519.Ed25519PrivateKey.generate(),))


def test_signing_keys_command_writes_a_pair_and_keeps_an_existing_key(tmp_path):
    runner = CliRunner()
    old = SigningKeys.from_seed(b"o" * 32)
    (tmp_path / "old.pem").write_bytes(old.public_pem())
    done = runner.invoke(signing_keys_command, ["--out-dir", str(tmp_path / "k"), "--previous-public-key", str(tmp_path / "old.pem")])
    assert done.exit_code == 0, done.output
    scheduler = SigningKeys.from_directory(tmp_path / "k")
    agent = _agent_copy(tmp_path / "k")
    verify(agent, sign(scheduler, "u", "n", ALLOCATED), "u", "n", ALLOCATED)
    verify(agent, sign(old, "u", "n", ALLOCATED), "u", "n", ALLOCATED)
    assert oct((tmp_path / "k" / "key").stat().st_mode & 0o777) == "0o600"
    again = runner.invoke(signing_keys_command, ["--out-dir", str(tmp_path / "k")])
    assert again.exit_code != 0 and "refusing to overwrite a signing key" in again.output


def _copy_public(directory):
    target = _tmp_dir()
    for name in ("public-key", "previous-public-key"):
        (target / name).write_bytes((directory / name).read_bytes())
    return target


@given(st.text(max_size=40), st.text(max_size=20), st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=3))
def test_signatures_bind_all_inputs(uid, node, allocated):
    signature = sign(KEYS, uid, node, allocated)
    verify(KEYS.verifier(), signature, uid, node, allocated)
    with pytest.raises(SignatureError):
        verify(KEYS.verifier(), signature, uid + "x", node, allocated)
