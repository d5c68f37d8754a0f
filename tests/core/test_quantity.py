"""Kubernetes quantities: the grammar, exactness and clear errors."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hami.errors import QuantityError
from hami.wire.quantity import format_quantity, parse_count, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3000", Decimal(3000)),
        ("3Gi", Decimal(3 * 2**30)),
        ("500m", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        ("1E-2", Decimal("0.01")),
        ("1.5k", Decimal(1500)),
        (".5Ki", Decimal(512)),
        ("+7", Decimal(7)),
        ("-2M", Decimal(-2_000_000)),
        (" 12 ", Decimal(12)),
        (5, Decimal(5)),
    ],
)
def test_examples(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "3GB", "1.2.3", "1e", "e3", "--1", "1 Gi", "0x10", "1e99999"])
def test_garbage_names_the_text(text):
    with pytest.raises(QuantityError) as caught:
        parse_quantity(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"), [("1.5", "whole number"), ("500m", "whole number"), ("-1", "negative"), ("x", "not a Kubernetes quantity")]
)
def test_count_errors_name_the_resource(text, fragment):
    with pytest.raises(QuantityError, match=fragment) as caught:
        parse_count(text, "nvidia.com/gpu")
    assert "nvidia.com/gpu" in str(caught.value)


def test_count_accepts_exponents_and_suffixes():
    assert parse_count("1e3", "x") == 1000
    assert parse_count("2k", "x") == 2000
    assert parse_count(3, "x") == 3


def test_bool_and_other_types_are_rejected():
    for value in (True, 1.5, None, [1]):
        with pytest.raises(QuantityError):
            parse_quantity(value)  # type: ignore[arg-type]


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-(10**30), max_value=10**30))
def test_format_round_trips(value):
    assert parse_quantity(format_quantity(value)) == value


@given(st.integers(min_value=0, max_value=10**18), st.sampled_from(["", "k", "M", "G", "Ki", "Mi", "Gi"]))
def test_suffixes_scale_exactly(number, suffix):
    scale = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[suffix]
    assert parse_count(f"{number}{suffix}", "q") == number * scale


@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_quantity_error(text):
    try:
        parse_quantity(text)
    except QuantityError:
        pass
