"""The core's conformance kit, run against the nvidia backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_nvidia.plugin import plugin


class TestNvidiaConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
