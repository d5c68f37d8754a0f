"""pytest fixtures for the fake kubelet (re-exported by the ``hami.testing`` plugin).

Unix socket paths must stay under 108 bytes, so the plugin directory is a short ``/tmp/hk*`` directory
rather than pytest's long ``tmp_path``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami.fakes.kubelet import FakeKubelet


@pytest.fixture
def kubelet_dir() -> Iterator[Path]:
    """A fresh, short device plugin directory (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="hk", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_kubelet(kubelet_dir: Path) -> Iterator[FakeKubelet]:
    """A started :class:`FakeKubelet` serving ``kubelet.sock`` in :func:`kubelet_dir`, without an API server."""
    kubelet = FakeKubelet(kubelet_dir)
    kubelet.start()
    try:
        yield kubelet
    finally:
        kubelet.stop()
