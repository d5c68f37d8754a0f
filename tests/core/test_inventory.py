"""The node inventory format: the simulated source every backend can discover from."""

from __future__ import annotations

import pytest
import yaml

from hami.backendkit.inventory import inventory_devices, load_inventory, parse_inventory
from hami.errors import InventoryError


def test_a_heterogeneous_node(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "nodes": [
                    {
                        "name": "mixed",
                        "cpu": "1500m",
                        "memory": "64Gi",
                        "labels": {"zone": "a"},
                        "devices": [
                            {"vendor": "NVIDIA", "type": "NVIDIA A100-SXM4-80GB", "memory": "80Gi", "count": 2, "numa": 1},
                            {"vendor": "DCU", "type": "Z100", "memory": 16368, "id": "DCU-fixed", "index": 4, "healthy": False},
                        ],
                    }
                ]
            }
        )
    )
    (node,) = load_inventory(path)
    assert (node.name, node.cpu_milli, node.memory, dict(node.labels)) == ("mixed", 1500, 65536, {"zone": "a"})
    assert [(d.id, d.index, d.memory, d.numa, d.healthy) for d in node.devices] == [
        ("NVIDIA-mixed-0", 0, 81920, 1, True),
        ("NVIDIA-mixed-1", 1, 81920, 1, True),
        ("DCU-fixed", 4, 16368, 0, False),
    ]
    assert [d.id for d in inventory_devices({"inventory": str(path)}, "mixed", ["DCU"])] == ["DCU-fixed"]
    assert inventory_devices({"inventory": str(path)}, "other-node", ["DCU"]) == []
    assert inventory_devices({}, "mixed", ["DCU"]) == []


def test_the_environment_variable_names_the_inventory(tmp_path, monkeypatch):
    path = tmp_path / "nodes.yaml"
    path.write_text("nodes: [{name: n, devices: [{vendor: V, type: t, memory: 1}]}]")
    monkeypatch.setenv("HAMI_INVENTORY", str(path))
    assert [d.id for d in inventory_devices({}, "n", ["V"])] == ["V-n-0"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "expected a mapping"),
        ({"nodes": "x"}, "'nodes' must be a list"),
        ({"nodes": [{"devices": []}]}, "node #0: name=None"),
        ({"nodes": [{"name": "n", "gpus": 1}]}, "unknown key(s) ['gpus']"),
        ({"nodes": [{"name": "n", "devices": [{"vendor": "V", "type": "t"}]}]}, "node 'n' device #0: missing 'memory'"),
        ({"nodes": [{"name": "n", "devices": [{"vendor": "V", "type": "t", "memory": "lots"}]}]}, "quantity 'lots'"),
        ({"nodes": [{"name": "n", "devices": [{"vendor": "V", "type": "t", "memory": 1, "count": 0}]}]}, "count=0"),
        ({"nodes": [{"name": "n", "devices": [{"vendor": "V", "type": "t", "memory": 1, "count": 2, "id": "x"}]}]}, "names one device"),
        ({"nodes": [{"name": "n", "devices": [{"vendor": "", "type": "t", "memory": 1}]}]}, "PhysicalDevice.vendor=''"),
        ({"nodes": [{"name": "n"}, {"name": "n"}]}, "node names repeat: ['n']"),
        ({"nodes": [{"name": "n", "cpu": "fast"}]}, "node 'n' cpu"),
    ],
)
def test_mistakes_name_the_place_and_value(data, fragment):
    with pytest.raises(InventoryError) as caught:
        parse_inventory(data)
    assert fragment in str(caught.value)


def test_unreadable_files_are_inventory_errors(tmp_path):
    with pytest.raises(InventoryError, match="No such file"):
        load_inventory(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [unclosed")
    with pytest.raises(InventoryError, match="not valid YAML"):
        load_inventory(bad)


def test_two_entries_of_one_vendor_number_on_from_their_index():
    (node,) = parse_inventory(
        {
            "nodes": [
                {
                    "name": "n",
                    "devices": [
                        {"vendor": "NVIDIA", "type": "A100", "memory": 1, "count": 2, "numa": 0},
                        {"vendor": "NVIDIA", "type": "A100", "memory": 1, "count": 2, "numa": 1, "index": 2},
                    ],
                }
            ]
        }
    )
    assert [(d.id, d.index, d.numa) for d in node.devices] == [
        ("NVIDIA-n-0", 0, 0),
        ("NVIDIA-n-1", 1, 0),
        ("NVIDIA-n-2", 2, 1),
        ("NVIDIA-n-3", 3, 1),
    ]
    with pytest.raises(InventoryError, match="index=-1"):
        parse_inventory({"nodes": [{"name": "n", "devices": [{"vendor": "V", "type": "t", "memory": 1, "index": -1}]}]})
