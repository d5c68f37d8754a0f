"""The core's conformance kit, run against the ascend backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_ascend.plugin import plugin


class TestAscendConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
