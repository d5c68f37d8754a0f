"""Hook dispatch: vendor hooks reach only the owner (and cross-cutting plugins); results are typed."""

from __future__ import annotations

import attrs
import pytest

from hami import hookimpl
from hami.errors import BackendCrashed, BackendError, BackendRefused, ContractError, HamiError, RequestError, ValidationError
from hami.plugin.model import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceKind,
    DeviceRequest,
    DeviceUsage,
    Grant,
    GrantedDevice,
    HealthEvent,
    Mount,
    NodeAnnotations,
    NodeContext,
    PhysicalDevice,
    ResourceNames,
    SchedulableDevice,
)


class Recorder:
    """A backend implementing every vendor hook, recording who called it with which config."""

    def __init__(self, name: str, vendor: str, calls: list):
        self.name, self.vendor, self.calls = name, vendor, calls
        self.edits_host_path = f"/opt/{name}/lib"
        self.prepare_error: BaseException | None = None

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            kinds=[
                DeviceKind(
                    self.vendor,
                    ResourceNames(count=f"{self.name}.example.com/dev", memory=f"{self.name}.example.com/mem"),
                    AnnotationKeys.hami(
                        f"hami.io/node-{self.name}-register", f"hami.io/node-handshake-{self.name}", f"hami.io/{self.name}"
                    ),
                )
            ],
            default_config={"owner": self.name, "split_count": 3},
            host_paths=(f"/opt/{self.name}", "/dev"),
            pod_annotations=(f"{self.name}.example.com/*",),
        )

    @hookimpl
    def hami_backend(self):
        return self.info()

    @hookimpl
    def hami_discover_devices(self, config, node_name):
        self.calls.append(("discover", self.name, config["owner"], node_name))
        return [PhysicalDevice(id=f"{self.vendor}-0", vendor=self.vendor, type=f"{self.vendor} card", memory=1000)]

    @hookimpl
    def hami_device_health(self, devices, config):
        self.calls.append(("health", self.name, tuple(d.id for d in devices)))
        return [HealthEvent(devices[0].id, healthy=False, reason="fault 42")] if devices else []

    @hookimpl
    def hami_split_device(self, device, config):
        self.calls.append(("split", self.name, config["owner"]))
        return SchedulableDevice(id=device.id, vendor=device.vendor, type=device.type, count=config["split_count"], memory=device.memory)

    @hookimpl
    def hami_node_annotations(self, devices, physical, config):
        self.calls.append(("node-annotations", self.name, len(devices), len(physical)))
        return NodeAnnotations({f"hami.io/node-{self.name}-links": ",".join(d.id for d in devices)})

    @hookimpl
    def hami_select_devices(self, request, candidates, node_annotations, pod, config):
        self.calls.append(("select", self.name, config["owner"]))
        pairs = node_annotations.get("hami.io/pairs")
        if pairs is None:
            return None
        return [] if pairs == "none" else pairs.split(",")[: request.count]

    @hookimpl
    def hami_container_requests(self, container, pod, config):
        self.calls.append(("requests", self.name, config["owner"]))
        limits = container["resources"]["limits"]
        key = f"{self.name}.example.com/dev"
        return [DeviceRequest(self.vendor, count=int(limits[key]))] if key in limits else []

    @hookimpl
    def hami_mutate_container(self, container, pod, config):
        self.calls.append(("mutate", self.name, config["owner"]))
        limits = container["resources"]["limits"]
        if f"{self.name}.example.com/mem" in limits:
            return ContainerPatch(limits={f"{self.name}.example.com/dev": "1"}, warnings=[f"{self.name}: defaulted"])
        return None

    @hookimpl
    def hami_normalize_request(self, request, device, pod, config):
        self.calls.append(("normalize", self.name, config["owner"]))
        return attrs.evolve(request, memory=512)

    @hookimpl
    def hami_device_fits(self, request, device, pod, config):
        self.calls.append(("fits", self.name, config["owner"]))
        return "WrongColour" if pod.get("colour") == "red" else None

    @hookimpl
    def hami_container_edits(self, grants, pod, container, config):
        self.calls.append(("edits", self.name, config["owner"]))
        return ContainerEdits(
            env={f"{self.vendor}_VISIBLE": ",".join(g.id for g in grants)}, mounts=[Mount("/lib/x", self.edits_host_path)]
        )

    @hookimpl
    def hami_prepare(self, grants, pod, container, config):
        self.calls.append(("prepare", self.name, config["owner"]))
        if self.prepare_error is not None:
            raise self.prepare_error

    @hookimpl
    def hami_release(self, grants, pod, container, config):
        self.calls.append(("release", self.name, config["owner"]))


