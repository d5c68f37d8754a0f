"""Allocation signatures: right keys pass, anything changed or forged is refused with a reason."""

from __future__ import annotations

import pytest
from hami.wire.signing import SignatureError, SigningKeys, sign, verify
from hypothesis import given
from hypothesis import strategies as st

KEYS = SigningKeys(b"k" * 32)
ALLOCATED = {"hami.io/vgpu-devices-allocated": "GPU-a,NVIDIA,3000,0:;"}


def test_round_trip():
    signature = sign(KEYS, "uid-1", "node-a", ALLOCATED)
    assert signature.startswith("hmac-sha256:")
    verify(KEYS, signature, "uid-1", "node-a", ALLOCATED)


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
        verify(KEYS, signature, uid, node, allocated)


@pytest.mark.parametrize(("signature", "fragment"), [(None, "no allocation signature"), ("", "no allocation signature"), ("md5:abc", "malformed"), ("hmac-sha256:zz", "malformed")])
def test_missing_or_malformed(signature, fragment):
    with pytest.raises(SignatureError, match=fragment):
        verify(KEYS, signature, "uid-1", "node-a", ALLOCATED)


def test_rotation_accepts_the_previous_key_for_verification_only(tmp_path):
    old = SigningKeys(b"o" * 32)
    signed_before_rotation = sign(old, "uid", "n", ALLOCATED)
    (tmp_path / "key").write_bytes(b"n" * 32 + b"\n")
    (tmp_path / "previous-key").write_bytes(b"o" * 32 + b"\n")
    rotated = SigningKeys.from_directory(tmp_path)
    verify(rotated, signed_before_rotation, "uid", "n", ALLOCATED)
    assert sign(rotated, "uid", "n", ALLOCATED) != signed_before_rotation  # new signatures use the new key
    (tmp_path / "previous-key").unlink()
    with pytest.raises(SignatureError):
        verify(SigningKeys.from_directory(tmp_path), signed_before_rotation, "uid", "n", ALLOCATED)


def test_bad_key_material(tmp_path):
    with pytest.raises(SignatureError, match="cannot read the signing key"):
        SigningKeys.from_directory(tmp_path)
    with pytest.raises(SignatureError, match="at least 16"):
        SigningKeys(b"short")


@given(st.text(max_size=40), st.text(max_size=20), st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=3))
def test_signatures_bind_all_inputs(uid, node, allocated):
    signature = sign(KEYS, uid, node, allocated)
    verify(KEYS, signature, uid, node, allocated)
    with pytest.raises(SignatureError):
        verify(KEYS, signature, uid + "x", node, allocated)
