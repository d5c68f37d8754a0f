"""Hard-split rounding for every chip, the user template file, 910C counts and the 310P vNPU limit."""

from __future__ import annotations

import re

import pytest

from hami.sdk import (
    BackendError,
    DeviceRequest,
    DeviceUsage,
    PhysicalDevice,
    RequestError,
    SchedulableDevice,
)
from hami_ascend.chips import chip_table, classify, packaged_table
from hami_ascend.plugin import CHIPS, plugin

WHOLE = ""
# chip -> [(requested MiB, expected MiB, expected template, expected core %)]
ROUNDING = {
    "Ascend910A": [
        (1, 2184, "vir02", 7),
        (2184, 2184, "vir02", 7),
        (2185, 4369, "vir04", 14),
        (8000, 8738, "vir08", 27),
        (17476, 17476, "vir16", 54),
        (17477, 32768, WHOLE, 100),
    ],
    "Ascend910B2": [
        (1000, 8192, "vir03_1c_8g", 13),
        (8193, 16384, "vir06_1c_16g", 25),
        (32768, 32768, "vir12_3c_32g", 50),
        (40000, 65536, WHOLE, 100),
    ],
    "Ascend910B3": [(1, 16384, "vir05_1c_16g", 25), (16385, 32768, "vir10_3c_32g", 50), (32769, 65536, WHOLE, 100)],
    "Ascend910B4": [(4096, 8192, "vir05_1c_8g", 25), (9000, 16384, "vir10_3c_16g", 50), (16385, 32768, WHOLE, 100)],
    "Ascend910B4-1": [(4096, 16384, "vir05_1c_16g", 25), (20000, 32768, "vir10_3c_32g", 50), (32769, 65536, WHOLE, 100)],
    "Ascend910C": [(100, 16384, "vir05_1c_16g", 25), (32768, 32768, "vir10_3c_32g", 50), (60000, 65536, WHOLE, 100)],
    "Ascend310P": [(1, 3072, "vir01", 13), (3073, 6144, "vir02", 25), (12288, 12288, "vir04", 50), (12289, 21527, WHOLE, 100)],
}
CASES = [(chip, *case) for chip, cases in ROUNDING.items() for case in cases]


def usage(chip, memory=None, used=0, id_="d0"):
    whole = memory or packaged_table()[chip].memory
    return DeviceUsage(SchedulableDevice(id=id_, vendor=chip, type=chip, count=7, memory=whole, cores=100), used=used)


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(plugin)
    return hami_manager


def test_the_table_covers_every_declared_chip():
    assert set(packaged_table()) == set(CHIPS) == set(ROUNDING)


@pytest.mark.parametrize(("chip", "asked", "memory", "template", "cores"), CASES)
def test_memory_rounds_up_to_the_smallest_template_else_the_whole_chip(manager, chip, asked, memory, template, cores):
    normalized = manager.normalize(DeviceRequest(chip, memory=asked), usage(chip), {})
    assert (normalized.memory, normalized.attributes["template"], normalized.cores) == (memory, template, cores)
    assert normalized.memory_percentage is None and normalized.vendor == chip


@pytest.mark.parametrize("chip", sorted(ROUNDING))
def test_no_memory_or_several_chips_mean_whole_chips(manager, chip):
    whole = manager.normalize(DeviceRequest(chip, memory_percentage=100), usage(chip), {})
    several = manager.normalize(DeviceRequest(chip, count=2, memory=1024), usage(chip), {})
    for request in (whole, several):
        assert (request.memory, request.cores, request.attributes["template"]) == (packaged_table()[chip].memory, 100, WHOLE)


def test_a_core_request_picks_a_template_with_enough_cores(manager):
    normalized = manager.normalize(DeviceRequest("Ascend910B3", memory=1024, cores=30), usage("Ascend910B3"), {})
    assert (normalized.attributes["template"], normalized.cores) == ("vir10_3c_32g", 50)


def test_soft_split_keeps_the_request_as_asked(manager):
    pod = {"metadata": {"annotations": {"huawei.com/vnpu-mode": "hami-core"}}}
    request = DeviceRequest("Ascend910B3", memory=5000, cores=30)
    assert manager.normalize(request, usage("Ascend910B3"), pod) == request


