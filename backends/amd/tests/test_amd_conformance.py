"""The core's conformance kit, run against the amd backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_amd.plugin import plugin


class TestAmdConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
