"""Issue 19 items 1 and 6, over real HTTP(S) on 127.0.0.1: only kube-scheduler reaches the verbs,
requests only name the pod (the informer's copy is scheduled), bind cannot get around nodeSelector /
affinity, and the server bounds what one client can hold (idle, handshake, request deadline, body
size), reloads a rotated certificate and answers malformed Pods with errors naming the field."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from hami.certs import issue
from hami.fakes.extender import TEST_KEYS, ExtenderHarness
from hami.plugin.model import SchedulableDevice
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.server import ExtenderHTTPServer
from hami.scheduler.service import SchedulerService
from hami.webhook.admission import review
from hami.webhook.config import WebhookConfig
from hami.wire.allocation import read_allocated, verify_allocation
from hami.wire.annotations import NODE_LOCK
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND, plugin


@pytest.fixture
def manager(hami_manager, register_backend):
    register_backend(plugin)
    return hami_manager


def add_node(core_v1, name, labels=None):
    devices = [
        SchedulableDevice(id=f"{name}-gpu-{i}", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=20000, cores=100, index=i)
        for i in range(2)
    ]
    annotations = {KIND.annotations.node_register: encode_node_devices(devices, "json")}
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels, annotations=annotations)))


def add_pod(core_v1, name, limits, *, node_selector=None, affinity=None):
    spec = client.V1PodSpec(
        scheduler_name="hami-scheduler",
        node_selector=node_selector,
        affinity=affinity,
        containers=[client.V1Container(name="main", image="cuda", resources=client.V1ResourceRequirements(limits=limits))],
    )
    return core_v1.create_namespaced_pod("default", client.V1Pod(metadata=client.V1ObjectMeta(name=name, namespace="default"), spec=spec))


@pytest.fixture
def harness(manager, core_v1):
    add_node(core_v1, "gpu-a", {"zone": "a"})
    add_node(core_v1, "gpu-b", {"zone": "b"})
    h = ExtenderHarness(manager, core_v1, pod_wait=0.2).start()
    yield h
    h.stop()


def post(url, verb, body, context=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/{verb}", data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def write_bundle(directory: Path, prefix: str = "tls"):
    bundle = issue(["localhost", "127.0.0.1"])
    (directory / f"{prefix}.crt").write_text(bundle.cert)
    (directory / f"{prefix}.key").write_text(bundle.key)
    (directory / f"{prefix}-ca.crt").write_text(bundle.ca)
    return bundle


def client_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a clientAuth certificate it signed (kube-scheduler's, in a deployment that exposes the extender)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-scheduler-client-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-scheduler")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = directory / "client-ca.crt", directory / "client.crt", directory / "client.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


# ------------------------------------------------------------ item 1: who reaches the verbs


def test_the_webhook_listener_refuses_the_verbs_the_extender_listener_serves_them(manager, kube_apiserver, core_v1):
    add_node(core_v1, "gpu-a")
    add_pod(core_v1, "p", {"nvidia.com/gpumem": "1000"})
    config = WebhookConfig()
    service = SchedulerService(
        manager,
        kube_apiserver.api_client(),
        SchedulerConfig(),
        TEST_KEYS,
        host="127.0.0.1",
        port=0,
        webhook=lambda body: review(manager, body, config, None),
    )
    service.start()
    try:
        assert service.cache.wait_synced(10)
        webhook_url, extender_url = service.server.url, service.extender_server.url
        assert webhook_url != extender_url and extender_url.startswith("http://127.0.0.1:")
        pod = json.loads(core_v1.read_namespaced_pod("p", "default", _preload_content=False).data)
        filter_args = {"Pod": pod, "NodeNames": ["gpu-a"]}
        bind_args = {"PodName": "p", "PodNamespace": "default", "PodUID": pod["metadata"]["uid"], "Node": "gpu-a"}
        for verb, body in (("filter", filter_args), ("prioritize", filter_args), ("bind", bind_args), ("echo", {})):
            status, answer = post(webhook_url, verb, body)
            assert status == 404 and "--extender-bind" in answer["Error"], (verb, answer)
        assert core_v1.read_namespaced_pod("p", "default").spec.node_name is None  # nothing happened
        status, answer = post(extender_url, "filter", filter_args)
        assert status == 200 and answer["NodeNames"] == ["gpu-a"], answer
        assert post(extender_url, "bind", bind_args) == (200, {"Error": ""})
        assert core_v1.read_namespaced_pod("p", "default").spec.node_name == "gpu-a"
        review_body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "r",
                "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "default",
                "object": {"metadata": {"name": "w"}, "spec": {"containers": [{"name": "c"}]}},
            },
        }
        assert post(webhook_url, "webhook", review_body)[1]["response"]["allowed"] is True
        assert post(extender_url, "webhook", review_body)[0] == 404  # and the API server's route is not on kube-scheduler's
        for url in (webhook_url, extender_url):  # probes and Prometheus reach both
            for path in ("healthz", "readyz", "metrics"):
                assert urllib.request.urlopen(f"{url}/{path}", timeout=5).status == 200
    finally:
        service.stop()


def test_with_a_client_ca_a_client_without_a_certificate_is_refused(manager, tmp_path):
    from hami.scheduler.core import Scheduler
    from hami.scheduler.server import Extender
    from hami.scheduler.state import ClusterState

    write_bundle(tmp_path)
    ca, cert, key = client_certificate(tmp_path)
    extender = Extender(Scheduler(manager, ClusterState(manager.kinds), None))
    with ExtenderHTTPServer(
        extender, tls_cert=str(tmp_path / "tls.crt"), tls_key=str(tmp_path / "tls.key"), client_ca=str(ca), serve_webhook=False
    ) as server:
        anonymous = ssl.create_default_context(cafile=str(tmp_path / "tls-ca.crt"))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            post(f"https://localhost:{server.port}", "echo", {"x": 1}, anonymous)
        trusted = ssl.create_default_context(cafile=str(tmp_path / "tls-ca.crt"))
        trusted.load_cert_chain(str(cert), str(key))
        assert post(f"https://localhost:{server.port}", "echo", {"x": 1}, trusted) == (200, {"x": 1})
        stranger_dir = tmp_path / "stranger"
        stranger_dir.mkdir()
        _, other_cert, other_key = client_certificate(stranger_dir)  # a certificate from another CA
        stranger = ssl.create_default_context(cafile=str(tmp_path / "tls-ca.crt"))
        stranger.load_cert_chain(str(other_cert), str(other_key))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            post(f"https://localhost:{server.port}", "echo", {"x": 1}, stranger)


# ------------------------------------------------------------ item 1: the informer's pod, not the body


def test_filter_schedules_the_cached_pod_not_the_body(harness, core_v1):
    add_pod(core_v1, "small", {"nvidia.com/gpumem": "1000", "nvidia.com/gpucores": "10"})
    assert wait_for(lambda: _known(harness, "small"))
    pod = harness.pod_json("default", "small")
    pod["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/gpumem": "16000", "nvidia.com/gpucores": "100"}
    pod["metadata"]["annotations"] = {"hami.io/gpu-scheduler-policy": "binpack"}
    result = harness.post("filter", {"Pod": pod, "NodeNames": ["gpu-a", "gpu-b"]})
    assert result["Error"] == "" and result["NodeNames"], result
    assert wait_for(
        lambda: "hami.io/vgpu-devices-allocated" in (core_v1.read_namespaced_pod("small", "default").metadata.annotations or {})
    )
    annotations = core_v1.read_namespaced_pod("small", "default").metadata.annotations
    (containers,) = read_allocated(annotations, {"NVIDIA": KIND}).values()
    assert [(g.memory, g.cores) for g in containers[0]] == [(1000, 10)]  # what the API server's pod asked, not the body
    verify_allocation(annotations, {"NVIDIA": KIND}, TEST_KEYS, pod["metadata"]["uid"])


def _known(harness, name):
    if not hasattr(harness.cache, "informed"):  # before issue 19: no informer view of pods
        return wait_for(lambda: True)
    try:
        harness.cache.informed.pod("default", name)
        return True
    except Exception:
        return False


def test_a_pod_the_api_server_does_not_have_gets_no_allocation(harness, core_v1):
    forged = {
        "metadata": {"name": "ghost", "namespace": "default", "uid": "u-ghost"},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "16000"}}}]},
    }
    result = harness.post("filter", {"Pod": forged, "NodeNames": ["gpu-a"]})
    assert "pod default/ghost (uid u-ghost) is not a pending pod the scheduler's informer knows" in result["Error"]
    assert not result.get("NodeNames") and "u-ghost" not in harness.state.pods
    add_pod(core_v1, "real", {"nvidia.com/gpumem": "1000"})
    assert wait_for(lambda: _known(harness, "real"))
    wrong_uid = {**harness.pod_json("default", "real")}
    wrong_uid["metadata"] = {**wrong_uid["metadata"], "uid": "not-its-uid"}
    result = harness.post("filter", {"Pod": wrong_uid, "NodeNames": ["gpu-a"]})
    assert "is not the pod the API server has" in result["Error"]


def test_a_pod_not_yet_delivered_is_waited_for_then_dropped_once_bound():
    import threading

    from hami.scheduler.informed import Informed, UnknownPod

    informed = Informed()
    pod = {"metadata": {"name": "fresh", "namespace": "default", "uid": "u1"}, "spec": {}}
    threading.Timer(0.05, informed.apply_pod, ("ADDED", pod)).start()  # the watch event comes after the request
    assert informed.pod("default", "fresh", "u1", wait=10) is pod
    informed.apply_pod("MODIFIED", {**pod, "spec": {"nodeName": "n1"}})
    with pytest.raises(UnknownPod, match="is not a pending pod"):
        informed.pod("default", "fresh", "u1")


def test_bind_refuses_a_node_the_pod_may_not_run_on_and_holds_no_lock(harness, core_v1):
    add_pod(core_v1, "zoned", {"nvidia.com/gpumem": "1000"}, node_selector={"zone": "a"})
    pod = harness.pod_json("default", "zoned")
    assert harness.post("filter", {"Pod": pod, "NodeNames": ["gpu-a"]})["NodeNames"] == ["gpu-a"]
    uid = pod["metadata"]["uid"]
    forged = harness.post("bind", {"PodName": "zoned", "PodNamespace": "default", "PodUID": uid, "Node": "gpu-b"})
    assert "node 'gpu-b' does not match the pod's nodeSelector zone=a" in forged["Error"]
    assert NODE_LOCK not in (core_v1.read_node("gpu-b").metadata.annotations or {})
    assert core_v1.read_namespaced_pod("zoned", "default").spec.node_name is None
    assert harness.post("bind", {"PodName": "zoned", "PodNamespace": "default", "PodUID": uid, "Node": "gpu-a"}) == {"Error": ""}
    assert core_v1.read_namespaced_pod("zoned", "default").spec.node_name == "gpu-a"


def test_bind_refuses_affinity_and_a_node_other_than_the_reserved_one(harness, core_v1):
    term = client.V1NodeSelectorTerm(match_expressions=[client.V1NodeSelectorRequirement(key="zone", operator="In", values=["b"])])
    affinity = client.V1Affinity(
        node_affinity=client.V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=client.V1NodeSelector(node_selector_terms=[term])
        )
    )
    add_pod(core_v1, "affine", {"nvidia.com/gpumem": "1000"}, affinity=affinity)
    add_pod(core_v1, "free", {"nvidia.com/gpumem": "1000"})
    assert wait_for(lambda: _known(harness, "affine") and _known(harness, "free"))
    answer = harness.post("bind", {"PodName": "affine", "PodNamespace": "default", "Node": "gpu-a"})
    assert "does not match the pod's required node affinity" in answer["Error"]
    free = harness.pod_json("default", "free")
    assert harness.post("filter", {"Pod": free, "NodeNames": ["gpu-b"]})["NodeNames"] == ["gpu-b"]
    answer = harness.post("bind", {"PodName": "free", "PodNamespace": "default", "PodUID": free["metadata"]["uid"], "Node": "gpu-a"})
    assert "its devices were reserved on node 'gpu-b', not 'gpu-a'" in answer["Error"]
    assert NODE_LOCK not in (core_v1.read_node("gpu-a").metadata.annotations or {})
    assert (
        "is not a node the scheduler's informer knows"
        in harness.post("bind", {"PodName": "free", "PodNamespace": "default", "Node": "nowhere"})["Error"]
    )


@pytest.mark.parametrize(
    ("spec", "labels", "allowed"),
    [
        ({}, {}, True),
        ({"nodeSelector": {"zone": "a"}}, {"zone": "a", "x": "y"}, True),
        ({"nodeSelector": {"zone": "a"}}, {}, False),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]},
                                {
                                    "matchExpressions": [
                                        {"key": "gpus", "operator": "Gt", "values": ["3"]},
                                        {"key": "spot", "operator": "DoesNotExist"},
                                    ]
                                },
                            ]
                        }
                    }
                }
            },
            {"zone": "a", "gpus": "8"},
            True,
        ),  # the second term matches
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpus", "operator": "Lt", "values": ["3"]}]}]
                        }
                    }
                }
            },
            {"gpus": "8"},
            False,
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]
                        }
                    }
                }
            },
            {},
            True,
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]
                        }
                    }
                }
            },
            {},
            False,
        ),
        (
            {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}}},
            {},
            True,
        ),  # preferences do not bind
    ],
)
def test_node_affinity_rules(spec, labels, allowed):
    from hami.scheduler.affinity import node_refusal

    assert (node_refusal({"spec": spec}, "n1", labels) == "") is allowed


# ------------------------------------------------------------ item 6: server hygiene


def _server(manager, tmp_path=None, **limits):
    from hami.scheduler.core import Scheduler
    from hami.scheduler.server import Extender
    from hami.scheduler.state import ClusterState
    from hami.serving import Limits

    extender = Extender(Scheduler(manager, ClusterState(manager.kinds), None))
    tls = {"tls_cert": str(tmp_path / "tls.crt"), "tls_key": str(tmp_path / "tls.key")} if tmp_path else {}
    return ExtenderHTTPServer(extender, limits=Limits(**limits), **tls)


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection (reads end) before a generous client timeout."""
    sock.settimeout(15)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def test_idle_keep_alive_connections_are_closed(manager):
    with _server(manager, idle_timeout=0.3).start() as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        connection.request("POST", "/echo", body=b'{"a": 1}')
        response = connection.getresponse()
        assert json.loads(response.read()) == {"a": 1} and not response.will_close
        assert _closed_by_server(connection.sock)  # nothing more sent: the server hangs up


