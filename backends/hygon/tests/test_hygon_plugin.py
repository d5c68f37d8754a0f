"""The Hygon hooks end to end: requests, selectors, prepare → edits → release, hy-virtual."""

from __future__ import annotations

import attrs
import pytest
import yaml

from hami.sdk import (
    BackendError,
    DeviceNode,
    DeviceRequest,
    DeviceUsage,
    Grant,
    HamiError,
    Mount,
    NodeContext,
    SchedulableDevice,
)
from hami_hygon.plugin import INFO, KIND, HygonBackend

NODE = "dcu-node"


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "inventory.yaml"
    devices = [
        {
            "vendor": "DCU",
            "type": "DCU-K100_AI",
            "memory": 65520,
            "id": "DCU-TPXS320016070601",
            "index": 0,
            "attributes": {"pci_bus_id": "0000:05:00.0", "compute_units": 120, "card": "card3", "render": "renderD131"},
        },
        {
            "vendor": "DCU",
            "type": "DCU-Z100L",
            "memory": 32752,
            "id": "DCU-TPXS320010040501",
            "index": 1,
            "attributes": {"pci_bus_id": "0000:2b:00.0", "compute_units": 60},
        },
    ]
    path.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
    return path


@pytest.fixture
def root(tmp_path):
    return tmp_path / "vdev"


@pytest.fixture
def node(tmp_path):
    """The test node: simulated (its devices come from an inventory), so its vdev configs live in
    ``<state_dir>/vdev``, which is ``root``."""
    return NodeContext(NODE, simulated=True, state_dir=tmp_path)


@pytest.fixture
def manager(hami_manager, register_backend, inventory, root):
    backend = HygonBackend(attrs.evolve(INFO, host_paths=(*INFO.host_paths, str(root))))
    register_backend(backend, config={"inventory": str(inventory), "vdev_root": str(root), "node_name": NODE})
    hami_manager.discover("hygon", NODE)
    return hami_manager


def pod(annotations=None, uid="uid-1"):
    return {"metadata": {"name": "p", "namespace": "default", "uid": uid, "annotations": dict(annotations or {})}}


def container(name="main", **limits):
    return {"name": name, "resources": {"limits": {f"hygon.com/{k}": str(v) for k, v in limits.items()}}}


def test_requests_follow_hami(manager):
    (shared,) = manager.container_requests(container(dcunum=1, dcumem=2000, dcucores=60), pod())
    assert (shared.count, shared.memory, shared.cores) == (1, 2000, 60)
    (default,) = manager.container_requests(container(dcunum=1, dcumem=2000), pod())
    assert default.cores == 100  # HAMi's default: no dcucores means the whole compute
    (many,) = manager.container_requests(container(dcunum=2, dcumem=2000, dcucores=10), pod())
    assert (many.count, many.memory, many.memory_percentage, many.cores) == (2, 0, 100, 100)
    assert manager.mutate_container(container(dcunum=2, dcumem=2000), pod()).warnings
    # cores over 100 are clamped, as upstream pkg/device/hygon/device.go Fit does (``Coresreq > 100``)
    (clamped,) = manager.container_requests(container(dcunum=1, dcucores=150), pod())
    assert clamped.cores == 100


@pytest.mark.parametrize(
    "annotations,reason",
    [
        ({}, None),
        ({"hygon.com/use-dcutype": "k100"}, None),
        ({"hygon.com/use-dcutype": "Z100, BW"}, "CardTypeMismatch"),
        ({"hygon.com/nouse-dcutype": "DCU-K100_AI"}, "CardTypeMismatch"),
        ({"hygon.com/use-gpuuuid": "DCU-TPXS320016070601"}, None),
        ({"hygon.com/use-gpuuuid": "DCU-TPXS32001607060"}, "CardUuidMismatch"),  # exact, not prefix
        ({"hygon.com/nouse-gpuuuid": "DCU-TPXS320016070601,DCU-TPXS320010040501"}, "CardUuidMismatch"),
    ],
)
def test_selectors(manager, annotations, reason):
    device = DeviceUsage(SchedulableDevice(id="DCU-TPXS320016070601", vendor="DCU", type="DCU-K100_AI", count=4, memory=65520))
    assert manager.device_fits(DeviceRequest("DCU"), device, pod(annotations)) == reason