class Auditor:
    """A cross-cutting plugin: owns no vendor, sees vendor hooks, adds to the edits."""

    def __init__(self, calls: list):
        self.calls = calls

    @hookimpl
    def hami_container_edits(self, grants, pod, container, config):
        self.calls.append(("audit-edits", config["owner"]))
        return ContainerEdits(annotations={"audit.example.com/devices": str(len(grants))})

    @hookimpl
    def hami_container_requests(self, container, pod, config):
        self.calls.append(("audit-requests", dict(config)))
        return []


@pytest.fixture
def calls():
    return []


@pytest.fixture
def alpha(calls):
    return Recorder("alpha", "ALPHA", calls)


@pytest.fixture
def beta(calls):
    return Recorder("beta", "BETA", calls)


@pytest.fixture
def manager(hami_manager, alpha, beta, calls):
    hami_manager.register(alpha)
    hami_manager.register(beta)
    hami_manager.register(Auditor(calls), name="auditor")
    hami_manager.configure("beta", {"split_count": 7})
    return hami_manager


POD = {"metadata": {"name": "p", "annotations": {}}}


def test_discovery_and_health_reach_one_backend(manager, calls):
    devices = manager.discover("beta", "node-1")
    assert [d.id for d in devices] == ["BETA-0"]
    assert calls == [("discover", "beta", "beta", "node-1")]
    events = manager.device_health("beta", devices)
    assert events == [HealthEvent("BETA-0", False, "fault 42")]
    assert calls[-1] == ("health", "beta", ("BETA-0",))


def test_split_reaches_the_owner_with_its_configured_config(manager, calls):
    split = manager.split(PhysicalDevice(id="BETA-0", vendor="BETA", type="t", memory=10))
    assert split.count == 7  # operator override over the default of 3
    assert calls == [("split", "beta", "beta")]


def test_split_without_a_hook_offers_the_device_whole(hami_manager):
    from hami_hygon.plugin import INFO

    class IdentityOnly:
        @hookimpl
        def hami_backend(self):
            return INFO

    hami_manager.register(IdentityOnly())
    split = hami_manager.split(PhysicalDevice(id="d", vendor="DCU", type="Z100", memory=16384, index=2, numa=1))
    assert (split.count, split.memory, split.cores, split.index, split.numa) == (1, 16384, 100, 2, 1)


def test_requests_are_an_open_hook_with_each_backends_config(manager, calls):
    container = {"name": "c", "resources": {"limits": {"alpha.example.com/dev": "2", "beta.example.com/dev": "1"}}}
    requests = manager.container_requests(container, POD)
    assert sorted((r.vendor, r.count) for r in requests) == [("ALPHA", 2), ("BETA", 1)]
    assert ("requests", "alpha", "alpha") in calls and ("requests", "beta", "beta") in calls
    assert ("audit-requests", {}) in calls  # cross-cutting plugins get an empty config


def test_mutate_merges_patches(manager):
    container = {"name": "c", "resources": {"limits": {"alpha.example.com/mem": "10", "beta.example.com/mem": "10"}}}
    patch = manager.mutate_container(container, POD)
    assert dict(patch.limits) == {"alpha.example.com/dev": "1", "beta.example.com/dev": "1"}
    assert sorted(patch.warnings) == ["alpha: defaulted", "beta: defaulted"]


