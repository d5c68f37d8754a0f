"""pytest fixture ``extender_harness``: a started extender on the in-memory API server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes.client import CoreV1Api

from hami.fakes.extender import ExtenderHarness
from hami.plugin.manager import BackendManager


@pytest.fixture
def extender_harness(hami_manager: BackendManager, core_v1: CoreV1Api) -> Iterator[ExtenderHarness]:
    """A started extender (cache + HTTP) on the in-memory API server, using ``hami_manager``'s backends."""
    harness = ExtenderHarness(hami_manager, core_v1).start()
    yield harness
    harness.stop()
