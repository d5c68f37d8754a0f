"""Issue 25 (one unreadable value never fails discovery): ``str.isdigit`` accepts characters ``int``
refuses (superscripts, circled digits); such a value made ``parse_memory_mib``/``parse_virtual_info``
raise ValueError, which no discovery caller catches. They now test ``isdecimal`` (what ``int`` reads):
the value is left out, as ``N/A`` is, and the other devices keep theirs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hami_hygon import hysmi

ODD = "²³¹⁰①⑨"


@given(st.text(alphabet=ODD, min_size=1, max_size=6))
def test_a_digit_like_memory_value_is_left_out(value):
    text = f"HCU[0]          : vram Total Memory (MiB): {value}\nHCU[1]          : vram Total Memory (MiB): 65520"
    assert hysmi.parse_memory_mib(text, hysmi.MEMINFO_TOTAL) == {1: 65520}


@given(st.text(alphabet=ODD, min_size=1, max_size=6))
def test_a_digit_like_virtual_field_reads_as_unknown(value):
    (info,) = hysmi.parse_virtual_info(f"Device 0:\n    Actual Device: {value}\n    Compute Units: 120\n")
    assert (info.index, info.actual_device, info.compute_units) == (0, None, 120)