def test_vendor_hooks_reach_only_the_owner(manager, calls):
    usage = DeviceUsage(SchedulableDevice(id="ALPHA-0", vendor="ALPHA", type="t", count=1, memory=1000))
    request = manager.normalize(DeviceRequest("ALPHA", memory=100), usage, POD)
    assert request.memory == 512
    assert manager.device_fits(request, usage, {"colour": "red"}) == "WrongColour"
    assert manager.device_fits(request, usage, POD) is None
    assert [c[:2] for c in calls] == [("normalize", "alpha"), ("fits", "alpha"), ("fits", "alpha")]


def test_edits_merge_owner_and_cross_cutting_plugins(manager, calls):
    grants = [Grant("BETA-0", "BETA", 100, 10)]
    device = PhysicalDevice(id="BETA-0", vendor="BETA", type="t", memory=1000)
    devices = [GrantedDevice(grants[0], device, SchedulableDevice(id="BETA-0", vendor="BETA", type="t", count=3, memory=1000))]
    node = manager.node_context("beta", "n")
    manager.prepare(grants, POD, {"name": "c"}, node, devices)
    edits = manager.container_edits(grants, POD, {"name": "c"}, node, devices)
    manager.release(grants, POD, {"name": "c"}, node, devices)
    assert dict(edits.env) == {"BETA_VISIBLE": "BETA-0"}
    assert dict(edits.annotations) == {"audit.example.com/devices": "1"}
    assert edits.mounts == (Mount("/lib/x", "/opt/beta/lib"),)
    assert [c for c in calls if c[0] != "audit-edits"] == [
        ("prepare", "beta", "beta"),
        ("edits", "beta", "beta"),
        ("release", "beta", "beta"),
    ]
    assert ("audit-edits", "beta") in calls  # the cross-cutting plugin sees the owner's config


def test_edits_outside_declared_host_paths_are_refused(manager, alpha):
    alpha.edits_host_path = "/etc/shadow"
    with pytest.raises(BackendError, match=r"exposes host path\(s\) \['/etc/shadow'\] outside the declared \['/opt/alpha', '/dev'\]"):
        manager.container_edits([Grant("ALPHA-0", "ALPHA", 1, 0)], POD, {"name": "c"})
    alpha.edits_host_path = "/opt/alphabet/x"  # a prefix of the name is not inside the directory
    with pytest.raises(BackendError, match="/opt/alphabet/x"):
        manager.container_edits([Grant("ALPHA-0", "ALPHA", 1, 0)], POD, {"name": "c"})
    alpha.edits_host_path = "/opt/alpha/../../etc/passwd"
    with pytest.raises(BackendError, match="passwd"):
        manager.container_edits([Grant("ALPHA-0", "ALPHA", 1, 0)], POD, {"name": "c"})


def test_runtime_hooks_need_grants_of_one_vendor(manager):
    with pytest.raises(HamiError, match=r"exactly one vendor key, got \['ALPHA', 'BETA'\]"):
        manager.container_edits([Grant("a", "ALPHA", 1, 0), Grant("b", "BETA", 1, 0)], POD, {"name": "c"})


def test_contract_breaches_name_the_hook(hami_manager, calls):
    class Liar(Recorder):
        @hookimpl
        def hami_split_device(self, device, config):
            return SchedulableDevice(id="someone-else", vendor=device.vendor, type="t", count=1, memory=1)

        @hookimpl
        def hami_normalize_request(self, request, device, pod, config):
            return "bigger"

        @hookimpl
        def hami_discover_devices(self, config, node_name):
            return [PhysicalDevice(id="x", vendor="NOT-MINE", type="t", memory=1)]

    hami_manager.register(Liar("liar", "LIAR", calls))
    with pytest.raises(BackendError, match="changed the identity of device 'd'"):
        hami_manager.split(PhysicalDevice(id="d", vendor="LIAR", type="t", memory=1))
    usage = DeviceUsage(SchedulableDevice(id="d", vendor="LIAR", type="t", count=1, memory=1))
    with pytest.raises(ContractError, match="backend 'liar', hami_normalize_request: returned 'bigger', expected DeviceRequest"):
        hami_manager.normalize(DeviceRequest("LIAR"), usage, POD)
    with pytest.raises(BackendError, match="vendor 'NOT-MINE', which it does not own"):
        hami_manager.discover("liar", "n")


