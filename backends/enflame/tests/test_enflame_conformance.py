"""The core's conformance kit, run against the enflame backend (both kinds: whole GCUs and DRS cards)."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_enflame.plugin import plugin


class TestEnflameConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin
