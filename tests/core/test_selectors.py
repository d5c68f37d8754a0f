"""Type and UUID selectors shared by every backend."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.backendkit.selectors import (
    TYPE_MISMATCH,
    UUID_MISMATCH,
    pod_annotations,
    split_list,
    type_reason,
    uuid_reason,
)


@pytest.mark.parametrize(
    ("annotations", "device_type", "reason"),
    [
        ({}, "NVIDIA A100", None),
        ({"use": "a100,V100"}, "NVIDIA A100-SXM4", None),  # case-insensitive substring
        ({"use": "H100"}, "NVIDIA A100", TYPE_MISMATCH),
        ({"nouse": " a100 "}, "NVIDIA A100", TYPE_MISMATCH),
        ({"use": "A100", "nouse": "SXM"}, "NVIDIA A100-PCIE", None),
    ],
)
def test_type(annotations, device_type, reason):
    assert type_reason(annotations, device_type, "use", "nouse") == reason


def test_uuid_is_exact():
    assert uuid_reason({"use": "GPU-1"}, "GPU-12", "use", "nouse") == UUID_MISMATCH
    assert uuid_reason({"use": "GPU-1,GPU-12"}, "GPU-12", "use", "nouse") is None
    assert uuid_reason({"nouse": "GPU-12"}, "GPU-12", "use", "nouse") == UUID_MISMATCH
    assert pod_annotations({"metadata": {"annotations": None}}) == {}


@given(st.text(max_size=60))
def test_split_list_never_yields_blanks(value):
    parts = split_list(value)
    assert all(p and p == p.strip() and "," not in p for p in parts)
