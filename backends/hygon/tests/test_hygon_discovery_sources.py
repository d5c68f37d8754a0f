"""Memory and model from every source a real Hygon host offers, replayed from published outputs
(tests/fixtures, each with its source); a DCU that cannot be sized is listed unadvertised."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import NodeContext
from hami_hygon import discovery, hysmi

NO_SYS = {"sysfs_root": "/nonexistent-sys"}


@pytest.mark.parametrize(
    ("name", "count", "vram", "columns"),
    [
        ("hy-smi_k100ai_hcu8_idle.txt", 8, ["0%"] * 8, ["HCU", "Temp", "AvgPwr", "Perf", "PwrCap", "VRAM%", "HCU%", "Mode"]),
        ("hy-smi_k100ai_hcu8_busy.txt", 8, ["91%"] + ["90%"] * 7, ["HCU", "Temp", "AvgPwr", "Perf", "PwrCap", "VRAM%", "HCU%", "Mode"]),
        ("hy-smi_k100ai_hcu4.txt", 4, ["0%"] * 4, ["HCU", "Temp", "AvgPwr", "Perf", "PwrCap", "VRAM%", "HCU%", "Mode"]),
        ("hy-smi_bw1000_hcu2.txt", 2, ["0%"] * 2, ["HCU", "Temp", "AvgPwr", "Perf", "PwrCap", "VRAM%", "HCU%", "Dec%", "Enc%", "Mode"]),
    ],
)
def test_published_default_tables_parse_exactly(read_recording, caplog, name, count, vram, columns):
    with caplog.at_level(logging.WARNING):
        rows = hysmi.parse_table(read_recording(name))
    assert not caplog.records, caplog.text  # every line understood
    assert [r.index for r in rows] == list(range(count))
    assert [r.get("VRAM%") for r in rows] == vram
    assert [name for name, _ in rows[0].columns] == columns and all(r.get("Mode") == "Normal" for r in rows)


def test_table_cells_of_the_busy_k100ai(read_recording):
    rows = hysmi.parse_table(read_recording("hy-smi_k100ai_hcu8_busy.txt"))
    assert (rows[2].get("Temp"), rows[2].get("AvgPwr"), rows[2].get("PwrCap"), rows[2].get("HCU%")) == ("60.0C", "105.0W", "400.0W", "0.0%")
    bw = hysmi.parse_table(read_recording("hy-smi_bw1000_hcu2.txt"))
    assert (bw[1].get("AvgPwr"), bw[1].get("PwrCap"), bw[1].get("Enc%")) == ("89.0W", "1000.0W", "0.0%")


def test_showmemavailable_and_card_series(read_recording):
    available = hysmi.parse_memory_mib(read_recording("hy-smi_showmemavailable_k100ai8.txt"), hysmi.MEM_AVAILABLE)
    assert available == dict.fromkeys(range(8), 65438)
    series = hysmi.parse_indexed_values(read_recording("hy-smi_a_k100ai8_excerpt.txt"), "Card Series")
    assert series == dict.fromkeys(range(8), "K100_AI")


def test_memory_lines_units_and_na(caplog):
    """``--showmeminfo vram``: no complete public recording was found (see README); these lines follow
    the format quoted in public code comments, in MiB and (rocm-smi style) bytes, plus an N/A."""
    text = "\n".join(
        [
            "HCU[0]          : vram Total Memory (MiB): 65520",
            "HCU[0]          : vram Total Used Memory (MiB): 2",
            "DCU[1]          : vram Total Memory (B): 17163091968",
            "HCU[2]          : vram Total Memory (MiB): N/A",
        ]
    )
    with caplog.at_level(logging.WARNING):
        assert hysmi.parse_memory_mib(text, hysmi.MEMINFO_TOTAL) == {0: 65520, 1: 16368}
    assert "'N/A'" in caplog.text and "index=2" in caplog.text


def test_model_name_drops_csv_separators():
    assert hysmi.model_name("BW200, UBB BW1000") == "BW200 UBB BW1000"
    assert hysmi.model_name(" K100_AI ") == "K100_AI"


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.integers(0, 63), st.integers(1, 1 << 20), max_size=8), st.sampled_from(["HCU", "DCU"]))
def test_memory_round_trip(sizes, word):
    lines = [f"{word}[{i}]          : Available memory size (MiB): {mib}" for i, mib in sizes.items()]
    assert hysmi.parse_memory_mib("\n".join(["=" * 20, *lines, "=" * 20]), hysmi.MEM_AVAILABLE) == sizes


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_memory_parser_never_crashes(text):
    hysmi.parse_memory_mib(text, hysmi.MEMINFO_TOTAL)


def test_k100ai_host_without_virtualization_module(fake_tools):
    """The issue's case: table, --showmemavailable and -a published; nothing else answers."""
    fake_tools.install(
        "hy-smi",
        {
            "": "hy-smi_k100ai_hcu8_idle.txt",
            "--showmemavailable": "hy-smi_showmemavailable_k100ai8.txt",
            "-a": "hy-smi_a_k100ai8_excerpt.txt",
        },
    )
    devices = discovery.discover(dict(NO_SYS), NodeContext("k100"))
    expected = [(i, "DCU-K100_AI", 65438, True) for i in range(8)]
    assert [(d.index, d.type, d.memory, d.advertised) for d in devices] == expected
    assert fake_tools.calls("hy-smi") == [
        [],
        ["--showbus"],
        ["virtual", "-show-device-info"],
        ["--showmeminfo", "vram"],
        ["--showmemavailable"],
        ["--showproductname"],
        ["-a"],
    ]


def test_virtual_info_wins_and_later_queries_are_not_run(fake_tools):
    fake_tools.install(
        "hy-smi",
        {
            "": "hy-smi_k100lc.txt",
            "virtual -show-device-info": "hy-smi_virtual_show-device-info.txt",
            "--showmemavailable": "hy-smi_showmemavailable_k100ai8.txt",
            "--showproductname": "hy-smi_a_k100ai8_excerpt.txt",
        },
    )
    (device,) = discovery.discover(dict(NO_SYS), NodeContext("n"))
    assert (device.memory, device.type) == (2000, "DCU-K100_AI")
    assert ["--showmemavailable"] not in fake_tools.calls("hy-smi") and ["-a"] not in fake_tools.calls("hy-smi")


def test_config_is_the_last_memory_source(fake_tools):
    fake_tools.install("hy-smi", {"": "hy-smi_bw1000_hcu2.txt"})
    devices = discovery.discover({**NO_SYS, "memory_mib": 65520, "device_type": "DCU-BW1000"}, NodeContext("bw"))
    assert [(d.memory, d.type, d.advertised) for d in devices] == [(65520, "DCU-BW1000", True)] * 2


def test_unsizable_dcus_are_listed_unadvertised_with_what_to_do(fake_tools, hami_manager, register_backend):
    from hami_hygon.plugin import HygonBackend

    fake_tools.install("hy-smi", {"": "hy-smi_bw1000_hcu2.txt"})
    register_backend(HygonBackend(), config=dict(NO_SYS))
    assert hami_manager.discover("hygon", "bw") == []  # nothing to split or register
    seen = hami_manager.discover("hygon", "bw", unadvertised=True)
    assert [(d.index, d.memory, d.advertised) for d in seen] == [(0, 0, False), (1, 0, False)]
    assert "set memory_mib in the hygon config or install the virtualization module" in seen[0].reason
