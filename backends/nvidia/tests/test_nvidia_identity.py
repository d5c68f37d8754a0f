"""The NVIDIA backend speaks HAMi's names (hami-compat.md) and HAMi's request rules."""

from __future__ import annotations

import pytest

from hami.sdk import RequestError
from hami_nvidia.plugin import KIND, plugin


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(plugin)
    return hami_manager


def test_hami_wire_names():
    assert KIND.vendor == "NVIDIA"
    assert KIND.resources.all() == (
        "nvidia.com/gpu",
        "nvidia.com/gpumem",
        "nvidia.com/gpumem-percentage",
        "nvidia.com/gpucores",
        "nvidia.com/priority",
    )
    assert KIND.annotations.node_register == "hami.io/node-nvidia-register"
    assert KIND.annotations.handshake == "hami.io/node-handshake"
    assert KIND.annotations.to_allocate == "hami.io/vgpu-devices-to-allocate"
    assert KIND.annotations.allocated == "hami.io/vgpu-devices-allocated"
    assert KIND.node_encoding == "json"


@pytest.mark.parametrize(
    ("limits", "count", "memory", "percentage", "cores"),
    [
        ({"nvidia.com/gpumem": "3000"}, 1, 3000, None, 0),  # the seed's example: memory alone → one GPU
        ({"nvidia.com/gpu": "2"}, 2, 0, 100, 0),  # count alone → whole memory
        ({"nvidia.com/gpucores": "50"}, 1, 0, 100, 50),
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "25"}, 1, 0, 25, 0),
    ],
)
def test_hami_request_defaults(manager, limits, count, memory, percentage, cores):
    container = {"name": "c", "resources": {"limits": limits}}
    (request,) = manager.container_requests(container, {})
    assert (request.count, request.memory, request.memory_percentage, request.cores) == (count, memory, percentage, cores)


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "101"}, "nvidia.com/gpumem-percentage=101"),
        ({"nvidia.com/gpu": "0", "nvidia.com/gpumem": "10"}, "nvidia.com/gpu=0"),
        ({"nvidia.com/gpu": "1.5"}, "'1.5'"),
        ({"nvidia.com/gpumem": "-1"}, "'-1'"),
    ],
)
def test_impossible_requests_name_the_value(manager, limits, fragment):
    with pytest.raises(RequestError, match=fragment.replace(".", r"\.").replace("'", "'")):
        manager.container_requests({"name": "c", "resources": {"limits": limits}}, {})


def test_webhook_default_adds_one_gpu_when_only_memory_is_given(manager):
    patch = manager.mutate_container({"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "3000"}}}, {})
    assert dict(patch.limits) == {"nvidia.com/gpu": "1"}
    assert (
        manager.mutate_container({"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "30"}}}, {}).limits
        == {}
    )


def test_importing_the_backend_does_not_touch_nvml_and_works_without_the_bindings():
    """Nodes without GPUs (or without nvidia-ml-py) load the backend; discovery then finds nothing."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')\n"
        "import hami_nvidia.plugin as p\n"
        "assert 'pynvml' not in sys.modules, 'imported pynvml at import time'\n"
        "sys.modules['pynvml'] = None  # as if nvidia-ml-py were not installed\n"
        "from hami.sdk import NodeContext\n"
        "print(p.plugin.hami_discover_devices(p.INFO.default_config, NodeContext('cpu-node')))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert "event=nvml_unavailable node=cpu-node reason='nvidia-ml-py is not installed'" in done.stderr