def test_two_requests_for_one_vendor_is_a_breach(hami_manager, calls):
    class Doubler(Recorder):
        @hookimpl
        def hami_container_requests(self, container, pod, config):
            return [DeviceRequest(self.vendor), DeviceRequest(self.vendor)]

    hami_manager.register(Doubler("dbl", "DBL", calls))
    with pytest.raises(BackendError, match="2 requests for vendor 'DBL'"):
        hami_manager.container_requests({"name": "c", "resources": {"limits": {}}}, POD)


def test_configure_unknown_backend_is_refused(hami_manager):
    with pytest.raises(BackendError, match="cannot configure 'ghost'"):
        hami_manager.configure("ghost", {})


def test_node_annotations_come_from_one_backend(manager, calls):
    devices = [SchedulableDevice(id="ALPHA-0", vendor="ALPHA", type="t", count=1, memory=1)]
    assert manager.node_annotations("alpha", devices, []) == {"hami.io/node-alpha-links": "ALPHA-0"}
    assert calls == [("node-annotations", "alpha", 1, 0)]


def test_node_annotations_may_not_overwrite_the_cores_keys(hami_manager, calls):
    class Overreach(Recorder):
        @hookimpl
        def hami_node_annotations(self, devices, physical, config):
            return NodeAnnotations({"hami.io/node-over-register": "[]"})

    hami_manager.register(Overreach("over", "OVER", calls))
    with pytest.raises(BackendError, match=r"writes \['hami.io/node-over-register'\], which the core writes itself"):
        hami_manager.node_annotations("over", [], [])


def test_select_devices_is_checked(manager):
    usages = [DeviceUsage(SchedulableDevice(id=f"ALPHA-{i}", vendor="ALPHA", type="t", count=1, memory=1)) for i in range(3)]
    request = DeviceRequest("ALPHA", count=2)
    assert manager.select_devices(request, usages, {}, POD) is None
    assert manager.select_devices(request, usages, {"hami.io/pairs": "ALPHA-2,ALPHA-0"}, POD) == ["ALPHA-2", "ALPHA-0"]
    assert manager.select_devices(request, usages, {"hami.io/pairs": "none"}, POD) == []
    with pytest.raises(BackendError, match="expected 2 distinct ids among the candidates"):
        manager.select_devices(request, usages, {"hami.io/pairs": "ALPHA-0,ALPHA-9"}, POD)


def test_operators_may_allow_more_host_paths(manager, alpha):
    alpha.edits_host_path = "/srv/alpha/lib"
    with pytest.raises(BackendError, match="/srv/alpha/lib"):
        manager.container_edits([Grant("ALPHA-0", "ALPHA", 1, 0)], POD, {"name": "c"})
    manager.configure("alpha", {"extra_host_paths": ["/srv/alpha"]})
    assert manager.container_edits([Grant("ALPHA-0", "ALPHA", 1, 0)], POD, {"name": "c"}).mounts[0].host_path == "/srv/alpha/lib"


def test_runtime_hooks_without_devices_find_them_on_the_node(manager, calls):
    """Callers that do not hold the node's discovery (tests, tools) get the devices found now."""
    found = manager.granted([Grant("ALPHA-0", "ALPHA", 100, 10)], "n")
    assert [(d.id, d.device.type, d.split.count) for d in found] == [("ALPHA-0", "ALPHA card", 3)]
    with pytest.raises(BackendRefused, match="granted device 'ALPHA-9' is not on node 'n'"):
        manager.granted([Grant("ALPHA-9", "ALPHA", 100, 10)], "n")
    assert manager.granted([Grant("ALPHA-9", "ALPHA", 100, 10)], "n", missing_ok=True) == []


def test_node_context_is_decided_once_from_the_inventory(manager, monkeypatch, tmp_path):
    monkeypatch.delenv("HAMI_INVENTORY", raising=False)
    real = manager.node_context("alpha", "n", state_root=tmp_path)
    assert (real.name, real.simulated, real.state_dir, real.config["owner"]) == ("n", False, tmp_path / "alpha", "alpha")
    monkeypatch.setenv("HAMI_INVENTORY", str(tmp_path / "nodes.yaml"))
    assert manager.node_context("alpha", "n").simulated
    assert isinstance(real, NodeContext)


