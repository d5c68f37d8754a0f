"""The core's conformance kit, run against the cambricon backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_cambricon.plugin import plugin


class TestCambriconConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