def test_prepare_edits_release(manager, root, node):
    grants = [Grant("DCU-TPXS320016070601", "DCU", 2000, 60)]
    ctr = container(dcunum=1, dcumem=2000, dcucores=60)
    manager.prepare(grants, pod(), ctr, node)
    conf = (root / "vdev0.conf").read_text()
    assert "PciBusId: 0000:05:00.0\n" in conf and "cu_count: 72\n" in conf and "mem: 2000 MiB\n" in conf
    edits = manager.container_edits(grants, pod(), ctr, node)
    assert edits.devices == (
        DeviceNode("/dev/kfd", "/dev/kfd", "rwm"),
        DeviceNode("/dev/mkfd", "/dev/mkfd", "rwm"),
        DeviceNode("/dev/dri/card3", "/dev/dri/card3", "rw"),
        DeviceNode("/dev/dri/renderD131", "/dev/dri/renderD131", "rw"),
    )
    assert edits.mounts == (
        Mount("/etc/vdev/docker", str(root / "containers" / "uid-1_main")),
        Mount("/opt/hygondriver", "/opt/hygondriver"),
        Mount("/opt/hyhal", "/opt/hyhal", read_only=True),
    )
    manager.release(grants, pod(), ctr, node)
    assert not list(root.glob("vdev*.conf"))
    assert manager.container_edits(grants, pod(), ctr, node).mounts == (Mount("/opt/hyhal", "/opt/hyhal", read_only=True),)


def test_whole_and_multiple_dcus_get_no_vdev(manager, root, node):
    manager.prepare([Grant("DCU-TPXS320010040501", "DCU", 32752, 100)], pod(), container(), node)
    two = [Grant("DCU-TPXS320016070601", "DCU", 65520, 100), Grant("DCU-TPXS320010040501", "DCU", 32752, 100)]
    manager.prepare(two, pod(uid="uid-2"), container(), node)
    assert not root.exists() or not list(root.glob("vdev*.conf"))
    names = [d.container_path for d in manager.container_edits(two, pod(uid="uid-2"), container(), node).devices]
    assert names == ["/dev/kfd", "/dev/mkfd", "/dev/dri/card3", "/dev/dri/renderD131", "/dev/dri/card1", "/dev/dri/renderD129"]


def test_two_containers_on_one_dcu_never_share_units(manager, root, node):
    grant = [Grant("DCU-TPXS320010040501", "DCU", 1000, 50)]
    manager.prepare(grant, pod(uid="a"), container(), node)
    manager.prepare(grant, pod(uid="b"), container(), node)
    with pytest.raises(BackendError, match="compute units are free"):
        manager.prepare([Grant("DCU-TPXS320010040501", "DCU", 1000, 10)], pod(uid="c"), container(), node)
    masks = [int(line.split()[1], 16) for f in root.glob("vdev*.conf") for line in f.read_text().splitlines()[1:2]]
    assert len(masks) == 2 and masks[0] & masks[1] == 0


def test_unknown_device_is_a_clear_error(manager, node):
    with pytest.raises(BackendError, match="DCU-nope"):
        manager.container_edits([Grant("DCU-nope", "DCU", 1, 1)], pod(), container(), node)