def test_stalled_tls_handshakes_are_dropped(manager, tmp_path):
    write_bundle(tmp_path)
    with _server(manager, tmp_path, handshake_timeout=0.3).start() as server:
        stalled = socket.create_connection(("127.0.0.1", server.port))
        try:
            assert _closed_by_server(stalled)
        finally:
            stalled.close()


def test_a_request_trickled_byte_by_byte_is_cut_off(manager):
    with _server(manager, idle_timeout=5, request_timeout=0.5).start() as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        try:
            sock.sendall(b"POST /echo HTTP/1.1\r\n")
            cut = False
            for _ in range(200):  # one header byte every 50 ms: each read is quick, the whole request is not
                try:
                    sock.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
                    break
                sock.settimeout(0.05)
                try:
                    if sock.recv(4096) == b"":
                        cut = True
                        break
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    cut = True
                    break
            assert cut
        finally:
            sock.close()


def test_an_oversized_body_is_413(manager):
    with _server(manager, max_body_bytes=1000).start() as server:
        assert post(server.url, "echo", b"[" + b"1," * 600 + b"1]")[0] == 413
        assert post(server.url, "echo", {"small": True}) == (200, {"small": True})
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.putrequest("POST", "/echo")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for _ in range(3):
            connection.send(b"200\r\n" + b" " * 0x200 + b"\r\n")
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        assert response.status == 413 and "over the limit of 1000 bytes" in json.loads(response.read())["Error"]


