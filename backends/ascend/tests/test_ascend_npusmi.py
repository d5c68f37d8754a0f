"""npu-smi output parsing: every recorded sample, plus properties over arbitrary text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami_ascend.npusmi import MapRow, parse_chip_map, parse_fields, parse_info, succeeded

FIXTURES = Path(__file__).parent / "fixtures"

# file -> (chips, (npu, chip, phy, name, health, bus, MiB) of the first chip, problem lines)
SAMPLES = {
    "info_910a_8card.txt": (8, (0, 0, None, "910B", "OK", "0000:C1:00.0", 32768), ()),
    "info_910b1_elided.txt": (3, (0, 0, None, "910B1", "OK", "0000:C1:00.0", 65536), ("line 13: '...'",)),
    "info_910c_a3_16die.txt": (16, (0, 0, 0, "Ascend910", "OK", "0000:9D:00.0", 65536), ()),
    "info_310p3_duo.txt": (2, (2, 0, 0, "310P3", "OK", "0000:01:00.0", 44280), ()),
    "info_910b3_8card_idle.txt": (8, (0, 0, None, "910B3", "OK", "0000:C1:00.0", 65536), ()),
    "info_910b2c_busy_process.txt": (2, (0, 0, None, "910B2C", "OK", "0000:5A:00.0", 65536), ()),
    "info_910c_a3_4die_busy.txt": (4, (0, 0, 0, "Ascend910", "OK", "0000:9C:00.0", 65536), ()),
    "info_310b4_alarm_na.txt": (1, (0, 0, 0, "310B4", "Alarm", "NA", 15609), ()),
    "info_310p3_npu0_npu64.txt": (2, (0, 0, 0, "310P3", "OK", "0000:01:00.0", 21527), ()),
    "info_310p3_npu32896.txt": (1, (32896, 0, 0, "310P3", "OK", "0000:00:00.0", 44213), ()),
}


def test_every_info_recording_has_an_expectation():
    assert set(SAMPLES) == {p.name for p in FIXTURES.glob("info_*.txt")} - {"info_m_310p3_npu32896.txt"}


def test_busy_tables_stop_at_the_process_table(fixture_text):
    """The process rows ('0  0 | 124528 | python3.8 | 17400', 'No running processes found in NPU 0')
    look like chip rows; none becomes a chip, and the busy chip's HBM figures are its own."""
    busy = parse_info(fixture_text("info_910b2c_busy_process.txt"))
    assert [(c.npu_id, c.bus_id, c.memory_total) for c in busy.chips] == [(0, "0000:5A:00.0", 65536), (1, "0000:19:00.0", 65536)]
    a3 = parse_info(fixture_text("info_910c_a3_4die_busy.txt"))
    assert [(c.npu_id, c.chip_id, c.phy_id, c.bus_id) for c in a3.chips] == [
        (0, 0, 0, "0000:9C:00.0"),
        (0, 1, 1, "0000:9E:00.0"),
        (1, 0, 2, "0000:37:00.0"),
        (1, 1, 3, "0000:39:00.0"),
    ]
    assert a3.problems == () and a3.unread == ()


def test_310p_cards_with_large_npu_ids_and_misaligned_borders(fixture_text):
    """npu-smi numbers 310P cards 0, 64 (and 32896 on a 25.5.2 host): the card id is not an index;
    the Device column is the physical id. One recording's borders are misaligned ('0000:01:00.0|')."""
    pair = parse_info(fixture_text("info_310p3_npu0_npu64.txt"))
    assert [(c.npu_id, c.chip_id, c.phy_id, c.health, c.memory_total) for c in pair.chips] == [
        (0, 0, 0, "OK", 21527),
        (64, 0, 1, "OK", 21527),
    ]
    (big,) = parse_info(fixture_text("info_310p3_npu32896.txt")).chips
    assert (big.npu_id, big.chip_id, big.phy_id, big.memory_total) == (32896, 0, 0, 44213)


def test_chip_map_recording(fixture_text):
    """``npu-smi info -m``: the compute chip with its logic id, the card's Mcu with none ('-'); the
    name as -m prints it ('Ascend 310P3') differs from the info table's ('310P3')."""
    assert parse_chip_map(fixture_text("info_m_310p3_npu32896.txt")) == [
        MapRow(32896, 0, 0, "Ascend 310P3"),
        MapRow(32896, 1, None, "Mcu"),
    ]
    assert parse_chip_map(fixture_text("info_910a_8card.txt")) == []  # the info table is not a map


def test_unreadable_chip_rows_are_kept_as_unread_chips():
    text = (
        "| 0     910B3               | OK            | 88.4        46                0    / 0             |\n"
        "| 0                         | 0000:C1:00.0  | NA          NA                NA                    |\n"
        "| 1     910B3               | OK            | 88.4        46                0    / 0             |\n"
        "| 2     910B3               | OK            | 88.4        46                0    / 0             |\n"
        "| 0                         | 0000:C2:00.0  | 0           0    / 0          4175 / 65536         |\n"
    )
    table = parse_info(text)
    assert [(c.npu_id, c.memory_total) for c in table.chips] == [(2, 65536)]
    assert [(u.npu_id, u.name, u.line, u.problem_line) for u in table.unread] == [(0, "910B3", 1, 2), (1, "910B3", 3, 4)]
    assert table.unread[0].why.startswith("memory unknown") and "not its chip row" in table.unread[1].why


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_recorded_info_table_parses(name, fixture_text):
    count, first, problems = SAMPLES[name]
    table = parse_info(fixture_text(name))
    assert len(table.chips) == count
    c = table.chips[0]
    assert (c.npu_id, c.chip_id, c.phy_id, c.name, c.health, c.bus_id, c.memory_total) == first
    assert [p.split(" (")[0] for p in table.problems] == list(problems)


