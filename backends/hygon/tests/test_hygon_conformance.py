"""The core's conformance kit, run against the hygon backend (vDCU configs under a temporary root)."""

from __future__ import annotations

import attrs
import pytest

from hami.testing.conformance import BackendConformance
from hami_hygon.plugin import INFO, HygonBackend


class TestHygonConformance(BackendConformance):
    @pytest.fixture
    def vdev_root(self, tmp_path):
        return tmp_path / "vdev"

    @pytest.fixture
    def backend(self, vdev_root) -> object:
        # host paths are declared statically; the test instance also declares its temporary vdev root
        return HygonBackend(attrs.evolve(INFO, host_paths=(*INFO.host_paths, str(vdev_root))))

    @pytest.fixture
    def backend_config(self, conformance_inventory, vdev_root):
        return {"inventory": str(conformance_inventory), "vdev_root": str(vdev_root)}

    def test_prepare_left_nothing_behind(self, manager, devices, backend_info, node, vdev_root):
        """A simulated node keeps its vdev configs in the node's state directory, never in vdev_root."""
        self.test_runtime_hooks_stay_within_declared_host_paths(manager, devices, backend_info, node)
        store = node.state_dir / "vdev"
        assert store.is_dir() and not list(store.glob("vdev*.conf")) and not vdev_root.exists()
