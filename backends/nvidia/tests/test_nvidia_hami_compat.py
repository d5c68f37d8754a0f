"""HAMi v2.10's user-visible NVIDIA behaviour (issue 18: Requests, HAMi-core contract, selectors,
configurable resource names). Each test names the upstream source it follows (Project-HAMi/HAMi at
v2.10.0, Project-HAMi/HAMi-core at main); where we are deliberately stricter, the test shows the
refusal saying why."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hami.errors import ValidationError
from hami.node.devices import discover_node
from hami.scheduler.kubeconfig import scheduler_configuration
from hami.sdk import (
    AnnotationKeys,
    BackendError,
    BackendInfo,
    DeviceKind,
    Grant,
    RequestError,
    ResourceNames,
    SchedulableDevice,
    StandardBackend,
)
from hami.webhook.quota import pod_charge
from hami_nvidia.selectors import PARSE_BOOL, Selectors

NODE = "gpu-node"
GPU = "nvidia.com/gpu"
MEM = "nvidia.com/gpumem"
PCT = "nvidia.com/gpumem-percentage"
CORES = "nvidia.com/gpucores"
PRIORITY = "nvidia.com/priority"


def ctr(
    limits: dict[str, str], *, name: str = "main", env: list[dict[str, str]] | None = None, requests: dict[str, str] | None = None
) -> dict[str, Any]:
    resources: dict[str, Any] = {"limits": limits}
    if requests:
        resources["requests"] = requests
    return {"name": name, "env": env or [], "resources": resources}


def pod(annotations: dict[str, str] | None = None, uid: str = "uid-p") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default", "uid": uid, "annotations": annotations or {}}}


@pytest.fixture
def gpu_node(nvidia, on_node, tmp_path: Path, host_root: Path):
    """``gpu_node(simulated=False, **config)``: GPU-0 (hami-core) and GPU-1 on a fake host with HAMi-core."""

    def build(simulated: bool = False, **config: Any):
        devices = [
            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 81920, "id": "GPU-0"},
            {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 81920, "id": "GPU-1", "index": 1},
        ]
        inventory = tmp_path / "nodes.yaml"
        inventory.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
        return on_node(nvidia(inventory=str(inventory), host_root=str(host_root), **config), NODE, simulated=simulated)

    return build


def request_of(manager, limits: dict[str, str], **kwargs: Any):
    (found,) = manager.container_requests(ctr(limits, **kwargs), pod())
    return found


# ---------------------------------------------------------------- requests (pkg/device/nvidia/device.go)


def test_percentage_zero_is_unset_as_upstream(nvidia):
    """GenerateResourceRequests: ``mempnums > 0`` else keep the 101 "unset" sentinel → 100 % (or
    DefaultMemory); ``gpumem: 0`` likewise falls to the default."""
    manager = nvidia()
    r = request_of(manager, {GPU: "1", PCT: "0"})
    assert (r.memory, r.memory_percentage) == (0, 100)
    r = request_of(manager, {GPU: "1", MEM: "0"})
    assert (r.memory, r.memory_percentage) == (0, 100)
    manager = nvidia(default_memory=2048)
    assert request_of(manager, {GPU: "1", PCT: "0"}).memory == 2048
    assert request_of(manager, {GPU: "1", MEM: "0"}).memory == 2048
    patch = manager.mutate_container(ctr({GPU: "1", PCT: "0", CORES: "10"}), pod())
    assert any(f"{PCT}=0 means unset" in w for w in patch.warnings)


def test_memory_wins_over_a_percentage_with_a_warning(nvidia):
    """Fit: ``if k.MemPercentagereq != 101 && k.Memreq == 0`` → the percentage only counts without memory."""
    manager = nvidia()
    r = request_of(manager, {GPU: "1", MEM: "3000", PCT: "50"})
    assert (r.memory, r.memory_percentage) == (3000, None)
    patch = manager.mutate_container(ctr({GPU: "1", MEM: "3000", PCT: "50", CORES: "10"}), pod())
    assert patch.warnings == (f"container 'main': {MEM}=3000 and {PCT}=50 both given; the memory amount is used",)


def test_cores_over_100_are_clamped_with_a_warning(nvidia):
    """Fit: ``if k.Coresreq > 100 { ... k.Coresreq = 100 }`` (logged there; an admission warning here)."""
    manager = nvidia()
    assert request_of(manager, {GPU: "1", CORES: "150"}).cores == 100
    patch = manager.mutate_container(ctr({GPU: "1", CORES: "150"}), pod())
    assert f"container 'main': {CORES}=150 is clamped to 100 (percent of one device)" in patch.warnings


def test_percentage_over_100_is_refused_as_upstream(nvidia):
    """MutateAdmission → validateMemoryPercentage: "must be an integer between 0 and 100"."""
    with pytest.raises(RequestError, match=f"{PCT}=101 is over 100"):
        request_of(nvidia(), {GPU: "1", PCT: "101"})


@pytest.mark.parametrize(
    ("limits", "requests", "added"),
    [
        ({GPU: "1"}, None, {CORES: "100"}),  # count alone: the whole card, exclusively
        ({GPU: "2", PCT: "100"}, None, {CORES: "100"}),
        ({PCT: "100"}, None, {GPU: "1", CORES: "100"}),  # mutateContainerResource adds the count first
        ({}, {GPU: "1"}, {CORES: "100"}),  # resourcePresent reads requests too
        ({GPU: "1", PCT: "50"}, None, {}),
        ({GPU: "1", PCT: "0"}, None, {}),  # pct == 100 is upstream's test, 0 is not
        ({GPU: "1", MEM: "3000"}, None, {}),
        ({GPU: "1", CORES: "30"}, None, {}),
        ({MEM: "3000"}, None, {GPU: "1"}),
    ],
)
def test_a_whole_gpu_without_cores_is_exclusive(nvidia, limits, requests, added):
    """MutateAdmission → defaultExclusiveCoreIfNeeded (count present, cores absent, memory absent or 100 %)."""
    manager = nvidia()
    patch = manager.mutate_container(ctr(limits, requests=requests), pod())
    assert dict(patch.limits) == added
    if added.get(CORES):  # what the scheduler then reads: exclusive (Fit: Coresreq == 100 on a used GPU fails)
        patched = ctr({**limits, **added}, requests=requests)
        (r,) = manager.container_requests(patched, pod())
        assert r.cores == 100 and r.exclusive


limits_strategy = st.fixed_dictionaries(
    {},
    optional={
        GPU: st.integers(1, 4).map(str),
        MEM: st.integers(0, 90000).map(str),
        PCT: st.integers(0, 100).map(str),
        CORES: st.integers(0, 300).map(str),
    },
).filter(bool)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=limits_strategy, default_memory=st.sampled_from([0, 1024]), device_memory=st.integers(100, 81920))
def test_no_request_ever_becomes_a_zero_memory_limit(gpu_node, limits, default_memory, device_memory):
    """HAMi-core src/multiprocess/multiprocess_memory_limit.c get_limit_from_env: a 0 limit is "invalid" and means no
    limit, so no request may produce ``CUDA_DEVICE_MEMORY_LIMIT_x=0m``."""
    node = gpu_node(simulated=True, default_memory=default_memory)
    (r,) = node.manager.container_requests(ctr(limits), pod())
    device = SchedulableDevice(id="GPU-0", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=device_memory)
    granted = min(r.memory_on(device), device_memory)
    assert granted > 0
    assert 0 < r.cores <= 100 or r.cores == 0
    edits = node.container_edits([Grant("GPU-0", "NVIDIA", granted, r.cores)], pod(), ctr(limits))
    limits_env = {k: v for k, v in edits.env.items() if k.startswith("CUDA_DEVICE_MEMORY_LIMIT")}
    assert limits_env and all(int(v.rstrip("m")) > 0 for v in limits_env.values()), limits_env


def test_a_zero_grant_is_refused_not_run_unlimited(gpu_node):
    """HAMi-core src/multiprocess/multiprocess_memory_limit.c get_limit_from_env would read a 0 limit as
    none: a 0 MiB grant is refused at Allocate instead of running unlimited."""
    node = gpu_node()
    with pytest.raises(BackendError, match=r"GPU-1.*CUDA_DEVICE_MEMORY_LIMIT=0m as no limit"):
        node.container_edits([Grant("GPU-0", "NVIDIA", 100, 0), Grant("GPU-1", "NVIDIA", 0, 0)], pod(), ctr({GPU: "2"}))


# ---------------------------------------------------------------- priority (pkg/util/types.go, cmd/vGPUmonitor/feedback.go)


@pytest.mark.parametrize("value", ["0", "1", "3"])
def test_priority_reaches_hami_core(gpu_node, value):
    """MutateAdmission sets ``CUDA_TASK_PRIORITY`` (pkg/util/types.go TaskPriority) to the resource's value;
    HAMi-core reads it with atoi (default 1); cmd/vGPUmonitor/feedback.go: a lower number runs first."""
    node = gpu_node()
    container = ctr({GPU: "1", PRIORITY: value})
    node.manager.container_requests(container, pod())
    assert node.container_edits([Grant("GPU-0", "NVIDIA", 1000, 0)], pod(), container).env["CUDA_TASK_PRIORITY"] == value


def test_negative_priority_is_refused_with_the_reason(nvidia):
    """Upstream injects -1, which the monitor skips (``if p < 0 { continue }``): refused here instead."""
    with pytest.raises(RequestError, match=r"nvidia.com/priority='-1'.*negative.*0 is high priority, 1 low"):
        request_of(nvidia(), {GPU: "1", PRIORITY: "-1"})


# ---------------------------------------------------------------- selectors (pkg/device/nvidia/device.go checkType, assertNuma)


def test_vgpu_mode_takes_a_comma_list(gpu_node):
    """checkType: ``strings.Contains(mode, d.Mode)``, so ``hami-core,mps`` admits either mode."""
    selectors = Selectors.from_pod(pod({"nvidia.com/vgpu-mode": "hami-core, mps"}))
    assert selectors.modes == ("hami-core", "mps")
    for mode, fits in (("hami-core", True), ("mps", True), ("mig", False), ("", True)):
        device = SchedulableDevice(id="GPU-0", vendor="NVIDIA", type="A100", count=1, memory=1, mode=mode)
        assert (selectors.reason(device) is None) is fits
    node = gpu_node()  # the runtime picks the mode the GPU was split for
    edits = node.container_edits([Grant("GPU-0", "NVIDIA", 1000, 0)], pod({"nvidia.com/vgpu-mode": "mps,hami-core"}), ctr({GPU: "1"}))
    assert "CUDA_DEVICE_MEMORY_LIMIT_0" in edits.env


def test_a_vgpu_mode_typo_is_refused_naming_it(nvidia):
    """Upstream's ``strings.Contains(mode, d.Mode)`` (pkg/device/nvidia/device.go checkType) reads ``hami-cores`` as
    ``hami-core`` and leaves a word holding no mode (``hamicore``) Pending everywhere; we name the word at admission."""
    with pytest.raises(RequestError, match="'hami-cores' is not an isolation mode"):
        nvidia().container_requests(ctr({GPU: "1"}), pod({"nvidia.com/vgpu-mode": "mps,hami-cores"}))


@pytest.mark.parametrize(("value", "bound"), sorted(PARSE_BOOL.items()))
def test_numa_bind_takes_every_parsebool_spelling(nvidia, value, bound):
    """assertNuma: ``strconv.ParseBool(numabind)``."""
    (r,) = nvidia().container_requests(ctr({GPU: "1"}), pod({"nvidia.com/numa-bind": value}))
    assert r.single_numa is bound


@pytest.mark.parametrize("value", ["yes", "on", "tRuE", "2"])
def test_numa_bind_refuses_other_words_naming_them(nvidia, value):
    """Upstream ignores a ParseBool error (the pod runs unbound, silently); we refuse and list the spellings."""
    with pytest.raises(RequestError, match=rf"nvidia.com/numa-bind='{value}': not a boolean.*1, t, T, TRUE, true, True, 0, f"):
        nvidia().container_requests(ctr({GPU: "1"}), pod({"nvidia.com/numa-bind": value}))


# ------------------------- HAMi-core contract (pkg/device-plugin/nvidiadevice/nvinternal/plugin/server.go Allocate)


def mounts(edits) -> dict[str, tuple[str, bool]]:
    return {m.container_path: (m.host_path, m.read_only) for m in edits.mounts}


@pytest.mark.parametrize(("value", "disabled"), [*sorted(PARSE_BOOL.items()), ("yes", False), ("", False)])
def test_disable_control_reads_parsebool(gpu_node, nvidia, value, disabled):
    """Allocate: ``t, _ := strconv.ParseBool(val.Value)``; only a true value drops /etc/ld.so.preload."""
    node = gpu_node()
    container = ctr({GPU: "1"}, env=[{"name": "CUDA_DISABLE_CONTROL", "value": value}])
    edits = node.container_edits([Grant("GPU-0", "NVIDIA", 1000, 0)], pod(), container)
    assert ("/etc/ld.so.preload" in mounts(edits)) is not disabled
    warned = [w for w in node.manager.mutate_container(container, pod()).warnings if "CUDA_DISABLE_CONTROL" in w]
    assert bool(warned) is (value not in PARSE_BOOL), warned


def test_disable_control_any_true_entry_wins(gpu_node):
    node = gpu_node()
    env = [{"name": "CUDA_DISABLE_CONTROL", "value": "false"}, {"name": "CUDA_DISABLE_CONTROL", "value": "1"}]
    edits = node.container_edits([Grant("GPU-0", "NVIDIA", 1000, 0)], pod(), ctr({GPU: "1"}, env=env))
    assert "/etc/ld.so.preload" not in mounts(edits)


@pytest.mark.parametrize(
    ("config", "expected"), [({}, None), ({"memory_scaling": 1.5}, "true"), ({"nodes": {NODE: {"memory_scaling": 2}}}, "true")]
)
def test_oversubscription_is_told_to_hami_core(gpu_node, config, expected):
    """Allocate: ``if *DeviceMemoryScaling > 1 { Envs["CUDA_OVERSUBSCRIBE"] = "true" }``."""
    node = gpu_node(**config)
    edits = node.container_edits([Grant("GPU-0", "NVIDIA", 1000, 0)], pod(), ctr({GPU: "1"}))
    assert edits.env.get("CUDA_OVERSUBSCRIBE") == expected


def test_mounts_follow_server_go(gpu_node, host_root: Path):
    """Allocate's mounts: ``<hook>/vgpu/libvgpu.so`` from GetLibPath (util.go: ``libvgpu.so.<version>``
    when present), the per-container cache dir as ``<hook>/vgpu``, /tmp/vgpulock, ld.so.preload, and the
    license and validator when ``<hook>/vgpu/license`` exists. The manager checks every host path
    against the backend's declared host_paths (it refuses the edits otherwise)."""
    vgpu = host_root / "usr/local/vgpu"
    node = gpu_node(libvgpu_version="v2.10.0")
    grant = [Grant("GPU-0", "NVIDIA", 1000, 0)]
    assert mounts(node.container_edits(grant, pod(), ctr({GPU: "1"})))["/usr/local/vgpu/libvgpu.so"] == ("/usr/local/vgpu/libvgpu.so", True)
    (vgpu / "libvgpu.so.v2.10.0").write_bytes(b"\x7fELF versioned")
    (vgpu / "license").write_text("x")
    found = mounts(node.container_edits(grant, pod(), ctr({GPU: "1"})))
    assert found == {
        "/usr/local/vgpu/libvgpu.so": ("/usr/local/vgpu/libvgpu.so.v2.10.0", True),
        "/usr/local/vgpu": ("/usr/local/vgpu/containers/uid-p_main", False),
        "/tmp/vgpulock": ("/tmp/vgpulock", False),
        "/etc/ld.so.preload": ("/usr/local/vgpu/ld.so.preload", True),
        "/tmp/license": ("/usr/local/vgpu/license", True),
        "/usr/bin/vgpuvalidator": ("/usr/local/vgpu/vgpuvalidator", True),
    }
    (vgpu / "libvgpu.so").unlink()  # only the versioned library installed: still served
    assert mounts(node.container_edits(grant, pod(), ctr({GPU: "1"})))["/usr/local/vgpu/libvgpu.so"][0].endswith(".v2.10.0")
    node = gpu_node(libvgpu_version="../../etc/passwd")
    with pytest.raises(BackendError, match=r"libvgpu\.so on the host"):
        node.container_edits(grant, pod(), ctr({GPU: "1"}))


