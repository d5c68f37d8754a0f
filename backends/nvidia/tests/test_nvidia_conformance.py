"""The core's conformance kit, run against the nvidia backend (HAMi-core installed on a fake host root,
so the default isolation mode's edits can be built)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hami.testing.conformance import BackendConformance
from hami_nvidia.plugin import plugin


class TestNvidiaConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin

    @pytest.fixture
    def backend_config(self, conformance_inventory: Path, host_root: Path) -> dict[str, Any]:
        return {"inventory": str(conformance_inventory), "host_root": str(host_root)}
