"""cnmon parsing against recorded public samples, and discovery through a fake cnmon on PATH."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hami.sdk import NodeContext
from hami_cambricon import cnmon, discovery
from hami_cambricon.plugin import CambriconBackend


def test_bus_id_layout(read_recording):
    cards = cnmon.parse_table(read_recording("cnmon_mlu370-x8_v5.10.13.txt"))
    assert [(c.index, c.model, c.pci_bus_id, c.memory_total, c.firmware) for c in cards] == [
        (0, "MLU370-X8", "0000:39:00.0", 23374, "v1.1.6"),
        (1, "MLU370-X8", "0000:3d:00.0", 23374, "v1.1.6"),
    ]
    assert cards[0].version == "v5.10.13"


def test_inited_driver_layout(read_recording):
    cards = cnmon.parse_table(read_recording("cnmon_mlu370-x4_v4.20.11.txt"))
    assert [(c.index, c.model, c.pci_bus_id, c.memory_total) for c in cards] == [(i, "MLU370-X4", None, 23308) for i in range(3)]


def test_mode_column_layout(read_recording):
    cards = cnmon.parse_table(read_recording("cnmon_mlu370-x8_v5.10.22.txt"))
    assert [(c.pci_bus_id, c.memory_total) for c in cards] == [("0000:13:00.0", 20638), ("0000:16:00.0", 20638)]


def test_unparseable_line_is_a_warning_naming_it(read_recording, caplog):
    text = read_recording("cnmon_mlu370-x8_v5.10.13.txt").replace("|  0%   39C", "| weird row from a new driver |\n|  0%   39C", 1)
    with caplog.at_level(logging.WARNING):
        cards = cnmon.parse_table(text)
    assert len(cards) == 2 and "weird row from a new driver" in caplog.text


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("|+-=0123456789 MiB/:.CNMONvWCard\n")), max_size=500))
def test_parser_never_crashes(text):
    cnmon.parse_table(text)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"\AMLU[0-9]{3}-[A-Z][0-9]\Z"), st.integers(1, 99999)), min_size=1, max_size=8))
def test_generated_tables_round_trip(cards):
    lines = ["| Card  VF  Name       Firmware |               Bus-Id | Util        Ecc-Error |", "|===|===|===|"]
    for i, (model, memory) in enumerate(cards):
        lines.append(f"| {i}     /   {model}    v1.1.6 |         0000:{i:02X}:00.0 | 0%                N/A |")
        lines.append(f"|  0%   32C        106 W/ 250 W |     0 MiB/ {memory} MiB | N/A           Default |")
        lines.append("+-------------------------------+----------------------+-----------------------+")
    parsed = cnmon.parse_table("\n".join(lines))
    assert [(c.index, c.model, c.memory_total) for c in parsed] == [(i, m, mem) for i, (m, mem) in enumerate(cards)]


def test_discovery_through_fake_cnmon(fake_tools):
    fake_tools.install("cnmon", {"": "cnmon_mlu370-x8_v5.10.13.txt"})
    devices = discovery.discover({"cnmon": "cnmon"}, NodeContext("mlu-node"))
    assert [(d.id, d.type, d.memory, d.index) for d in devices] == [
        ("mlu-node-cambricon-mlu-0", "MLU370-X8", 23374, 0),
        ("mlu-node-cambricon-mlu-1", "MLU370-X8", 23374, 1),
    ]
    assert devices[1].attributes["pci_bus_id"] == "0000:3d:00.0"
    assert fake_tools.calls("cnmon") == [[]]


def test_missing_cnmon_means_no_devices(fake_tools, caplog):
    with caplog.at_level(logging.INFO):
        assert discovery.discover({"cnmon": "cnmon"}, NodeContext("n")) == []
    assert "not found on PATH" in caplog.text
    assert all(r.levelno < logging.WARNING for r in caplog.records), "an absent tool is not a warning"  # quiet `hami devices`


def test_health_follows_the_table(fake_tools):
    backend = CambriconBackend()
    fake_tools.install("cnmon", {"": "cnmon_mlu370-x4_v4.20.11.txt"})
    node = NodeContext("n")
    devices = backend.hami_discover_devices({}, node)
    assert len(devices) == 3 and backend.hami_device_health(devices, {}, node) == []
    assert backend.hami_device_health(devices, {}, NodeContext("n", simulated=True)) == []
    fake_tools.install("cnmon", {"": "cnmon_mlu370-x8_v5.10.13.txt"})  # card 2 gone
    (event,) = backend.hami_device_health(devices, {}, node)
    assert (event.device_id, event.healthy) == ("n-cambricon-mlu-2", False)


def test_card_without_memory_total_is_listed_unadvertised(read_recording, hami_manager, register_backend, tmp_path, monkeypatch):
    """A card whose memory cell cnmon leaves out (derived from a genuine recording: card 1's memory
    cell blanked, which no public output shows) is seen, not advertised, and says why."""
    from hami_cambricon.plugin import CambriconBackend

    text = read_recording("cnmon_mlu370-x8_v5.10.13.txt")
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| 1 ")) + 1
    lines[at] = lines[at].replace("0 MiB/ 23374 MiB", "     N/A        ")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "cnmon").write_text("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n")
    (tmp_path / "bin" / "cnmon").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    register_backend(CambriconBackend())
    advertised = hami_manager.discover("cambricon", "n")
    seen = hami_manager.discover("cambricon", "n", unadvertised=True)
    assert 1 not in [d.index for d in advertised] and len(seen) == len(advertised) + 1
    (unsized,) = [d for d in seen if not d.advertised]
    assert (unsized.index, unsized.memory) == (1, 0) and "memory unknown" in unsized.reason


# recording -> (index, model, bus id, memory total) of every card it shows (None: cnmon printed no figure)
RECORDED = {
    "cnmon_mlu370-x4_v4.20.11.txt": [(i, "MLU370-X4", None, 23308) for i in range(3)],
    "cnmon_mlu370-x8_v5.10.13.txt": [(0, "MLU370-X8", "0000:39:00.0", 23374), (1, "MLU370-X8", "0000:3d:00.0", 23374)],
    "cnmon_mlu370-x8_v5.10.22.txt": [(0, "MLU370-X8", "0000:13:00.0", 20638), (1, "MLU370-X8", "0000:16:00.0", 20638)],
    "cnmon_mluxxx_v5.10.31_redacted.txt": [
        (i, "MLUXXX-XX", bus, None)
        for i, bus in enumerate(
            ["0000:4f:00.0", "0000:53:00.0", "0000:6f:00.0", "0000:73:00.0", "0000:af:00.0", "0000:b3:00.0", "0000:cf:00.0", "0000:d3:00.0"]
        )
    ],
}


def test_every_recording_has_an_expectation():
    from pathlib import Path

    assert set(RECORDED) == {p.name for p in (Path(__file__).parent / "fixtures").glob("*.txt")}


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_recorded_card_is_read_exactly(name, read_recording, caplog):
    """Each card of each recording, nothing from the Processes table, and no line left unexplained."""
    with caplog.at_level(logging.WARNING):
        cards = cnmon.parse_table(read_recording(name))
    assert [(c.index, c.model, c.pci_bus_id, c.memory_total) for c in cards] == RECORDED[name]
    assert "cnmon_unparsed_line" not in caplog.text


def test_redacted_memory_keeps_every_card_listed_unadvertised(fake_tools, hami_manager, register_backend):
    """PaddleNLP's 8-card sample with the totals redacted to 'xxxxx MiB': before, each card's memory
    line was a warning and the next card's row replaced it, so 7 of 8 cards vanished silently."""
    fake_tools.install("cnmon", {"": "cnmon_mluxxx_v5.10.31_redacted.txt"})
    register_backend(CambriconBackend())
    assert hami_manager.discover("cambricon", "n") == []
    seen = hami_manager.discover("cambricon", "n", unadvertised=True)
    assert [(d.index, d.type, d.memory, d.advertised) for d in seen] == [(i, "MLUXXX-XX", 0, False) for i in range(8)]
    assert seen[3].reason == (
        "memory unknown: cnmon printed no memory total for card 3 (its Memory-Usage cell reads '0 MiB/ xxxxx MiB'); the card is listed, not advertised"
    )