def test_prepare_makes_the_cache_and_lock_dirs_world_writable(gpu_node, host_root: Path):
    """Allocate: MkdirAll + Chmod 0777 of ``containers/<uid>_<name>`` and /tmp/vgpulock."""
    node = gpu_node()
    node.prepare([Grant("GPU-0", "NVIDIA", 1000, 0)], pod(), ctr({GPU: "1"}))
    for path in (host_root / "usr/local/vgpu/containers/uid-p_main", host_root / "tmp/vgpulock"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777, path


# ---------------------------------------------------------------- configurable resource names (charts/hami/values.yaml)


RENAMED = {
    "count": "nvidia.com/vgpu",
    "memory": "nvidia.com/vgpu-memory",
    "memory_percentage": "nvidia.com/vgpu-memory-percentage",
    "cores": "nvidia.com/vgpu-cores",
    "priority": "nvidia.com/vgpu-priority",
}


def test_renamed_resources_are_used_everywhere(gpu_node, tmp_path: Path):
    """charts/hami values resourceName/resourceMem/resourceMemPercentage/resourceCores/resourcePriority →
    device-configmap.yaml resourceCountName & co. (NvidiaConfig); our chart renders them as
    ``backends.nvidia.config.resource_names`` (deploy/helm/hami/templates/_helpers.tpl)."""
    node = gpu_node(resource_names=RENAMED)
    manager = node.manager
    # routing: the webhook, quota and kube-scheduler see only the new names
    assert manager.kind_for_resource("nvidia.com/vgpu").vendor == "NVIDIA"
    assert manager.kind_for_resource(GPU) is None and manager.kind_for_resource(MEM) is None
    assert manager.kinds["NVIDIA"].resources.all() == tuple(RENAMED.values())
    assert next(r.resources for r in manager.records if r.info and r.info.name == "nvidia") == tuple(RENAMED.values())
    managed = {m["name"] for m in scheduler_configuration(manager, "http://127.0.0.1:8444")["extenders"][0]["managedResources"]}
    assert managed == set(RENAMED.values())
    # requests and mutation
    assert manager.container_requests(ctr({GPU: "1"}), pod()) == []  # the NVIDIA device plugin's resource is not ours
    (r,) = manager.container_requests(ctr({"nvidia.com/vgpu": "1", "nvidia.com/vgpu-memory": "3000"}), pod())
    assert (r.count, r.memory) == (1, 3000)
    assert dict(manager.mutate_container(ctr({"nvidia.com/vgpu-memory": "3000"}), pod()).limits) == {"nvidia.com/vgpu": "1"}
    assert dict(manager.mutate_container(ctr({"nvidia.com/vgpu": "1"}), pod()).limits) == {"nvidia.com/vgpu-cores": "100"}
    with pytest.raises(RequestError, match=r"nvidia\.com/vgpu-memory-percentage=120"):
        manager.container_requests(ctr({"nvidia.com/vgpu": "1", "nvidia.com/vgpu-memory-percentage": "120"}), pod())
    # quota charges the renamed resources
    charged = pod_charge(
        manager, {"metadata": {}, "spec": {"containers": [ctr({"nvidia.com/vgpu": "1", "nvidia.com/vgpu-memory": "3000"})]}}
    )
    assert charged == {"limits.nvidia.com/vgpu": 1, "limits.nvidia.com/vgpu-memory": 3000}
    # the agent advertises the renamed count (its device plugin registers this resource)
    discovery = discover_node(manager, NODE, state_root=tmp_path / "state")
    assert {d.resource for d in discovery.devices} == {"nvidia.com/vgpu"}
    # the renamed priority reaches HAMi-core
    container = ctr({"nvidia.com/vgpu": "1", "nvidia.com/vgpu-priority": "0"})
    assert node.container_edits([Grant("GPU-0", "NVIDIA", 1000, 0)], pod(), container).env["CUDA_TASK_PRIORITY"] == "0"


def test_partial_renames_keep_the_other_names(nvidia):
    manager = nvidia(resource_names={"count": "nvidia.com/vgpu", "memory": None})
    assert manager.kinds["NVIDIA"].resources.all() == ("nvidia.com/vgpu", MEM, PCT, CORES, PRIORITY)
    manager = nvidia()  # configured again without resource_names: the declared names come back
    assert manager.kind_for_resource(GPU) is not None and manager.kind_for_resource("nvidia.com/vgpu") is None


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        ({"gpus": "nvidia.com/vgpu"}, "backends.nvidia.resource_names.gpus: NVIDIA has no such resource (renamable: count, memory"),
        ({"count": "vgpu"}, "'vgpu'"),
        ({"count": 3}, "resource_names.count=3"),
        ({"count": "nvidia.com/vgpu", "cores": "nvidia.com/vgpu"}, "'nvidia.com/vgpu' is given to two roles"),
        ("nvidia.com/vgpu", "must be a mapping"),
    ],
)
def test_bad_resource_names_are_refused_naming_the_key(nvidia, names, fragment):
    with pytest.raises(ValidationError) as caught:
        nvidia(resource_names=names)
    assert fragment in str(caught.value)