@pytest.mark.parametrize(
    ("raised", "expected", "message"),
    [
        (BackendError("no MIG profile fits"), BackendRefused, "backend 'beta', hami_prepare: no MIG profile fits"),
        (BackendRefused("driver too old"), BackendRefused, "backend 'beta', hami_prepare: driver too old"),
        (
            PermissionError(13, "Permission denied", "/etc/x"),
            BackendCrashed,
            "backend 'beta', hami_prepare: PermissionError: [Errno 13] Permission denied: '/etc/x'",
        ),
        (KeyError("index"), BackendCrashed, "backend 'beta', hami_prepare: KeyError: 'index'"),
        (ValidationError("Grant.memory=-1: must be >= 0"), ContractError, "backend 'beta', hami_prepare: Grant.memory=-1"),
    ],
)
def test_hook_failures_are_typed_and_name_backend_and_hook(manager, beta, raised, expected, message):
    beta.prepare_error = raised
    grants = [Grant("BETA-0", "BETA", 100, 10)]
    with pytest.raises(expected) as caught:
        manager.prepare(grants, POD, {"name": "c"}, "n")
    assert str(caught.value).startswith(message)
    assert (caught.value.backend, caught.value.hook) == ("beta", "hami_prepare")
    assert caught.value.__cause__ is raised


def test_errors_about_the_users_input_pass_unchanged(manager, beta):
    beta.prepare_error = RequestError("nvidia.com/gpu='x' is not a count")
    with pytest.raises(RequestError) as caught:
        manager.prepare([Grant("BETA-0", "BETA", 100, 10)], POD, {"name": "c"}, "n")
    assert caught.value is beta.prepare_error


def test_a_cross_cutting_plugin_failure_is_attributed_to_it(hami_manager, calls):
    class Broken:
        @hookimpl
        def hami_prepare(self, grants, pod, container, config):
            raise OSError("audit log full")

    hami_manager.register(Recorder("gamma", "GAMMA", calls))
    hami_manager.register(Broken(), name="audit-broken")
    with pytest.raises(BackendCrashed, match="backend 'audit-broken', hami_prepare: OSError: audit log full"):
        hami_manager.prepare([Grant("GAMMA-0", "GAMMA", 1, 0)], POD, {"name": "c"}, "n")


def test_allocation_annotations_are_checked(hami_manager, calls):
    class Annotator(Recorder):
        value: object = None

        @hookimpl
        def hami_allocation_annotations(self, vendor, containers, devices, pod, config):
            return self.value

    plugin = Annotator("ann", "ANN", calls)
    hami_manager.register(plugin)
    device = SchedulableDevice(id="ANN-0", vendor="ANN", type="t", count=1, memory=1024, index=3)
    grants = [[], [Grant("ANN-0", "ANN", 512, 50)]]
    assert hami_manager.allocation_annotations("ANN", grants, {"ANN-0": device}, POD) == {}
    plugin.value = {"ann.example.com/profile": "3_50_2"}
    assert hami_manager.allocation_annotations("ANN", grants, {"ANN-0": device}, POD) == {"ann.example.com/profile": "3_50_2"}
    plugin.value = {"hami.io/ann-devices-to-allocate": "x"}
    with pytest.raises(ContractError, match="which the core writes itself"):
        hami_manager.allocation_annotations("ANN", grants, {"ANN-0": device}, POD)
    plugin.value = {"not a key!": "x"}
    with pytest.raises(ContractError, match="must map valid keys to strings"):
        hami_manager.allocation_annotations("ANN", grants, {"ANN-0": device}, POD)
    # undeclared: the webhook would not protect it from the pod owner (issue 19 item 2)
    plugin.value = {"ann.example.com/profile": "3_50_2", "predicate-time": "1"}
    with pytest.raises(
        ContractError, match=r"writes \['predicate-time'\], not declared in BackendInfo.pod_annotations \(ann.example.com/\*\)"
    ):
        hami_manager.allocation_annotations("ANN", grants, {"ANN-0": device}, POD)
    assert hami_manager.pod_annotations == ("ann.example.com/*",)