def test_a_card_whose_memory_line_is_missing_is_kept(read_recording, caplog):
    """Derived from the v5.10.22 recording with card 0's second line removed (not published)."""
    lines = read_recording("cnmon_mlu370-x8_v5.10.22.txt").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| 0 ")) + 1
    del lines[at]
    with caplog.at_level(logging.WARNING):
        cards = cnmon.parse_table("\n".join(lines))
    assert [(c.index, c.memory_total, c.memory_text) for c in cards] == [(0, None, ""), (1, 20638, "")]
    assert "event=cnmon_card_without_memory card=0" in caplog.text


def test_the_readme_lists_every_recording():
    from pathlib import Path

    here = Path(__file__).parent
    readme = (here.parent / "README.md").read_text()
    for path in sorted((here / "fixtures").glob("*.txt")):
        assert f"`{path.name}`" in readme, f"backends/cambricon/README.md does not list {path.name}"
        assert path.read_text().startswith("# source: "), f"{path.name} has no '# source:' header"


def test_hami_devices_lists_the_redacted_cards(fake_tools, monkeypatch):
    import json

    from click.testing import CliRunner

    from hami.node.cli import devices_command
    from hami.plugin.manager import BackendManager

    def loaded(**kwargs):
        manager = BackendManager(allow=(), deny=())
        manager.register(CambriconBackend(), name="cambricon")
        return manager

    monkeypatch.setattr("hami.plugin.manager.load_backends", loaded)
    fake_tools.install("cnmon", {"": "cnmon_mluxxx_v5.10.31_redacted.txt"})
    result = CliRunner().invoke(devices_command, ["--json", "--node-name", "n"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["index"], r["advertised"], r["memory_mib"]) for r in rows] == [(i, False, None) for i in range(8)]
    assert all("'0 MiB/ xxxxx MiB'" in r["reason"] for r in rows)
