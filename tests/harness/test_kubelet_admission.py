"""Fake kubelet admission: per-container Allocate, preferred allocation, failures, release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from hami.fakes.kubelet import FakeKubelet, SamplePlugin
from hami.node.deviceplugin import UNHEALTHY
from hami.node.deviceplugin.v1beta1 import api_pb2

RESOURCE = "example.com/dev"


def pod(name: str, *containers: tuple[str, int], init: tuple[tuple[str, int], ...] = (), resource: str = RESOURCE) -> dict[str, Any]:
    def c(n: str, count: int) -> dict[str, Any]:
        limits = {resource: str(count)} if count else {}
        return {"name": n, "image": "busybox", "resources": {"limits": limits}}

    return {
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {
            "nodeName": "node-1",
            "initContainers": [c(n, k) for n, k in init],
            "containers": [c(n, k) for n, k in containers],
        },
    }


def rich_allocate(req: api_pb2.ContainerAllocateRequest) -> api_pb2.ContainerAllocateResponse:
    ids = list(req.devices_ids)
    return api_pb2.ContainerAllocateResponse(
        envs={"DEVS": ",".join(ids)},
        mounts=[api_pb2.Mount(container_path="/usr/lib/x.so", host_path="/opt/x.so", read_only=True)],
        devices=[api_pb2.DeviceSpec(container_path=f"/dev/{i}", host_path=f"/dev/{i}", permissions="rw") for i in ids],
        annotations={"example.com/ids": ",".join(ids)},
        cdi_devices=[api_pb2.CDIDevice(name=f"example.com/dev={i}") for i in ids],
    )


@pytest.fixture
def plugin(fake_kubelet: FakeKubelet, kubelet_dir: Path):
    p = SamplePlugin(kubelet_dir / "ex.sock", ["d0", "d1", "d2", "d3"], allocate=rich_allocate)
    p.start()
    p.register(fake_kubelet.socket_path, RESOURCE)
    fake_kubelet.wait_devices(RESOURCE, 4)
    yield p
    p.stop()


def test_allocate_per_container_recorded(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    result = fake_kubelet.admit(pod("p", ("main", 2), ("side", 1), ("plain", 0)))

    assert result.admitted and result.error is None
    # One Allocate per container with a device request, each with exactly one ContainerAllocateRequest.
    assert [list(r.container_requests[0].devices_ids) for r in plugin.allocate_calls] == [["d0", "d1"], ["d2"]]
    assert all(len(r.container_requests) == 1 for r in plugin.allocate_calls)
    main = result.container("main")
    assert main.devices == {RESOURCE: ["d0", "d1"]}
    assert main.envs == {"DEVS": "d0,d1"}
    assert [(m.container_path, m.host_path, m.read_only) for m in main.mounts] == [("/usr/lib/x.so", "/opt/x.so", True)]
    assert [(d.host_path, d.permissions) for d in main.device_specs] == [("/dev/d0", "rw"), ("/dev/d1", "rw")]
    assert main.annotations == {"example.com/ids": "d0,d1"}
    assert main.cdi_devices == ["example.com/dev=d0", "example.com/dev=d1"]
    assert result.container("side").devices == {RESOURCE: ["d2"]}
    assert result.container("plain").devices == {} and result.container("plain").responses == {}
    assert fake_kubelet.assigned(RESOURCE) == {"d0", "d1", "d2"}


def test_v1pod_accepted_and_readmission_is_idempotent(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    v1pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="typed", namespace="ns", uid="u-typed"),
        spec=client.V1PodSpec(
            node_name="node-1",
            containers=[client.V1Container(name="c", resources=client.V1ResourceRequirements(limits={RESOURCE: "1"}))],
        ),
    )
    first = fake_kubelet.admit(v1pod)
    again = fake_kubelet.admit(v1pod)
    assert first.admitted and again.admitted
    assert again.container("c").devices == first.container("c").devices == {RESOURCE: ["d0"]}
    assert len(plugin.allocate_calls) == 1


def test_pod_for_another_node_is_refused(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    p = pod("elsewhere", ("c", 1))
    p["spec"]["nodeName"] = "node-2"
    with pytest.raises(ValueError, match="node-2"):
        fake_kubelet.admit(p)


def test_init_container_devices_reused(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    result = fake_kubelet.admit(pod("p", ("app", 2), init=(("init", 1),)))
    assert result.admitted
    calls = [list(r.container_requests[0].devices_ids) for r in plugin.allocate_calls]
    assert calls[0] == ["d0"]  # init containers first
    assert result.container("init").init is True
    assert "d0" in result.container("app").devices[RESOURCE]  # kubelet hands init devices on
    assert len(result.container("app").devices[RESOURCE]) == 2


def test_preferred_allocation_honoured(fake_kubelet: FakeKubelet, kubelet_dir: Path) -> None:
    with SamplePlugin(
        kubelet_dir / "pref.sock",
        ["a", "b", "c", "d"],
        get_preferred_allocation_available=True,
        preferred=lambda req: ["d", "b"],
    ) as plugin:
        plugin.register(fake_kubelet.socket_path, RESOURCE)
        fake_kubelet.wait_devices(RESOURCE, 4)
        result = fake_kubelet.admit(pod("p", ("c", 2)))

    assert result.admitted
    (call,) = plugin.preferred_calls
    (creq,) = call.container_requests
    assert sorted(creq.available_deviceIDs) == ["a", "b", "c", "d"]
    assert list(creq.must_include_deviceIDs) == []
    assert creq.allocation_size == 2
    assert sorted(result.container("c").devices[RESOURCE]) == ["b", "d"]
    assert list(plugin.allocate_calls[0].container_requests[0].devices_ids) == ["d", "b"]


def test_invalid_preference_is_ignored(fake_kubelet: FakeKubelet, kubelet_dir: Path) -> None:
    with SamplePlugin(
        kubelet_dir / "pref.sock",
        ["a", "b", "c"],
        get_preferred_allocation_available=True,
        preferred=lambda req: ["nope", "c"],
    ) as plugin:
        plugin.register(fake_kubelet.socket_path, RESOURCE)
        fake_kubelet.wait_devices(RESOURCE, 3)
        result = fake_kubelet.admit(pod("p", ("c", 2)))
    assert result.container("c").devices[RESOURCE] == ["c", "a"]


def test_preferred_not_called_unless_advertised(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    assert fake_kubelet.admit(pod("p", ("c", 1))).admitted
    assert plugin.preferred_calls == []
    assert plugin.prestart_calls == []


def test_prestart_called_when_required(fake_kubelet: FakeKubelet, kubelet_dir: Path) -> None:
    with SamplePlugin(kubelet_dir / "ps.sock", ["a", "b"], pre_start_required=True) as plugin:
        plugin.register(fake_kubelet.socket_path, RESOURCE)
        fake_kubelet.wait_devices(RESOURCE, 2)
        assert fake_kubelet.admit(pod("p", ("c", 2))).admitted
    assert [list(r.devices_ids) for r in plugin.prestart_calls] == [["a", "b"]]


def test_allocate_failure_is_admission_error_and_frees_devices(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    plugin.fail_allocate = "no binding pod found on node node-1"
    result = fake_kubelet.admit(pod("bad", ("first", 1), ("second", 1)))

    assert not result.admitted
    assert result.reason == "UnexpectedAdmissionError"
    assert result.error == (
        "Allocate failed due to rpc error: code = Unknown desc = no binding pod found on node node-1, which is unexpected"
    )
    assert fake_kubelet.assigned(RESOURCE) == set()

    plugin.fail_allocate = None
    ok = fake_kubelet.admit(pod("good", ("c", 4)))
    assert ok.admitted, ok.error
    assert sorted(ok.container("c").devices[RESOURCE]) == ["d0", "d1", "d2", "d3"]


def test_failure_in_later_container_returns_earlier_devices(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    def fail_second(req: api_pb2.ContainerAllocateRequest) -> api_pb2.ContainerAllocateResponse:
        if len(plugin.allocate_calls) == 2:
            raise RuntimeError("device number not matched")
        return rich_allocate(req)

    plugin.allocate = fail_second
    result = fake_kubelet.admit(pod("p", ("one", 1), ("two", 1)))

    assert not result.admitted
    assert "device number not matched" in (result.error or "")
    assert len(plugin.allocate_calls) == 2
    assert fake_kubelet.assigned(RESOURCE) == set(), "the first container's device is returned too"


def test_more_than_healthy_is_admission_error(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    plugin.set_health("d3", UNHEALTHY)
    fake_kubelet.wait_devices(RESOURCE, 3)
    result = fake_kubelet.admit(pod("big", ("c", 4)))

    assert not result.admitted
    assert result.reason == "UnexpectedAdmissionError"
    assert RESOURCE in (result.error or "")
    assert "Requested: 4, Available: 3" in (result.error or "")
    assert plugin.allocate_calls == []


def test_devices_not_shared_between_pods_until_released(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    first = pod("a", ("c", 3))
    assert fake_kubelet.admit(first).admitted
    second = fake_kubelet.admit(pod("b", ("c", 2)))
    assert not second.admitted and "Available: 1" in (second.error or "")

    fake_kubelet.release(first)
    assert fake_kubelet.assigned(RESOURCE) == set()
    assert fake_kubelet.admit(pod("b", ("c", 2))).admitted


def test_unregistered_extended_resource_ignored(fake_kubelet: FakeKubelet, plugin: SamplePlugin) -> None:
    p = pod("p", ("c", 1))
    p["spec"]["containers"][0]["resources"]["limits"]["example.com/gpumem"] = "3000"
    result = fake_kubelet.admit(p)
    assert result.admitted
    assert result.container("c").devices == {RESOURCE: ["d0"]}


def test_pod_is_not_admitted_without_devices_while_its_plugin_is_away(fake_kubelet: FakeKubelet, kubelet_dir: Path) -> None:
    """Kubelet keeps a vanished plugin's resource (unhealthy) for its grace period: a pod asking for it
    fails admission instead of starting without devices, and succeeds once the plugin is back."""
    plugin = SamplePlugin(kubelet_dir / "gone.sock", ["d0", "d1"]).start()
    plugin.register(fake_kubelet.socket_path, RESOURCE)
    fake_kubelet.wait_devices(RESOURCE, 2)
    plugin.stop()
    fake_kubelet.wait_devices(RESOURCE, 0)

    refused = fake_kubelet.admit(pod("early", ("main", 1)))
    assert not refused.admitted and refused.reason == "UnexpectedAdmissionError", refused
    assert plugin.allocate_calls == []

    back = SamplePlugin(kubelet_dir / "back.sock", ["d0", "d1"]).start()
    try:
        back.register(fake_kubelet.socket_path, RESOURCE)
        fake_kubelet.wait_devices(RESOURCE, 2)
        admitted = fake_kubelet.admit(pod("early", ("main", 1)))
        assert admitted.admitted and admitted.container("main").devices == {RESOURCE: ["d0"]}
    finally:
        back.stop()
