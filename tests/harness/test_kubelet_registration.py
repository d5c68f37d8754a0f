"""Fake kubelet: registration, ListAndWatch, health updates and restart, over real gRPC unix sockets."""

from __future__ import annotations

import stat
from pathlib import Path

import grpc
import pytest

from hami.fakes.kubelet import FakeKubelet, SamplePlugin, is_extended_resource_name
from hami.node.deviceplugin import API_VERSION, HEALTHY, KUBELET_SOCKET, UNHEALTHY
from hami.node.deviceplugin.v1beta1 import api_pb2

RESOURCE = "example.com/dev"


@pytest.fixture
def plugin(kubelet_dir: Path):
    p = SamplePlugin(kubelet_dir / "example.sock", ["d0", "d1", "d2"], pre_start_required=True)
    p.start()
    yield p
    p.stop()


def test_kubelet_serves_registration_socket(fake_kubelet: FakeKubelet, kubelet_dir: Path) -> None:
    sock = kubelet_dir / KUBELET_SOCKET
    assert fake_kubelet.socket_path == sock
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert len(str(sock)) < 108


def test_register_round_trip(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    plugin.register(fake_kubelet.socket_path, RESOURCE)

    (req,) = fake_kubelet.registrations
    assert (req.version, req.endpoint, req.resource_name) == (API_VERSION, "example.sock", RESOURCE)
    assert req.options.pre_start_required is True
    # Options were fetched back over the plugin's socket (GetDevicePluginOptions), not just copied.
    assert fake_kubelet.options(RESOURCE) == plugin.options
    assert fake_kubelet.wait_devices(RESOURCE, 3) == {"d0": HEALTHY, "d1": HEALTHY, "d2": HEALTHY}
    assert fake_kubelet.resources() == [RESOURCE]


def test_wrong_version_rejected(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    with pytest.raises(grpc.RpcError) as err:
        plugin.register(fake_kubelet.socket_path, RESOURCE, version="v1alpha")
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    assert "v1alpha" in err.value.details() and "not supported" in err.value.details()
    assert fake_kubelet.resources() == []
    assert len(fake_kubelet.registrations) == 1  # received, though refused


@pytest.mark.parametrize("name", ["gpu", "kubernetes.io/gpu", "requests.example.com/x", "Example.com/x", "a/b/c"])
def test_invalid_resource_name_rejected(fake_kubelet: FakeKubelet, plugin: SamplePlugin, name: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        plugin.register(fake_kubelet.socket_path, name)
    assert "is invalid" in err.value.details()
    assert fake_kubelet.resources() == []


def test_extended_resource_names() -> None:
    for ok in ("nvidia.com/gpu", "huawei.com/Ascend910B3", "cambricon.com/mlu.smlu.vmemory", "hami.io/x_y"):
        assert is_extended_resource_name(ok), ok
    for bad in ("cpu", "kubernetes.io/x", "/x", "example.com/", "example.com/-x", "ex_ample.com/x"):
        assert not is_extended_resource_name(bad), bad


def test_register_fails_when_plugin_socket_missing(kubelet_dir: Path) -> None:
    with FakeKubelet(kubelet_dir, dial_timeout=0.3) as kubelet:
        ghost = SamplePlugin(kubelet_dir / "ghost.sock")  # never started
        with pytest.raises(grpc.RpcError) as err:
            ghost.register(kubelet.socket_path, RESOURCE)
        assert "dial" in err.value.details()
        assert kubelet.resources() == []


def test_health_change_updates_view(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    plugin.register(fake_kubelet.socket_path, RESOURCE)
    fake_kubelet.wait_devices(RESOURCE, 3)

    plugin.set_health("d1", UNHEALTHY)
    devs = fake_kubelet.wait_devices(RESOURCE, 2)
    assert devs == {"d0": HEALTHY, "d1": UNHEALTHY, "d2": HEALTHY}
    assert fake_kubelet.healthy_devices(RESOURCE) == ["d0", "d2"]

    # A message replaces the whole list.
    plugin.set_devices(["d9", api_pb2.Device(ID="d8", health=HEALTHY, topology=api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=1)]))])
    assert fake_kubelet.wait_devices(RESOURCE, 2, healthy=False) == {"d9": HEALTHY, "d8": HEALTHY}
    assert fake_kubelet.topology(RESOURCE) == {"d9": [], "d8": [1]}


def test_plugin_stop_removes_resource_after_the_grace_period(kubelet_dir: Path) -> None:
    with FakeKubelet(kubelet_dir, stream_grace_period=0) as kubelet:
        plugin = SamplePlugin(kubelet_dir / "p.sock", ["a", "b", "c"]).start()
        plugin.register(kubelet.socket_path, RESOURCE)
        kubelet.wait_devices(RESOURCE, 3)
        plugin.stop()
        kubelet.wait_for(lambda: RESOURCE not in kubelet.resources(), 5, "resource removal")
        assert kubelet.devices(RESOURCE) == {}


def test_default_grace_period_is_kubelets_five_minutes(kubelet_dir: Path) -> None:
    """pkg/kubelet/cm/devicemanager/endpoint.go: endpointStopGracePeriod = 5 * time.Minute."""
    assert FakeKubelet(kubelet_dir).stream_grace_period == 300.0


def test_grace_period_keeps_resource_unhealthy(kubelet_dir: Path) -> None:
    with FakeKubelet(kubelet_dir, stream_grace_period=30) as kubelet:
        plugin = SamplePlugin(kubelet_dir / "p.sock", ["a", "b"]).start()
        plugin.register(kubelet.socket_path, RESOURCE)
        kubelet.wait_devices(RESOURCE, 2)
        plugin.stop()
        assert kubelet.wait_devices(RESOURCE, 0) == {"a": UNHEALTHY, "b": UNHEALTHY}


def test_restart_deletes_sockets_and_plugin_reregisters(fake_kubelet: FakeKubelet, plugin: SamplePlugin, kubelet_dir: Path) -> None:
    plugin.register(fake_kubelet.socket_path, RESOURCE)
    fake_kubelet.wait_devices(RESOURCE, 3)
    (kubelet_dir / "kubelet_internal_checkpoint").write_text("{}")

    fake_kubelet.restart()

    assert not plugin.socket_path.exists(), "kubelet deletes plugins' sockets on restart"
    assert (kubelet_dir / "kubelet_internal_checkpoint").exists(), "but not its checkpoint"
    assert stat.S_ISSOCK(fake_kubelet.socket_path.stat().st_mode)
    assert fake_kubelet.registrations == []
    assert fake_kubelet.resources() == []
    assert fake_kubelet.devices(RESOURCE) == {}

    plugin.stop()
    plugin.start()
    plugin.register(fake_kubelet.socket_path, RESOURCE)
    assert fake_kubelet.wait_devices(RESOURCE, 3)
    assert [r.resource_name for r in fake_kubelet.registrations] == [RESOURCE]


def test_reregistration_replaces_endpoint(fake_kubelet: FakeKubelet, kubelet_dir: Path) -> None:
    with SamplePlugin(kubelet_dir / "a.sock", ["a0"]) as first, SamplePlugin(kubelet_dir / "b.sock", ["b0", "b1"]) as second:
        first.register(fake_kubelet.socket_path, RESOURCE)
        fake_kubelet.wait_devices(RESOURCE, 1)
        second.register(fake_kubelet.socket_path, RESOURCE)
        assert fake_kubelet.wait_devices(RESOURCE, 2) == {"b0": HEALTHY, "b1": HEALTHY}
        first.set_devices(["zz"])  # the replaced plugin's updates are ignored
        first.stop()
        with pytest.raises(TimeoutError):
            fake_kubelet.wait_for(lambda: fake_kubelet.devices(RESOURCE) != {"b0": HEALTHY, "b1": HEALTHY}, 0.3)