def test_a_rename_onto_another_backends_resource_is_refused(nvidia, register_backend):
    other = StandardBackend(
        BackendInfo(
            name="other",
            kinds=[
                DeviceKind(
                    "OTHER",
                    ResourceNames(count="example.com/vgpu"),
                    AnnotationKeys.hami("example.com/reg", "example.com/hs", "example.com/o"),
                )
            ],
        )
    )
    manager = nvidia()
    register_backend(other)
    with pytest.raises(ValidationError, match=r"'example\.com/vgpu' is already served by vendor 'OTHER'"):
        manager.configure("nvidia", {"resource_names": {"count": "example.com/vgpu"}})
    assert manager.kind_for_resource(GPU) is not None  # nothing changed


def test_a_backend_with_several_kinds_is_renamed_per_vendor_key():
    """Generic: the manager and StandardBackend rename any backend the same way (hami.plugin.naming)."""
    from hami.plugin.naming import renamed_info

    info = BackendInfo(
        name="multi",
        kinds=[
            DeviceKind(
                "A",
                ResourceNames(count="example.com/a", memory="example.com/a-mem"),
                AnnotationKeys.hami("example.com/ra", "example.com/ha", "example.com/a"),
            ),
            DeviceKind("B", ResourceNames(count="example.com/b"), AnnotationKeys.hami("example.com/rb", "example.com/hb", "example.com/b")),
        ],
    )
    renamed = renamed_info(info, {"resource_names": {"A": {"memory": "example.com/a-memory"}, "B": {"count": "example.com/vb"}}})
    assert renamed.resource_names == ("example.com/a", "example.com/a-memory", "example.com/vb")
    with pytest.raises(ValidationError, match="several device kinds"):
        renamed_info(info, {"resource_names": {"count": "example.com/x"}})
    with pytest.raises(ValidationError, match="used by two device kinds"):
        renamed_info(info, {"resource_names": {"B": {"count": "example.com/a"}}})
