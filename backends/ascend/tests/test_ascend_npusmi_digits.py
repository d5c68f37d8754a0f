"""Issue 25 (one unreadable row never fails discovery): ``str.isdigit`` accepts characters ``int`` refuses
(superscripts, circled digits); a cell of them made ``parse_info``/``parse_chip_map`` raise ValueError,
which no discovery caller catches. The parsers now test ``isdecimal`` (exactly what ``int`` reads)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hami_ascend.npusmi import parse_chip_map, parse_info

ODD = "²³¹⁰①⑨"
"""isdigit() is True for each, int() refuses each."""

GOOD = (
    "| 0     910B3               | OK            | 93.0        41                0    / 0             |\n"
    "| 0                         | 0000:C1:00.0  | 0           0    / 0          3386 / 65536         |"
)


@given(st.text(alphabet=ODD + "0123456789", min_size=1, max_size=4))
def test_a_digit_like_npu_id_is_a_problem_line_not_a_crash(npu):
    """A name row whose NPU id holds such a character is reported as a problem; the good chip after it stays."""
    table = parse_info(f"| {npu} 910B3 | OK | 93.0 41 0 / 0 |\n" + GOOD)
    assert [(c.npu_id, c.memory_total) for c in table.chips] == [(0, 65536)]
    if any(c in ODD for c in npu):
        assert table.problems == (f"line 1: '| {npu} 910B3 | OK | 93.0 41 0 / 0 |' (expected '<npu id> <name>')",)


@given(st.sampled_from(ODD), st.integers(0, 2))
def test_a_digit_like_map_cell_skips_the_row(odd, column):
    cells = ["0", "0", "0", "Ascend", "910B3"]
    cells[column] = odd
    assert parse_chip_map("\n".join([" ".join(cells), "1 0 1 Ascend 910B3"])) == parse_chip_map("1 0 1 Ascend 910B3")
