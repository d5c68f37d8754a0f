"""Fixtures for testing backends in-process, without installing them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hami.plugin.manager import BackendManager, BackendRecord


@pytest.fixture
def hami_manager() -> Iterator[BackendManager]:
    """A fresh, strict manager with only the core's built-in plugins: no installed backend leaks in."""
    yield BackendManager(strict=True, allow=(), deny=())


@pytest.fixture
def register_backend(hami_manager: BackendManager) -> Callable[..., BackendRecord]:
    """``register_backend(plugin, config=None, name=None)`` registers ``plugin`` in ``hami_manager``.

    Strict: a contract breach raises instead of being recorded, so the test sees it.
    """

    def register(plugin: object, config: dict[str, Any] | None = None, name: str | None = None) -> BackendRecord:
        record = hami_manager.register(plugin, name=name, distribution="in-process")
        if config is not None and record.info is not None:
            hami_manager.configure(record.info.name, config)
        return record

    return register


@pytest.fixture
def fake_distribution(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``fake_distribution(name, version, entry_points, modules)`` installs a distribution the way pip
    would leave it (a ``*.dist-info`` beside its modules on ``sys.path``), for loader tests.

    ``entry_points`` maps a group to ``{entry point name: "module:attr"}``; ``modules`` maps a
    module file name to its source.
    """
    import importlib
    import sys

    site = tmp_path / "site-packages"
    site.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(site))
    created: list[str] = []

    def install(name: str, version: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> Any:
        for filename, source in modules.items():
            (site / filename).write_text(source)
            created.append(filename.removesuffix(".py"))
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = []
        for group, points in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{ep} = {target}" for ep, target in points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        importlib.invalidate_caches()
        return info

    yield install
    for module in created:
        sys.modules.pop(module, None)
