"""Hook dispatch: vendor hooks reach only the owner (and cross-cutting plugins); results are typed."""

from __future__ import annotations

import attrs
import pytest
from hami import hookimpl
from hami.errors import BackendError, HamiError, ValidationError
from hami.plugin.model import (
    AnnotationKeys,
    BackendInfo,
    ContainerEdits,
    ContainerPatch,
    DeviceKind,
    DeviceRequest,
    DeviceUsage,
    Grant,
    HealthEvent,
    Mount,
    NodeAnnotations,
    NodeUsage,
    PhysicalDevice,
    PolicyInfo,
    ResourceNames,
    SchedulableDevice,
)


class Recorder:
    """A backend implementing every vendor hook, recording who called it with which config."""

    def __init__(self, name: str, vendor: str, calls: list):
        self.name, self.vendor, self.calls = name, vendor, calls
        self.edits_host_path = f"/opt/{name}/lib"

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            kinds=[DeviceKind(self.vendor, ResourceNames(count=f"{self.name}.example.com/dev", memory=f"{self.name}.example.com/mem"),
                              AnnotationKeys.hami(f"hami.io/node-{self.name}-register", f"hami.io/node-handshake-{self.name}", f"hami.io/{self.name}"))],
            default_config={"owner": self.name, "split_count": 3},
            host_paths=(f"/opt/{self.name}", "/dev"),
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
        return ContainerEdits(env={f"{self.vendor}_VISIBLE": ",".join(g.id for g in grants)}, mounts=[Mount("/lib/x", self.edits_host_path)])

    @hookimpl
    def hami_prepare(self, grants, pod, container, config):
        self.calls.append(("prepare", self.name, config["owner"]))

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
def manager(hami_manager, alpha, calls):
    hami_manager.register(alpha)
    hami_manager.register(Recorder("beta", "BETA", calls))
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
    manager.prepare(grants, POD, {"name": "c"})
    edits = manager.container_edits(grants, POD, {"name": "c"})
    manager.release(grants, POD, {"name": "c"})
    assert dict(edits.env) == {"BETA_VISIBLE": "BETA-0"}
    assert dict(edits.annotations) == {"audit.example.com/devices": "1"}
    assert edits.mounts == (Mount("/lib/x", "/opt/beta/lib"),)
    assert [c for c in calls if c[0] != "audit-edits"] == [("prepare", "beta", "beta"), ("edits", "beta", "beta"), ("release", "beta", "beta")]
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
    with pytest.raises(BackendError, match="hami_normalize_request for LIAR returned 'bigger', expected DeviceRequest"):
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


# ---------------------------------------------------------------- policies are plugins too


class FewestPods:
    @hookimpl
    def hami_scoring_policies(self):
        return [PolicyInfo("fewest-pods", "node", "prefer idle nodes"), PolicyInfo("emptiest", "device", "prefer free memory")]

    @hookimpl
    def hami_score_node(self, policy, node, requests, pod):
        return -sum(d.used for d in node.devices) if policy == "fewest-pods" else None

    @hookimpl
    def hami_score_device(self, policy, request, device, pod):
        return device.free_memory if policy == "emptiest" else None


class BulkFewestPods(FewestPods):
    calls = 0

    @hookimpl
    def hami_scoring_policies(self):
        return [PolicyInfo("fewest-pods-bulk", "node", "prefer idle nodes, scored in bulk")]

    @hookimpl
    def hami_score_nodes(self, policy, nodes, requests, pod):
        if policy != "fewest-pods-bulk":
            return None
        BulkFewestPods.calls += 1
        return [-sum(d.used for d in node.devices) for node in nodes]


def _usage(used: int) -> DeviceUsage:
    return DeviceUsage(SchedulableDevice(id=f"d{used}", vendor="V", type="t", count=10, memory=100), used=used)


def test_a_third_party_policy_scores_through_the_same_hook(hami_manager):
    hami_manager.register(FewestPods(), name="fewest")
    busy, idle = NodeUsage("busy", [_usage(5)]), NodeUsage("idle", [_usage(1)])
    assert hami_manager.score_node("fewest-pods", idle, [], POD) > hami_manager.score_node("fewest-pods", busy, [], POD)
    # the built-ins answer their own names and leave the new one alone
    assert hami_manager.score_node("binpack", busy, [], POD) > hami_manager.score_node("binpack", idle, [], POD)
    full = DeviceUsage(SchedulableDevice(id="f", vendor="V", type="t", count=10, memory=100), memory=90)
    assert hami_manager.score_device("emptiest", DeviceRequest("V"), full, POD) == 10
    assert hami_manager.score_device("emptiest", DeviceRequest("V"), _usage(0), POD) == 100


def test_unknown_policy_lists_the_known_ones(hami_manager):
    with pytest.raises(ValidationError, match="unknown node scheduling policy 'tetris'; known: .*binpack, .*spread") as caught:
        hami_manager.score_node("tetris", NodeUsage("n"), [], POD)
    known = str(caught.value).split("known: ")[1].split(", ")
    assert known == sorted(known)


def test_a_policy_offered_twice_is_an_error(hami_manager):
    class Copy:
        @hookimpl
        def hami_scoring_policies(self):
            return [PolicyInfo("binpack", "node")]

    hami_manager.register(Copy(), name="copy")
    with pytest.raises(BackendError, match="node scoring policy 'binpack' is offered twice"):
        hami_manager.policies()


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


def test_bulk_scoring_and_its_per_node_fallback(hami_manager):
    hami_manager.register(FewestPods(), name="fewest")
    hami_manager.register(BulkFewestPods(), name="bulk")
    nodes = [NodeUsage("busy", [_usage(5)]), NodeUsage("idle", [_usage(1)])]
    assert hami_manager.score_nodes("fewest-pods-bulk", nodes, [], POD) == [-5.0, -1.0]
    assert BulkFewestPods.calls == 1  # one call for all nodes
    assert hami_manager.score_nodes("fewest-pods", nodes, [], POD) == [-5.0, -1.0]  # no bulk hook: node by node
    assert hami_manager.score_nodes("binpack", nodes, [], POD) == [hami_manager.score_node("binpack", n, [], POD) for n in nodes]


def test_bulk_scores_must_match_the_nodes(hami_manager):
    class Short:
        @hookimpl
        def hami_scoring_policies(self):
            return [PolicyInfo("short", "node")]

        @hookimpl
        def hami_score_nodes(self, policy, nodes, requests, pod):
            return [1.0] if policy == "short" else None

    hami_manager.register(Short(), name="short")
    with pytest.raises(BackendError, match="returned 1 scores for 2 nodes"):
        hami_manager.score_nodes("short", [NodeUsage("a"), NodeUsage("b")], [], POD)


def test_operators_may_allow_more_host_paths(manager, alpha):
    alpha.edits_host_path = "/srv/alpha/lib"
    with pytest.raises(BackendError, match="/srv/alpha/lib"):
        manager.container_edits([Grant("ALPHA-0", "ALPHA", 1, 0)], POD, {"name": "c"})
    manager.configure("alpha", {"extra_host_paths": ["/srv/alpha"]})
    assert manager.container_edits([Grant("ALPHA-0", "ALPHA", 1, 0)], POD, {"name": "c"}).mounts[0].host_path == "/srv/alpha/lib"
