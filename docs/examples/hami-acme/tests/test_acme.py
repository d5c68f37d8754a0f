import pytest

import hami_acme.plugin
from hami.sdk import DeviceRequest, DeviceUsage, SchedulableDevice
from hami.testing.conformance import BackendConformance


class TestAcmeConformance(BackendConformance):
    @pytest.fixture
    def backend(self):
        return hami_acme.plugin


def test_type_selector(hami_manager, register_backend):
    register_backend(hami_acme.plugin)
    device = DeviceUsage(SchedulableDevice(id="n0", vendor="ACME", type="ACME X1", count=4, memory=16384))
    pod = {"metadata": {"annotations": {"acme.com/use-npotype": "x2"}}}
    assert hami_manager.device_fits(DeviceRequest("ACME"), device, pod) == "CardTypeMismatch"