def test_hy_virtual_is_invoked_and_failure_rolls_back(hami_manager, register_backend, inventory, root, fake_tools, node):
    fake_tools.install("hy-virtual", {"create 0": None, "remove 0": None})
    backend = HygonBackend(attrs.evolve(INFO, host_paths=(*INFO.host_paths, str(root))))
    config = {"inventory": str(inventory), "vdev_root": str(root), "node_name": NODE, "hy_virtual": ["hy-virtual", "{action}", "{vdev_id}"]}
    register_backend(backend, config=config)
    grants = [Grant("DCU-TPXS320016070601", "DCU", 2000, 60)]
    hami_manager.prepare(grants, pod(), container(), node)
    hami_manager.release(grants, pod(), container(), node)
    assert fake_tools.calls("hy-virtual") == [["create", "0"], ["remove", "0"]]
    fake_tools.install("hy-virtual", {})  # every call now fails
    with pytest.raises(BackendError, match="hy_virtual"):
        hami_manager.prepare(grants, pod(uid="x"), container(), node)
    assert not list(root.glob("vdev*.conf")) and not (root / "containers" / "x_main").exists()


def test_csv_kind_is_unchanged():
    assert KIND.node_encoding == "csv" and KIND.annotations.allocated == "hami.io/dcu-devices-allocated"


def test_a_simulated_node_keeps_vdev_configs_private_but_reports_real_paths(hami_manager, register_backend, tmp_path):
    """The sandbox (a simulated node) must not write /etc/vdev on the machine it runs on."""
    import yaml

    from hami.plugin.model import Grant
    from hami_hygon.plugin import plugin

    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(yaml.safe_dump({"nodes": [{"name": "n", "devices": [{"vendor": "DCU", "type": "Z100", "memory": 32768}]}]}))
    register_backend(plugin, config={"inventory": str(inventory), "vdev_root": str(tmp_path / "etc-vdev")})
    pod = {"metadata": {"uid": "u1", "name": "p", "namespace": "default"}}
    container = {"name": "c"}
    grants = [Grant("DCU-n-0", "DCU", 4000, 30)]
    hami_manager.configure(
        "hygon", {"inventory": str(inventory), "vdev_root": str(tmp_path / "etc-vdev"), "extra_host_paths": [str(tmp_path / "etc-vdev")]}
    )
    node = hami_manager.node_context("hygon", "n", state_root=tmp_path / "state")
    assert node.simulated  # an inventory is configured
    hami_manager.prepare(grants, pod, container, node)
    edits = hami_manager.container_edits(grants, pod, container, node)
    assert not (tmp_path / "etc-vdev").exists()  # nothing written where a real node keeps its configs
    assert list((tmp_path / "state" / "hygon" / "vdev").glob("vdev*.conf"))  # but in the node's state directory
    assert any(m.host_path.startswith(str(tmp_path / "etc-vdev")) for m in edits.mounts)  # and the real path is reported
    hami_manager.release(grants, pod, container, node)
    assert not list((tmp_path / "state" / "hygon" / "vdev").glob("vdev*.conf"))


def test_whole_dcu_warning_keeps_the_request_rules_warnings(manager):
    """The shared request rules' admission warnings (hami.backendkit.limits.request_warnings: cores over
    100 clamped, as upstream pkg/device/hygon/device.go Fit does with ``Coresreq > 100``) reach the pod
    owner beside Hygon's own whole-DCU warning, as every other backend passes them on."""
    warnings = manager.mutate_container(container(dcunum=2, dcumem=2000, dcucores=150), pod()).warnings
    assert any("hygon.com/dcucores=150 is clamped to 100" in w for w in warnings), warnings
    assert any("gets whole DCUs" in w for w in warnings), warnings


def test_a_count_of_unicode_digits_is_refused_by_name_not_a_crash(manager):
    """``'²'.isdigit()`` is true but ``int('²')`` raises: the whole-DCU check reads counts with
    ``isdecimal`` (no ValueError out of the webhook) and the request rules refuse the value by name."""
    odd = container(dcunum="²", dcumem=2000)
    manager.mutate_container(odd, pod())
    with pytest.raises(HamiError) as refused:
        manager.container_requests(odd, pod())
    assert "²" in str(refused.value)
