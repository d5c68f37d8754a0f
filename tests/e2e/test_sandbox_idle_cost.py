"""What an idle simulated node costs (issue 29): the fake kubelets share one grpc.aio loop instead
of holding threads each, the agent's ListAndWatch stream waits on an event instead of polling, and
a large sandbox stretches its agents' periodic work so it does not grow with idle nodes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from hami.fakes.kubelet import FakeKubelet
from hami.fakes.kubelet.sample_plugin import SamplePlugin
from hami.node.plugin_server import _WAKE_S, DevicePluginServicer
from hami.sandbox.cli import load_pods
from hami.sandbox.cluster import CROWDED_SWITCH_INTERVAL, QUIET_NODES, agent_intervals, switch_interval

RESOURCE = "example.com/gpu"


def _short_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hk", dir="/tmp"))  # unix socket paths must stay short


def test_kubelets_and_their_streams_hold_no_thread_each():
    count = 6
    dirs = [_short_dir() for _ in range(count)]
    plugins = [SamplePlugin(d / "plugin.sock", ["d0", "d1"]).start() for d in dirs]
    kubelets: list[FakeKubelet] = []
    try:
        kubelets.append(FakeKubelet(dirs[0], "node-0").start())  # the shared loop starts with the first one
        before = threading.active_count()
        kubelets.extend(FakeKubelet(d, f"node-{i}").start() for i, d in enumerate(dirs[1:], 1))
        assert threading.active_count() - before <= 1, "serving Registration and PodResources must not start threads per kubelet"
        for plugin, kubelet in zip(plugins, kubelets, strict=True):
            plugin.register(kubelet.socket_path, RESOURCE)
        for kubelet in kubelets:
            assert kubelet.wait_devices(RESOURCE, 2) == {"d0": "Healthy", "d1": "Healthy"}
        # the plugin side serves each stream from a thread of its pool; the kubelet side adds none
        # (the synchronous client held a stream thread and a channel spin thread per plugin)
        assert threading.active_count() - before <= count + 2
        plugins[3].set_health("d1", "Unhealthy")  # the streams still deliver
        assert kubelets[3].wait_devices(RESOURCE, 1) == {"d0": "Healthy", "d1": "Unhealthy"}
    finally:
        for kubelet in kubelets:
            kubelet.stop()
        for plugin in plugins:
            plugin.stop()
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


class _Context:
    """The two things ListAndWatch asks of its grpc context."""

    def __init__(self) -> None:
        self.active = True
        self.callbacks: list = []

    def is_active(self) -> bool:
        return self.active

    def add_callback(self, callback) -> bool:
        self.callbacks.append(callback)
        return True


def test_a_stream_kubelet_hangs_up_ends_on_the_termination_callback_not_a_poll():
    servicer = DevicePluginServicer(RESOURCE, handler=None)  # type: ignore[arg-type]  # no Allocate here
    servicer.set_devices([])
    context = _Context()
    stream = servicer.ListAndWatch(None, context)  # type: ignore[arg-type]
    next(stream)  # the first list; the stream now waits for a change
    ended = threading.Event()

    def drain() -> None:
        for _ in stream:
            pass
        ended.set()

    threading.Thread(target=drain, daemon=True).start()
    assert not ended.wait(0.2)
    context.active = False
    for callback in context.callbacks:  # what grpc does when the RPC terminates
        callback()
    assert ended.wait(_WAKE_S / 2), "the hang-up must wake the stream, not its safety-net poll"


def test_small_sandboxes_keep_the_daemonset_intervals():
    assert agent_intervals(1) == agent_intervals(QUIET_NODES) == (5.0, 0.5)


@given(st.integers(min_value=1, max_value=20_000))
def test_background_work_of_the_whole_sandbox_is_bounded_by_a_quiet_one(nodes):
    usage, poll = agent_intervals(nodes)
    quiet_usage, quiet_poll = agent_intervals(QUIET_NODES)
    assert usage >= 5.0 and poll >= 0.5
    # pod lists per second and kubelet checks per second, summed over every agent
    assert nodes / usage <= QUIET_NODES / quiet_usage + 1e-9
    assert nodes / poll <= QUIET_NODES / quiet_poll + 1e-9


def test_an_idle_watch_on_a_descriptor_past_1024_stays_open():
    """A 200-node sandbox holds more than 1,024 descriptors; the API server's idle check of a watch
    used select(), which fails past 1,024, so those watches were cut every idle check and re-listed."""
    from kubernetes import client

    from hami.fakes.kubeapi import KubeAPIServer
    from hami.fakes.kubeapi.server import _IDLE_CHECK

    pipes = [os.pipe() for _ in range(600)]  # push the next descriptors past 1,024
    try:
        with KubeAPIServer() as server:
            core_v1 = client.CoreV1Api(server.api_client())
            stream = core_v1.list_namespaced_pod("default", watch=True, timeout_seconds=60, _preload_content=False)
            assert max(fd for pair in pipes for fd in pair) > 1024
            time.sleep(_IDLE_CHECK * 1.5)  # at least one idle check of the stream
            body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "late"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
            client.CoreV1Api(server.api_client()).create_namespaced_pod("default", body)
            line = stream.readline()
            assert json.loads(line)["object"]["metadata"]["name"] == "late", line
            stream.release_conn()
    finally:
        for pair in pipes:
            for fd in pair:
                os.close(fd)


def test_pods_through_the_sandbox_reuse_the_api_connections(tmp_path):
    """Every raw answer is read to its end: one left unread (the agent's pod patch in Allocate) kept
    its connection out of the pool, so each pod opened a new TCP connection and left an API-server
    thread waiting on it."""
    from hami.sandbox.cluster import Sandbox

    nodes_file, pods_file = tmp_path / "nodes.yaml", tmp_path / "pods.yaml"
    nodes_file.write_text(
        "nodes:\n"
        + "".join(
            f"  - name: gpu-{i}\n    devices:\n      - {{vendor: NVIDIA, type: NVIDIA A100-SXM4-80GB, memory: 80Gi, count: 8}}\n"
            for i in range(2)
        )
    )
    pods_file.write_text(
        "".join(
            f"---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p-{i}}}\nspec:\n  containers:\n    - name: c\n      image: cuda\n"
            "      resources: {limits: {nvidia.com/gpu: 1, nvidia.com/gpumem: 3000}}\n"
            for i in range(12)
        )
    )
    pods = load_pods((str(pods_file),))
    with Sandbox(nodes_file) as sandbox:
        sandbox.submit(pods[0])  # the first pod warms every pool
        before = sandbox.api.connections_accepted
        outcomes = [sandbox.submit(pod) for pod in pods[1:]]
        opened = sandbox.api.connections_accepted - before
    assert [o.phase for o in outcomes] == ["Running"] * 11
    assert opened <= 3, f"{opened} new API connections for 11 pods"


def test_only_a_crowded_sandbox_stretches_the_thread_switch_interval(tmp_path):
    assert switch_interval(1) is None and switch_interval(QUIET_NODES) is None
    assert switch_interval(QUIET_NODES + 1) == switch_interval(500) == CROWDED_SWITCH_INTERVAL > sys.getswitchinterval()
    from hami.sandbox.cluster import Sandbox

    nodes_file = tmp_path / "nodes.yaml"  # crowded by count: nodes without devices start quickly
    nodes_file.write_text("nodes:\n" + "".join(f"  - name: n-{i}\n" for i in range(QUIET_NODES + 1)))
    before = sys.getswitchinterval()
    with Sandbox(nodes_file):
        assert abs(sys.getswitchinterval() - CROWDED_SWITCH_INTERVAL) < 1e-6  # stored in microseconds
    assert abs(sys.getswitchinterval() - before) < 1e-6
