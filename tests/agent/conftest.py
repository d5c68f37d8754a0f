"""The node the agent tests share: two 16 GiB NVIDIA-typed devices (four slots each) behind a
recording backend, and a fake kubelet for node-1 talking to the test API server."""

from __future__ import annotations

import pytest
import yaml

from hami.fakes.agent import RecordingBackend
from hami.fakes.kubelet import FakeKubelet
from hami_nvidia.plugin import INFO as NVIDIA_INFO

NODE = "node-1"
DEVICES = ("NVIDIA-node-1-0", "NVIDIA-node-1-1")


@pytest.fixture
def backend(hami_manager, register_backend, tmp_path):
    """Register the recording backend over a two-device inventory; tests read its calls."""
    inventory = tmp_path / "nodes.yaml"
    devices = [
        {"vendor": "NVIDIA", "type": "NVIDIA A100", "memory": 16384, "id": device, "index": index, "numa": index}
        for index, device in enumerate(DEVICES)
    ]
    inventory.write_text(yaml.safe_dump({"nodes": [{"name": NODE, "devices": devices}]}))
    plugin = RecordingBackend(NVIDIA_INFO)
    register_backend(plugin, config={"inventory": str(inventory), "split_count": 4})
    return plugin


@pytest.fixture
def kubelet(kubelet_dir, core_v1):
    with FakeKubelet(kubelet_dir, NODE, core_v1=core_v1) as k:
        yield k
