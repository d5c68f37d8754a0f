"""The core's conformance kit, run against the mthreads backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_mthreads.plugin import plugin


class TestMthreadsConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
