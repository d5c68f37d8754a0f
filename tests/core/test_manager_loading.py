"""Loading backends from installed distributions: a broken one never takes the others down."""

from __future__ import annotations

import re

import pytest

from hami.errors import BackendError, DuplicateVendorError
from hami.plugin.manager import BackendManager

GROUP = "hami.backends.loadertest"

BACKEND_SOURCE = """
from hami import hookimpl
from hami.plugin.model import AnnotationKeys, BackendInfo, DeviceKind, ResourceNames

@hookimpl
def hami_backend():
    return BackendInfo(name={name!r}, kinds=[DeviceKind(
        vendor={vendor!r},
        resources=ResourceNames(count="{domain}/npu"),
        annotations=AnnotationKeys.hami("hami.io/node-{name}-register", "hami.io/node-handshake-{name}", "hami.io/{name}"),
    )])
"""


def backend_source(name: str, vendor: str, domain: str | None = None) -> str:
    return BACKEND_SOURCE.format(name=name, vendor=vendor, domain=domain or f"{name}.example.com")


@pytest.fixture
def installed(fake_distribution, monkeypatch):
    for variable in ("HAMI_STRICT_PLUGINS", "HAMI_BACKENDS", "HAMI_DISABLED_BACKENDS"):
        monkeypatch.delenv(variable, raising=False)
    fake_distribution("hami-good", "1.2.0", {GROUP: {"good": "loadtest_good"}}, {"loadtest_good.py": backend_source("good", "GOOD")})
    fake_distribution("hami-broken", "0.3.1", {GROUP: {"broken": "loadtest_broken"}}, {"loadtest_broken.py": "import not_a_real_sdk\n"})
    fake_distribution("hami-twin", "9.9.9", {GROUP: {"twin": "loadtest_twin"}}, {"loadtest_twin.py": backend_source("twin", "GOOD")})
    return fake_distribution


def by_name(manager: BackendManager) -> dict:
    return {r.name: r for r in manager.records if not r.builtin}


def test_broken_and_duplicate_are_recorded_and_the_good_one_serves(installed):
    manager = BackendManager()
    manager.load_entry_points(GROUP)
    records = by_name(manager)
    assert records["good"].status == "ok"
    assert (records["good"].distribution, records["good"].version) == ("hami-good", "1.2.0")
    assert manager.owner("GOOD").name == "good"

    broken = records["broken"]
    assert (broken.status, broken.distribution, broken.version) == ("failed", "hami-broken", "0.3.1")
    assert "ModuleNotFoundError" in broken.error and "not_a_real_sdk" in broken.error

    twin = records["twin"]
    assert twin.status == "failed"
    assert "'GOOD'" in twin.error and "hami-good 1.2.0" in twin.error and "hami-twin 9.9.9" in twin.error
    # the loser left nothing behind: its hooks are not registered
    assert [p for p in manager.pm.get_plugins() if getattr(p, "__name__", "") == "loadtest_twin"] == []


def test_strict_mode_raises_on_the_first_failure(installed, monkeypatch):
    monkeypatch.setenv("HAMI_STRICT_PLUGINS", "1")
    with pytest.raises(BackendError, match="not_a_real_sdk"):
        BackendManager().load_entry_points(GROUP)


def test_strict_mode_raises_the_duplicate_vendor_error(installed, monkeypatch):
    monkeypatch.setenv("HAMI_STRICT_PLUGINS", "true")
    monkeypatch.setenv("HAMI_DISABLED_BACKENDS", "broken")
    with pytest.raises(DuplicateVendorError, match=re.escape("hami-good 1.2.0 and hami-twin 9.9.9")):
        BackendManager().load_entry_points(GROUP)


def test_allow_list_by_entry_point_or_distribution_name(installed, monkeypatch):
    monkeypatch.setenv("HAMI_BACKENDS", "hami-twin, good")
    manager = BackendManager()
    manager.load_entry_points(GROUP)
    statuses = {name: r.status for name, r in by_name(manager).items()}
    assert statuses == {"broken": "disabled", "twin": "failed", "good": "ok"}


def test_deny_list_wins(installed, monkeypatch):
    monkeypatch.setenv("HAMI_DISABLED_BACKENDS", "good,broken")
    manager = BackendManager()
    manager.load_entry_points(GROUP)
    statuses = {name: r.status for name, r in by_name(manager).items()}
    assert statuses == {"broken": "disabled", "twin": "ok", "good": "disabled"}
    assert manager.owner("GOOD").name == "twin"


def test_misspelled_hook_fails_that_backend_only(fake_distribution, monkeypatch):
    monkeypatch.delenv("HAMI_STRICT_PLUGINS", raising=False)
    source = backend_source("typo", "TYPO") + "\n@hookimpl\ndef hami_discover_device(config, node_name):\n    return []\n"
    fake_distribution("hami-typo", "1.0", {GROUP: {"typo": "loadtest_typo"}}, {"loadtest_typo.py": source})
    fake_distribution("hami-fine", "1.0", {GROUP: {"fine": "loadtest_fine"}}, {"loadtest_fine.py": backend_source("fine", "FINE")})
    manager = BackendManager(allow=None, deny=())
    manager.load_entry_points(GROUP)
    records = by_name(manager)
    assert records["typo"].status == "failed" and "hami_discover_device" in records["typo"].error
    assert records["fine"].status == "ok"
    manager.check_pending()  # nothing unspecified is left registered


def test_unmarked_hook_function_is_reported(hami_manager):
    class Forgetful:
        def hami_backend(self):  # no @hookimpl: pluggy would silently ignore it
            raise AssertionError("never called")

    with pytest.raises(BackendError, match=re.escape("hami_backend is not marked with @hami.hookimpl")):
        hami_manager.register(Forgetful())


def test_wrong_identity_type_names_the_plugin(hami_manager):
    from hami import hookimpl

    class Sloppy:
        @hookimpl
        def hami_backend(self):
            return {"name": "sloppy"}

    with pytest.raises(BackendError, match=re.escape("backend 'sloppy', hami_backend: returned {'name': 'sloppy'}, expected BackendInfo")):
        hami_manager.register(Sloppy(), name="sloppy")


def test_two_backends_may_not_serve_one_resource_name(hami_manager, fake_distribution):
    import importlib

    fake_distribution(
        "x",
        "1",
        {},
        {
            "loadtest_res_a.py": backend_source("a", "A", "shared.example.com"),
            "loadtest_res_b.py": backend_source("b", "B", "shared.example.com"),
        },
    )
    hami_manager.register(importlib.import_module("loadtest_res_a"))
    with pytest.raises(BackendError, match=re.escape("'shared.example.com/npu' of 'B' is already served by vendor 'A'")):
        hami_manager.register(importlib.import_module("loadtest_res_b"))


def test_unknown_vendor_names_what_is_installed(hami_manager):
    with pytest.raises(BackendError, match="no installed backend owns vendor key 'NOPE'"):
        hami_manager.owner("NOPE")


def test_installed_backends_load_in_strict_mode():
    """The four backends of this repository are installed (README's set-up) and load cleanly."""
    manager = BackendManager(strict=True, allow=None, deny=())
    manager.load_entry_points()
    assert {"nvidia", "ascend", "cambricon", "hygon"} <= set(manager.backends)
