"""The assembled scheduler: the real command, leader election, the liveness handshake, the generated
kube-scheduler configuration."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client

from hami.plugin.model import SchedulableDevice
from hami.scheduler.cli import scheduler_config_command
from hami.scheduler.handshake import HandshakeRequester
from hami.scheduler.leader import LeaderElector
from hami.scheduler.state import ClusterState
from hami.wire.annotations import HANDSHAKE_TIME_LAYOUT
from hami.wire.codec import encode_node_devices
from hami.wire.signing import SigningKeys
from hami_nvidia.plugin import KIND


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_scheduler_config_manages_every_installed_resource():
    result = CliRunner().invoke(scheduler_config_command, ["--url", "https://hami.kube-system.svc:443"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.output)
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["profiles"] == [{"schedulerName": "hami-scheduler"}]
    (extender,) = config["extenders"]
    assert extender["urlPrefix"] == "https://hami.kube-system.svc:443" and extender["nodeCacheCapable"] is True
    assert extender["bindVerb"] == "bind" and extender["enableHTTPS"] is True and extender["tlsConfig"] == {"insecure": True}
    managed = {r["name"]: r["ignoredByScheduler"] for r in extender["managedResources"]}
    for name in ("nvidia.com/gpu", "nvidia.com/gpumem", "hygon.com/dcumem", "huawei.com/Ascend910B3", "cambricon.com/vmlu"):
        assert managed[name] is True


def test_scheduler_config_defaults_to_the_loopback_extender_and_can_send_a_client_certificate():
    (extender,) = yaml.safe_load(CliRunner().invoke(scheduler_config_command, []).output)["extenders"]
    assert extender["urlPrefix"] == "http://127.0.0.1:8444" and extender["enableHTTPS"] is False and "tlsConfig" not in extender
    result = CliRunner().invoke(
        scheduler_config_command,
        ["--url", "https://127.0.0.1:8444", "--ca-file", "/ca.crt", "--client-cert", "/c.crt", "--client-key", "/c.key"],
    )
    (extender,) = yaml.safe_load(result.output)["extenders"]
    assert extender["tlsConfig"] == {"insecure": False, "caFile": "/ca.crt", "certFile": "/c.crt", "keyFile": "/c.key"}
    refused = CliRunner().invoke(scheduler_config_command, ["--client-cert", "/c.crt", "--client-key", "/c.key"])
    assert refused.exit_code == 2 and "is not https://" in refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--extender-bind", "0.0.0.0:8444"], "reachable from outside the pod"),
        (["--extender-bind", "127.0.0.1:8443", "--bind", "127.0.0.1:8443"], "needs a listener of its own"),
    ],
)
def test_the_scheduler_refuses_an_exposed_extender_without_a_client_ca(tmp_path, args, message):
    from hami.scheduler.cli import scheduler_command

    result = CliRunner().invoke(scheduler_command, [*args, "--insecure-skip-signature"])
    assert result.exit_code == 2 and message in result.output


def test_the_scheduler_command_serves_a_pod(kube_apiserver, core_v1, tmp_path):
    kubeconfig = kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig")
    devices = [SchedulableDevice(id="GPU-0", vendor="NVIDIA", type="A100", count=4, memory=8000)]
    core_v1.create_node(
        client.V1Node(
            metadata=client.V1ObjectMeta(name="n1", annotations={KIND.annotations.node_register: encode_node_devices(devices, "json")})
        )
    )
    keys = tmp_path / "keys"
    keys.mkdir()
    SigningKeys.generate().write(keys, private=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hami.cli",
            "scheduler",
            "--bind",
            "127.0.0.1:0",
            "--extender-bind",
            "127.0.0.1:0",
            "--kubeconfig",
            str(kubeconfig),
            "--signing-key-dir",
            str(keys),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("hami scheduler serving on http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[-1]
        extender_line = process.stdout.readline()
        assert extender_line.startswith("hami scheduler extender (kube-scheduler's) on http://127.0.0.1:"), extender_line
        extender_url = extender_line.split()[-1]

        def ready():
            try:
                return urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200
            except urllib.error.HTTPError:
                return False  # 503 until the cache has synced

        assert wait_for(ready)
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "r-1",
                "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "default",
                "object": {
                    "metadata": {"name": "w"},
                    "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "3000"}}}]},
                },
            },
        }
        answer = json.loads(
            urllib.request.urlopen(
                urllib.request.Request(f"{url}/webhook", data=json.dumps(review).encode(), method="POST"), timeout=10
            ).read()
        )
        assert answer["response"]["uid"] == "r-1" and answer["response"]["allowed"] is True
        patch = json.loads(base64.b64decode(answer["response"]["patch"]))
        assert {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"} in patch
        core_v1.create_namespaced_pod(
            "default",
            client.V1Pod(
                metadata=client.V1ObjectMeta(name="p"),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="c", image="i", resources=client.V1ResourceRequirements(limits={"nvidia.com/gpumem": "1000"})
                        )
                    ]
                ),
            ),
        )
        pod = json.loads(core_v1.read_namespaced_pod("p", "default", _preload_content=False).data)
        filter_body = json.dumps({"Pod": pod, "NodeNames": ["n1"]}).encode()
        with pytest.raises(urllib.error.HTTPError) as refused:  # the webhook listener does not serve kube-scheduler's verbs
            urllib.request.urlopen(urllib.request.Request(f"{url}/filter", data=filter_body, method="POST"), timeout=10)
        assert refused.value.code == 404 and "--extender-bind" in json.loads(refused.value.read())["Error"]
        request = urllib.request.Request(f"{extender_url}/filter", data=filter_body, method="POST")
        assert json.loads(urllib.request.urlopen(request, timeout=10).read())["NodeNames"] == ["n1"]
        assert wait_for(lambda: "hami.io/allocation-signature" in (core_v1.read_namespaced_pod("p", "default").metadata.annotations or {}))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode in (0, -15)


def test_the_scheduler_refuses_to_run_unsigned_unless_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HAMI_")}
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "hami.cli", "scheduler", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no signing key: pass --signing-key-dir" in result.stderr


def test_one_leader_and_takeover(kube_apiserver):
    api = client.CoordinationV1Api(kube_apiserver.api_client())
    a = LeaderElector(api, "kube-system", "hami-scheduler", "replica-a", lease_seconds=1)
    b = LeaderElector(api, "kube-system", "hami-scheduler", "replica-b", lease_seconds=1)
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert a.try_acquire() is True  # renewal
    time.sleep(1.2)  # a stops renewing
    assert b.try_acquire() is True
    assert a.try_acquire() is False
    lease = api.read_namespaced_lease("hami-scheduler", "kube-system")
    assert lease.spec.holder_identity == "replica-b" and lease.spec.lease_transitions == 1


def test_handshake_marks_silent_agents_dead(core_v1):
    state = ClusterState({"NVIDIA": KIND})
    devices = encode_node_devices([SchedulableDevice(id="GPU-0", vendor="NVIDIA", type="A100", count=4, memory=8000)], "json")
    long_ago = datetime.fromtimestamp(time.time() - 300).strftime(HANDSHAKE_TIME_LAYOUT)
    core_v1.create_node(
        client.V1Node(
            metadata=client.V1ObjectMeta(
                name="n1", annotations={KIND.annotations.node_register: devices, KIND.annotations.handshake: f"Reported_{long_ago}"}
            )
        )
    )
    state.apply_node(json.loads(core_v1.read_node("n1", _preload_content=False).data))
    requester = HandshakeRequester(state, core_v1)
    assert requester.request_once() == 1
    value = core_v1.read_node("n1").metadata.annotations[KIND.annotations.handshake]
    assert value.startswith("Requesting_")
    state.apply_node(json.loads(core_v1.read_node("n1", _preload_content=False).data))
    assert list(state.node("n1").devices) == ["GPU-0"]  # asked just now: still alive
    state.clock = lambda: time.time() + 61  # the agent never answers
    state.recheck_handshakes()
    assert state.node("n1").devices == {} and "has not reported" in state.node("n1").problems["NVIDIA"]
