"""vdev configs and CU masks: format, idempotence, restart safety, and masks that never overlap."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from hami.sdk import BackendError
from hami_hygon import cumask
from hami_hygon.vdev import CONTAINER_FILE, PhysicalDcu, VdevConf, VdevStore

DCU0 = PhysicalDcu(index=0, pci_bus_id="0000:05:00.0", compute_units=60, memory=16368)
DCU1 = PhysicalDcu(index=1, pci_bus_id="0000:2b:00.0", compute_units=120, memory=65520)


def test_conf_format_matches_hamis_plugin(tmp_path):
    store = VdevStore(tmp_path)
    conf = store.create("uid-1_main", DCU0, 15, 2000)
    assert (conf.cu_count, conf.cu_mask, conf.vdev_id, conf.pipe_id) == (9, 0x1FF, 0, 0)
    assert (tmp_path / "vdev0.conf").read_text() == (
        "PciBusId: 0000:05:00.0\ncu_mask: 0x00000000000001ff\ncu_mask: 0x0000000000000000\ncu_count: 9\n"
        "mem: 2000 MiB\ndevice_id: 0\nvdev_id: 0\npipe_id: 0\nenable: 1\n"
    )
    mounted = (tmp_path / "containers" / "uid-1_main" / CONTAINER_FILE).read_text()
    assert "device_id: 0\n" in mounted and VdevConf.parse(mounted, "x") == conf


def test_second_container_gets_disjoint_units_and_next_ids(tmp_path):
    store = VdevStore(tmp_path)
    first = store.create("a_c", DCU1, 50, 1000)
    second = store.create("b_c", DCU1, 50, 1000)
    assert first.cu_mask & second.cu_mask == 0
    assert bin(first.cu_mask | second.cu_mask).count("1") == 120  # both words used
    assert (second.vdev_id, second.pipe_id) == (1, 1)
    assert cumask.to_words(second.cu_mask)[1] != "0x0000000000000000"
    with pytest.raises(BackendError, match="compute units are free"):
        store.create("c_c", DCU1, 10, 1000)


def test_create_is_idempotent_and_state_survives_a_restart(tmp_path):
    first = VdevStore(tmp_path).create("a_c", DCU0, 30, 1000)
    assert VdevStore(tmp_path).create("a_c", DCU0, 30, 1000) == first  # kubelet retry
    after_restart = VdevStore(tmp_path).create("b_c", DCU0, 30, 1000)
    assert after_restart.cu_mask & first.cu_mask == 0 and after_restart.vdev_id == 1


def test_an_unreadable_config_is_released_anyway(tmp_path, caplog):
    store = VdevStore(tmp_path)
    store.create("a_c", DCU0, 30, 1000)
    (store.container_dir("a_c") / CONTAINER_FILE).write_text("not a vdev config\n")
    with pytest.raises(BackendError):
        store.owned("a_c")
    assert store.releasable("a_c") is None and "vdev_unreadable" in caplog.text
    store.remove("a_c")
    assert not store.container_dir("a_c").exists()


def test_remove_frees_units_ids_and_files(tmp_path):
    store = VdevStore(tmp_path)
    first = store.create("a_c", DCU0, 100, 1000)
    assert store.remove("a_c") == first
    assert not list(tmp_path.glob("vdev*.conf")) and not (tmp_path / "containers" / "a_c").exists()
    assert store.remove("a_c") is None  # idempotent
    assert store.create("b_c", DCU0, 100, 1000).cu_mask == first.cu_mask


def test_unwritable_root_is_a_backend_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BackendError, match="not writable"):
        VdevStore(blocker / "vdev").create("a_c", DCU0, 10, 100)


def test_malformed_conf_is_skipped_with_a_warning(tmp_path, caplog):
    (tmp_path / "vdev7.conf").write_text("PciBusId: x\n")
    assert VdevStore(tmp_path).existing() == {}
    assert "vdev7.conf" in caplog.text


@pytest.mark.parametrize("cores,units,expected", [(15, 60, 9), (60, 60, 36), (100, 120, 120), (0, 60, 1), (1, 60, 1)])
def test_units_for(cores, units, expected):
    assert cumask.units_for(cores, units) == expected


@given(st.integers(0, 2**128 - 1))
def test_words_round_trip(mask):
    assert cumask.from_words(cumask.to_words(mask)) == mask


@given(st.integers(0, 2**120 - 1), st.integers(1, 120))
def test_allocate_takes_only_free_units(used, count):
    free = 120 - bin(used).count("1")
    if count > free:
        with pytest.raises(BackendError):
            cumask.allocate(used, 120, count)
        return
    mask = cumask.allocate(used, 120, count)
    assert mask & used == 0 and bin(mask).count("1") == count and mask < 2**120


class VdevMachine(RuleBasedStateMachine):
    """Random prepare/release sequences on two DCUs: masks, pipes and vdev ids never collide."""

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="vdev-"))
        self.counter = 0
        self.live: dict[str, VdevConf] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def store(self) -> VdevStore:
        return VdevStore(self.root)  # a fresh store each time: nothing may live in memory

    @rule(target=keys, device=st.sampled_from([DCU0, DCU1]), cores=st.integers(0, 100), memory=st.integers(1, 4096))
    def prepare(self, device, cores, memory):
        self.counter += 1
        key = f"pod{self.counter}_c"
        try:
            self.live[key] = self.store().create(key, device, cores, memory)
        except BackendError as exc:
            assert "compute units are free" in str(exc)
        return key

    @rule(key=keys)
    def retry(self, key):
        if key in self.live:
            assert self.store().create(key, DCU0, 1, 1) == self.live[key]

    @rule(key=consumes(keys))
    def release(self, key):
        removed = self.store().remove(key)
        assert removed == self.live.pop(key, None)

    @invariant()
    def no_overlap(self):
        confs = self.store().existing()
        assert {c.vdev_id for c in confs.values()} == {c.vdev_id for c in self.live.values()}
        for bus, units in ((DCU0.pci_bus_id, 60), (DCU1.pci_bus_id, 120)):
            on = [c for c in confs.values() if c.pci_bus_id == bus]
            seen = 0
            for conf in on:
                assert conf.cu_mask & seen == 0, "two vDCUs share a compute unit"
                assert bin(conf.cu_mask).count("1") == conf.cu_count and conf.cu_mask < 1 << units
                seen |= conf.cu_mask
            assert len({c.pipe_id for c in on}) == len(on)


TestVdevMachine = VdevMachine.TestCase
TestVdevMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