def test_a3_dies_keep_card_chip_and_phy_ids_and_the_process_table_is_ignored(fixture_text):
    table = parse_info(fixture_text("info_910c_a3_16die.txt"))
    assert [(c.npu_id, c.chip_id, c.phy_id) for c in table.chips] == [(n // 2, n % 2, n) for n in range(16)]
    assert {c.memory_total for c in table.chips} == {65536}  # "61609/ 65536": no space before the slash


def test_310p_duo_reads_the_device_column_as_the_physical_id(fixture_text):
    table = parse_info(fixture_text("info_310p3_duo.txt"))
    assert [(c.npu_id, c.chip_id, c.phy_id, c.memory_total) for c in table.chips] == [(2, 0, 0, 44280), (2, 1, 1, 43693)]


def test_910a_rows_have_no_physical_id_and_report_hbm_not_ddr(fixture_text):
    table = parse_info(fixture_text("info_910a_8card.txt"))
    assert [c.npu_id for c in table.chips] == list(range(8))
    assert {c.phy_id for c in table.chips} == {None} and {c.memory_total for c in table.chips} == {32768}


def test_a_name_row_without_its_chip_row_is_a_problem_naming_the_line():
    text = "| 0     910B3               | OK            | 88.4        46                0    / 0             |\n"
    table = parse_info(text)
    assert table.chips == () and "line 1" in table.problems[0] and "910B3" in table.problems[0]


def test_board_and_set_outputs(fixture_text):
    board = parse_fields(fixture_text("board_910b.txt"))
    assert board["Serial Number"] == "1025C9048791" and board["PCIe Bus Info"] == "0000:C1:00.0" and board["Chip Count"] == "1"
    assert succeeded(fixture_text("create_vnpu_ok.txt"))  # "Status : OK         Message : …" on one line
    assert succeeded(fixture_text("destroy_vnpu_ok.txt"))
    assert parse_fields(fixture_text("destroy_vnpu_ok.txt"))["Message"] == "Destroy vnpu 103 success"
    assert not succeeded("create vnpu failed.\n") and not succeeded(fixture_text("board_910b.txt"))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_arbitrary_text_never_crashes_the_parsers(text):
    table = parse_info(text)
    assert all(c.memory_total >= 0 for c in table.chips)
    parse_fields(text)


row = st.tuples(
    st.integers(0, 63),
    st.integers(0, 1),
    st.sampled_from(["910B3", "310P3", "Ascend910", "910B4-1"]),
    st.sampled_from(["OK", "Warning", "Alarm", "Critical", "UNKNOWN"]),
    st.integers(0, 99999),
    st.integers(1, 131072),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(row, min_size=1, max_size=8), st.booleans())
def test_generated_tables_parse_back(rows, with_phy):
    head = "| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|\n"
    head += (
        "| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |\n"
        if with_phy
        else "| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |\n"
    )
    lines = [head, "+===========================+===============+====================================================+\n"]
    for i, (npu, chip, name, health, used, total) in enumerate(rows):
        lines.append(f"| {npu:<5} {name:<19} | {health:<13} | 70.0        34                0    / 0             |\n")
        second = f"{chip:<5} {i:<19}" if with_phy else f"{chip:<25}"
        lines.append(f"| {second} | 0000:C1:00.0  | 0           0    / 0          {used}/ {total}         |\n")
    table = parse_info("".join(lines))
    assert table.problems == ()
    assert [(c.npu_id, c.chip_id, c.name, c.health, c.memory_total) for c in table.chips] == [
        (n, c, nm, h, t) for n, c, nm, h, _, t in rows
    ]
    assert [c.phy_id for c in table.chips] == ([i for i in range(len(rows))] if with_phy else [None] * len(rows))


def test_the_readme_lists_every_recording_and_every_recording_cites_its_source():
    readme = (FIXTURES.parent.parent / "README.md").read_text()
    for path in sorted(FIXTURES.glob("*.txt")):
        assert f"`{path.name}`" in readme, f"backends/ascend/README.md does not list {path.name}"
        assert path.read_text().startswith("# source: https://"), f"{path.name} has no '# source: <URL>' header"


map_row = st.tuples(
    st.integers(0, 40000),
    st.integers(0, 3),
    st.one_of(st.none(), st.integers(0, 63)),
    st.sampled_from(["Ascend 910B3", "Mcu", "Ascend 310P3", "Ascend910"]),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(map_row, max_size=10), st.sampled_from(["\t", "", "  "]))
def test_generated_chip_maps_parse_back(rows, indent):
    """``-m`` tables in the recorded shape (header, whitespace columns, '-' for no logic id) read back
    exactly, whatever the indent (one published sample starts each line with a tab)."""
    lines = [f"{indent}NPU ID       Chip ID       Chip Logic ID       Chip Name"]
    lines += [f"{indent}{n:<13}{c:<14}{'-' if logic is None else logic:<20}{name}" for n, c, logic, name in rows]
    assert parse_chip_map("\n".join(lines)) == [MapRow(n, c, logic, name) for n, c, logic, name in rows]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes_the_chip_map_parser(text):
    assert all(r.npu_id >= 0 and r.chip_id >= 0 for r in parse_chip_map(text))