def test_a_rotated_certificate_is_served_without_a_restart(manager, tmp_path):
    write_bundle(tmp_path)
    first_ca = (tmp_path / "tls-ca.crt").read_text()
    with _server(manager, tmp_path).start() as server:
        url = f"https://localhost:{server.port}"
        assert post(url, "echo", {"n": 1}, ssl.create_default_context(cadata=first_ca)) == (200, {"n": 1})
        write_bundle(tmp_path)  # cert-manager renews: new CA, new pair, same files
        later = time.time() + 5
        for name in ("tls.crt", "tls.key"):
            os.utime(tmp_path / name, (later, later))
        second_ca = (tmp_path / "tls-ca.crt").read_text()
        assert post(url, "echo", {"n": 2}, ssl.create_default_context(cadata=second_ca)) == (200, {"n": 2})
        with pytest.raises(urllib.error.URLError):
            post(url, "echo", {"n": 3}, ssl.create_default_context(cadata=first_ca))


@pytest.mark.parametrize(
    ("pod", "named"),
    [
        ({"metadata": 1}, "Pod.metadata must be an object, got int"),
        ({"metadata": {"name": "p"}, "spec": []}, "Pod.spec must be an object, got a list"),
        ({"metadata": {"name": "p"}, "spec": {"containers": "x"}}, "Pod.spec.containers must be a list, got a string"),
        ({"metadata": {"name": 5}}, "Pod.metadata.name must be a string, got int"),
        ({"metadata": {"name": "p", "annotations": {"a": 1}}}, "Pod.metadata.annotations['a'] must be a string, got int"),
        (
            {"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"limits": []}}]}},
            "Pod.spec.containers[0].resources.limits must be an object",
        ),
        ({"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": {}}}}]}}, "must be a quantity"),
    ],
)
def test_wrongly_typed_pod_fields_are_named_without_a_traceback(harness, pod, named, caplog):
    with caplog.at_level(logging.DEBUG):
        for verb in ("filter", "prioritize"):
            status, answer = post(harness.server.url, verb, {"Pod": pod, "NodeNames": ["gpu-a"]})
            assert status == 200
            if verb == "filter":
                assert named in answer["Error"] and "internal error" not in answer["Error"]
            else:
                assert answer == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
