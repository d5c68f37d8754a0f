"""The core's conformance kit, run against the hygon backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_hygon.plugin import plugin


class TestHygonConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