def test_a_user_templates_file_replaces_a_chip_by_common_word(manager, tmp_path, register_backend, hami_manager):
    path = tmp_path / "templates.yaml"
    path.write_text(
        "vnpus:\n"
        "  - commonWord: Ascend910B3\n    memoryAllocatable: 65536\n    aiCore: 20\n"
        "    templates:\n      - {name: vir02_tiny, memory: 4096, aiCore: 2}\n"
        "  - commonWord: Ascend999Z\n    memoryAllocatable: 1024\n"
    )
    hami_manager.configure("ascend", {"templates_file": str(path)})
    normalized = hami_manager.normalize(DeviceRequest("Ascend910B3", memory=1000), usage("Ascend910B3"), {})
    assert (normalized.memory, normalized.attributes["template"], normalized.cores) == (4096, "vir02_tiny", 10)
    unchanged = hami_manager.normalize(DeviceRequest("Ascend910B4", memory=1000), usage("Ascend910B4"), {})
    assert unchanged.attributes["template"] == "vir05_1c_8g"
    assert "Ascend999Z" not in chip_table({"templates_file": str(path)})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("vnpus: 3\n", "expected a 'vnpus' list"),
        ("vnpus:\n  - commonWord: Ascend910B3\n    memoryAllocatable: -1\n", "memoryAllocatable=-1"),
        ("vnpus:\n  - commonWord: Ascend910B3\n    memoryAllocatable: 1\n    templates: [{name: x}]\n", "templates[0].memory=None"),
        ("vnpus:\n  - commonWord: Ascend910B3\n    memoryAllocatable: 1\n    colour: red\n", "unknown key(s) ['colour']"),
        ("vnpus: [\n", "is not valid YAML"),
    ],
)
def test_a_bad_templates_file_is_an_error_naming_the_value(tmp_path, content, message):
    path = tmp_path / f"bad{abs(hash(content))}.yaml"
    path.write_text(content)
    with pytest.raises(BackendError) as caught:
        chip_table({"templates_file": str(path)})
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_templates_file_names_the_path():
    with pytest.raises(BackendError, match=re.escape("templates_file '/nonexistent/t.yaml'")):
        chip_table({"templates_file": "/nonexistent/t.yaml"})


@pytest.mark.parametrize(
    ("name", "hbm", "chip"),
    [
        ("910A", 32768, "Ascend910A"),
        ("910B", 32768, "Ascend910A"),
        ("910B2", 65536, "Ascend910B2"),
        ("910B3", 65536, "Ascend910B3"),
        ("910B4", 32768, "Ascend910B4"),
        ("910B4", 65536, "Ascend910B4-1"),
        ("910B4-1", 65536, "Ascend910B4-1"),
        ("Ascend910", 65536, "Ascend910C"),
        ("310P3", 21534, "Ascend310P"),
        ("910B1", 65536, None),
        ("310", 7759, None),
    ],
)
def test_npu_smi_names_map_to_chips(name, hbm, chip):
    found = classify(packaged_table(), name, hbm)
    assert (found.vendor if found else None) == chip


# ------------------------------------------------------------ 910C counts, 310P limit, UUID selectors


def requests_for(manager, limits, annotations=None):
    container = {"name": "c", "resources": {"limits": limits}}
    return manager.container_requests(container, {"metadata": {"annotations": annotations or {}}})


@pytest.mark.parametrize(("asked", "granted"), [("1", 2), ("2", 2), ("4", 4), ("8", 8)])
def test_910c_counts_come_in_modules(manager, asked, granted):
    (request,) = requests_for(manager, {"huawei.com/Ascend910C": asked})
    assert request.count == granted


@pytest.mark.parametrize("asked", ["3", "5", "7"])
def test_odd_910c_counts_above_one_are_rejected(manager, asked):
    with pytest.raises(RequestError) as caught:
        requests_for(manager, {"huawei.com/Ascend910C": asked})
    assert f"huawei.com/Ascend910C={asked}" in str(caught.value) and "multiple of 2" in str(caught.value)


def test_910c_only_memory_defaults_two_dies_at_admission(manager):
    patch = manager.mutate_container({"name": "c", "resources": {"limits": {"huawei.com/Ascend910C-memory": "1000"}}}, {})
    assert patch.limits == {"huawei.com/Ascend910C": "2"}
    warned = manager.mutate_container({"name": "c", "resources": {"limits": {"huawei.com/Ascend910C": "1"}}}, {})
    assert any("rounded up to 2" in w for w in warned.warnings)


def test_other_chips_are_not_rounded(manager):
    (request,) = requests_for(manager, {"huawei.com/Ascend910B3": "1"})
    assert request.count == 1


def test_at_most_seven_vnpus_per_310p_chip(manager):
    request = manager.normalize(DeviceRequest("Ascend310P", memory=1000), usage("Ascend310P"), {})
    assert manager.device_fits(request, usage("Ascend310P", used=6), {}) is None
    assert manager.device_fits(request, usage("Ascend310P", used=7), {}) == "CardVnpuLimitReached"


def test_310p_split_is_capped_even_when_the_operator_asks_for_more(manager, hami_manager):
    hami_manager.configure("ascend", {"split_count": 10})
    assert hami_manager.split(PhysicalDevice(id="p", vendor="Ascend310P", type="Ascend310P", memory=21527)).count == 7
    assert hami_manager.split(PhysicalDevice(id="b", vendor="Ascend910B3", type="Ascend910B3", memory=65536)).count == 10


def test_uuid_selectors(manager):
    request = DeviceRequest("Ascend910B3", memory=1000)
    use = {"metadata": {"annotations": {"hami.io/use-Ascend910B3-uuid": "d1, d2"}}}
    nouse = {"metadata": {"annotations": {"hami.io/no-use-Ascend910B3-uuid": "d0"}}}
    assert manager.device_fits(request, usage("Ascend910B3"), use) == "CardUuidMismatch"
    assert manager.device_fits(request, usage("Ascend910B3", id_="d2"), use) is None
    assert manager.device_fits(request, usage("Ascend910B3"), nouse) == "CardUuidMismatch"
    assert manager.device_fits(request, usage("Ascend910B3", id_="d1"), nouse) is None
    other_chip = {"metadata": {"annotations": {"hami.io/use-Ascend310P-uuid": "zzz"}}}
    assert manager.device_fits(request, usage("Ascend910B3"), other_chip) is None