CONTAINER = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON,
        "resources": JSON
        | st.fixed_dictionaries(
            {},
            optional={"limits": JSON | st.dictionaries(st.sampled_from(["nvidia.com/gpu", "nvidia.com/gpumem", "cpu"]), JSON, max_size=2)},
        ),
    },
)
POD = st.fixed_dictionaries(
    {},
    optional={
        "metadata": JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "name": JSON | st.sampled_from(["p", "ghost"]),
                "namespace": JSON | st.just("default"),
                "uid": JSON,
                "annotations": JSON,
                "labels": JSON,
            },
        ),
        "spec": JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "containers": JSON | st.lists(CONTAINER | JSON, max_size=2),
                "initContainers": JSON,
                "nodeSelector": JSON,
                "affinity": JSON,
            },
        ),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    pod=POD | JSON,
    nodes=JSON | st.lists(st.sampled_from(["gpu-a", "gpu-b", "x"]), max_size=3),
    verb=st.sampled_from(["filter", "prioritize", "bind", "webhook"]),
)
def test_fuzzed_bodies_get_well_formed_answers(fuzz_server, pod, nodes, verb):
    url, records = fuzz_server
    if verb == "bind":
        body = {"PodName": pod if not isinstance(pod, dict) else "ghost", "PodNamespace": nodes, "Node": "gpu-a", "PodUID": pod}
    elif verb == "webhook":
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "operation": "CREATE",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "default",
                "object": pod,
            },
        }
    else:
        body = {"Pod": pod, "NodeNames": nodes}
    status, answer = post(url, verb, body)
    assert 200 <= status < 500, (status, answer)
    if verb == "prioritize" and status == 200:
        assert isinstance(answer, list)
    elif verb == "webhook":
        assert answer.get("kind") in ("AdmissionReview", "Status"), answer
        assert "internal error" not in json.dumps(answer)
    else:
        assert isinstance(answer, dict) and "internal error" not in answer.get("Error", ""), answer
    assert not records, [r.getMessage() for r in records]


@pytest.fixture
def fuzz_server(manager, core_v1):
    """The extender with the webhook, the pod 'p' in the API server; ERROR records collected."""
    add_node(core_v1, "gpu-a")
    add_pod(core_v1, "p", {"nvidia.com/gpumem": "1000"})
    harness = ExtenderHarness(manager, core_v1, pod_wait=0.0)
    config = WebhookConfig()
    harness.extender.webhook = lambda body: review(manager, body, config, None)
    harness.start()
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR or record.exc_info:
                records.append(record)

    handler = Collect()
    logging.getLogger().addHandler(handler)
    try:
        assert wait_for(lambda: _known(harness, "p"))
        yield harness.server.url, records
    finally:
        logging.getLogger().removeHandler(handler)
        harness.stop()
