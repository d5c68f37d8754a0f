"""Device memory is a plain number of MiB: byte quantities (3Gi, 3000Mi, 3G) are refused with the
MiB value to write, and every plain number, however the API server writes it, is itself."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.backendkit.limits import parse_memory_mib, standard_request
from hami.errors import QuantityError, RequestError
from hami.plugin.model import AnnotationKeys, DeviceKind, ResourceNames

NAME = "nvidia.com/gpumem"
MIB = 1 << 20
BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DECIMAL_BYTES = {"M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
SUGGESTION = re.compile(rf"write {re.escape(NAME)}: (\d+)")


def canonical_decimal(value: int) -> str:
    """How apimachinery serialises a DecimalSI integer: the largest suffix that keeps it whole (3000 → 3k)."""
    for suffix, exponent in (("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3)):
        if value and value % 10**exponent == 0:
            return f"{value // 10**exponent}{suffix}"
    return str(value)


def suggested(text: str) -> int:
    with pytest.raises(QuantityError) as caught:
        parse_memory_mib(text, NAME)
    message = str(caught.value)
    assert f"{NAME}={text!r}" in message and "MiB" in message
    match = SUGGESTION.search(message)
    assert match, message
    return int(match[1])


@given(st.integers(min_value=0, max_value=999_999))
def test_a_plain_number_is_mib_however_the_api_server_writes_it(value):
    assert parse_memory_mib(value, NAME) == value
    assert parse_memory_mib(str(value), NAME) == value
    assert parse_memory_mib(canonical_decimal(value), NAME) == value


@given(st.integers(min_value=1, max_value=10**6), st.sampled_from(sorted(BINARY)))
def test_a_binary_suffix_is_refused_with_the_mib_to_write(number, suffix):
    text = f"{number}{suffix}"
    mib = suggested(text)
    assert mib == -(-number * BINARY[suffix] // MIB)  # rounded up when not whole MiB
    assert parse_memory_mib(str(mib), NAME) == mib  # what we suggest is accepted as written


@given(st.integers(min_value=1, max_value=10**5), st.integers(min_value=1, max_value=3), st.sampled_from(sorted(BINARY)))
def test_a_fractional_binary_quantity_is_rounded_up(whole, tenths, suffix):
    text = f"{whole}.{tenths}{suffix}"
    exact = Decimal(f"{whole}.{tenths}") * BINARY[suffix]
    if exact != exact.to_integral_value():
        return  # not a whole number of bytes: the whole-number check answers first
    assert suggested(text) == -(-int(exact) // MIB)


@given(st.integers(min_value=1, max_value=10**4), st.sampled_from(sorted(DECIMAL_BYTES)))
def test_a_decimal_suffix_of_a_million_or_more_reads_as_bytes(number, suffix):
    assert suggested(f"{number}{suffix}") == -(-number * 10 ** DECIMAL_BYTES[suffix] // MIB)


@given(st.integers(min_value=1, max_value=999), st.integers(min_value=0, max_value=12))
def test_exponent_notation(number, exponent):
    text = f"{number}e{exponent}"
    if exponent < 6:
        assert parse_memory_mib(text, NAME) == number * 10**exponent
    else:
        assert suggested(text) == -(-number * 10**exponent // MIB)


def test_the_example_from_the_issue():
    assert suggested("3Gi") == 3072
    assert suggested("3000Mi") == 3000  # Mi maps exactly but is refused too: the API server turns 4096Mi into 4Gi
    assert suggested("4Gi") == 4096
    assert suggested("3G") == 2862


@pytest.mark.parametrize(("text", "fragment"), [("-1Gi", "negative"), ("1.5", "whole number"), ("lots", "not a Kubernetes quantity")])
def test_malformed_memory_keeps_its_own_error(text, fragment):
    with pytest.raises(QuantityError, match=fragment):
        parse_memory_mib(text, NAME)


KIND = DeviceKind(
    "NVIDIA",
    ResourceNames(count="nvidia.com/gpu", memory=NAME, cores="nvidia.com/gpucores"),
    AnnotationKeys.hami("hami.io/node-nvidia-register", "hami.io/node-handshake", "hami.io/vgpu"),
)


def test_standard_request_refuses_bytes_naming_the_container():
    container = {"name": "train", "resources": {"limits": {"nvidia.com/gpu": "1", NAME: "3Gi"}}}
    with pytest.raises(
        RequestError, match=rf"container 'train': {re.escape(NAME)}='3Gi' is written as bytes.*write {re.escape(NAME)}: 3072"
    ):
        standard_request(container, KIND)
    ok = standard_request({"name": "train", "resources": {"limits": {"nvidia.com/gpu": "1", NAME: "3k"}}}, KIND)
    assert ok is not None and ok.memory == 3000


def test_other_resources_keep_their_suffix_rules():
    """Only memory is MiB: a count or a core percentage given as 1k is still a number."""
    request = standard_request({"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1k"}}}, KIND)
    assert request is not None and request.count == 1000


def test_a_resource_counted_in_slices_gets_the_slice_count_to_write():
    """Cambricon's vmemory counts 256 MiB slices: 1Gi is 4 of them."""
    with pytest.raises(QuantityError, match=r"counts slices of 256 MiB.*write cambricon.com/mlu.smlu.vmemory: 4$"):
        parse_memory_mib("1Gi", "cambricon.com/mlu.smlu.vmemory", unit_mib=256)
    assert parse_memory_mib("12", "cambricon.com/mlu.smlu.vmemory", unit_mib=256) == 12
