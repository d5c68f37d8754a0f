"""The core's conformance kit, run against the cambricon backend."""

from __future__ import annotations

import pytest

from hami.testing.conformance import BackendConformance
from hami_cambricon.plugin import plugin


class TestCambriconConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin

    @pytest.fixture
    def backend_config(self, conformance_inventory):
        # a link between the two conformance cards, so node annotations and ring selection run
        return {"inventory": str(conformance_inventory), "mlulink": {0: [1], 1: [0]}}
