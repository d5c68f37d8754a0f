"""The core's conformance kit, run against the awsneuron backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_awsneuron.plugin import plugin


class TestNeuronConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
