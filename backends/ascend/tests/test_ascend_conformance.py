"""The core's conformance kit, run against the ascend backend."""

from __future__ import annotations

import attrs
import pytest

from hami.sdk import Grant
from hami.testing.conformance import BackendConformance, sample_container, sample_pod
from hami.wire.codec import decode_pod_devices, encode_pod_devices
from hami_ascend.chips import packaged_table
from hami_ascend.plugin import plugin

MODULE_CHIPS = {vendor for vendor, chip in packaged_table().items() if chip.min_count > 1}


class TestAscendConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> object:
        return plugin

    def test_requests_round_trip_through_the_allocation_codec(self, manager, devices, backend_info) -> None:
        """The kit's check, except that a 910C container asking for one die is given a whole module.

        The kit asserts ``count == 1`` for a container asking for one device; Ascend910C allocates in
        modules of two dies (HAMi rounds 1 up to 2), so for it the kit's assumption does not hold.
        Every other kind runs through the kit's own code; 910C is checked with its module count.
        """
        assert {"Ascend910C"} == MODULE_CHIPS
        others = attrs.evolve(backend_info, kinds=[k for k in backend_info.kinds if k.vendor not in MODULE_CHIPS])
        super().test_requests_round_trip_through_the_allocation_codec(manager, devices, others)
        for kind in (k for k in backend_info.kinds if k.vendor in MODULE_CHIPS):
            container = sample_container(kind)
            (request,) = manager.container_requests(container, sample_pod(container))
            assert (request.vendor, request.count) == (kind.vendor, 2)
            split = [manager.split(d) for d in devices if d.vendor == kind.vendor]
            grants = [Grant(d.id, kind.vendor, request.memory_on(d), request.cores) for d in split[: request.count]]
            assert decode_pod_devices(encode_pod_devices([grants, []])) == (tuple(grants), ())
