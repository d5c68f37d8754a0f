"""Issue 19 holes the first regression tests left: the exposed extender's client certificate through
the service kube-scheduler really talks to, stalled TLS clients (many, and one that stops inside its
ClientHello) not blocking the one real client, and a simulated Hygon node whose prepare and release
meet although each call builds its own node context (the agent does)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from hami.certs import issue
from hami.fakes.extender import TEST_KEYS
from hami.plugin.model import Grant, SchedulableDevice
from hami.scheduler.config import SchedulerConfig
from hami.scheduler.server import ExtenderHTTPServer
from hami.scheduler.service import SchedulerService
from hami.serving import Limits
from hami.wire.codec import encode_node_devices
from hami_nvidia.plugin import KIND, plugin


@pytest.fixture
def manager(hami_manager: Any, register_backend: Any) -> Any:
    register_backend(plugin)
    return hami_manager


def post(url: str, verb: str, body: Any, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"{url}/{verb}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serving_bundle(directory: Path) -> tuple[str, str, str]:
    bundle = issue(["localhost", "127.0.0.1"])
    paths = directory / "tls.crt", directory / "tls.key", directory / "tls-ca.crt"
    for path, text in zip(paths, (bundle.cert, bundle.key, bundle.ca), strict=True):
        path.write_text(text)
    return str(paths[0]), str(paths[1]), str(paths[2])


def client_certificate(directory: Path) -> tuple[str, str, str]:
    """A CA and a clientAuth certificate it signed (kube-scheduler's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client-ca")])

    def build(subject: x509.Name, public: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if ca:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    pem = serialization.Encoding.PEM
    paths = directory / "client-ca.crt", directory / "client.crt", directory / "client.key"
    paths[0].write_bytes(build(ca_name, ca_key.public_key(), True).public_bytes(pem))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-scheduler")])
    paths[1].write_bytes(build(subject, key.public_key(), False).public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(paths[0]), str(paths[1]), str(paths[2])


# ------------------------------------------------------------ item 1: the exposed extender asks for a certificate


def test_the_scheduler_service_exposed_with_a_client_ca_serves_only_kube_schedulers_certificate(
    manager: Any, kube_apiserver: Any, core_v1: Any, tmp_path: Path
) -> None:
    """The service wiring (not just the HTTP server): with ``client_ca`` the extender listener speaks
    HTTPS and refuses a client without a certificate from that CA; the webhook listener, which the API
    server reaches without one, does not ask."""
    devices = [SchedulableDevice(id="gpu-a-0", vendor="NVIDIA", type="NVIDIA A100", count=10, memory=20000, cores=100)]
    annotations = {KIND.annotations.node_register: encode_node_devices(devices, "json")}
    core_v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="gpu-a", annotations=annotations)))
    cert, key, server_ca = serving_bundle(tmp_path)
    ca, client_cert, client_key = client_certificate(tmp_path / "kube-scheduler")
    _, stranger_cert, stranger_key = client_certificate(tmp_path / "stranger")
    service = SchedulerService(
        manager,
        kube_apiserver.api_client(),
        SchedulerConfig(),
        TEST_KEYS,
        host="127.0.0.1",
        port=0,
        tls_cert=cert,
        tls_key=key,
        extender_host="127.0.0.1",
        extender_port=0,
        client_ca=ca,
    )
    service.start()
    try:
        extender = f"https://localhost:{service.extender_server.port}"
        assert service.extender_server.url.startswith("https://")
        anonymous = ssl.create_default_context(cafile=server_ca)
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            post(extender, "echo", {"x": 1}, anonymous)
        stranger = ssl.create_default_context(cafile=server_ca)
        stranger.load_cert_chain(stranger_cert, stranger_key)
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            post(extender, "echo", {"x": 1}, stranger)
        trusted = ssl.create_default_context(cafile=server_ca)
        trusted.load_cert_chain(client_cert, client_key)
        assert post(extender, "echo", {"x": 1}, trusted) == (200, {"x": 1})
        webhook = f"https://localhost:{service.server.port}"
        with urllib.request.urlopen(f"{webhook}/healthz", timeout=10, context=ssl.create_default_context(cafile=server_ca)) as answer:
            assert answer.status == 200  # the API server's listener asks no client certificate
    finally:
        service.stop()


# ------------------------------------------------------------ item 6: stalled TLS clients


def _tls_server(manager: Any, tmp_path: Path, handshake_timeout: float) -> ExtenderHTTPServer:
    from hami.scheduler.core import Scheduler
    from hami.scheduler.server import Extender
    from hami.scheduler.state import ClusterState

    cert, key, _ = serving_bundle(tmp_path)
    extender = Extender(Scheduler(manager, ClusterState(manager.kinds), None))
    return ExtenderHTTPServer(extender, limits=Limits(handshake_timeout=handshake_timeout), tls_cert=cert, tls_key=key)


def _partial_client_hello() -> bytes:
    """The first bytes of a real ClientHello (record header and some of the handshake), then silence."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 40  # a TLS handshake record
    return hello[:40]


def test_many_stalled_handshakes_do_not_keep_the_real_client_out(manager: Any, tmp_path: Path) -> None:
    """The campaign held 30 stalled handshakes open: with a handshake deadline far longer than the
    client's patience, kube-scheduler must still be served while they wait (handshakes are not done
    one after another in the accept loop)."""
    with _tls_server(manager, tmp_path, handshake_timeout=60).start() as server:
        stalled = [
            socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(30)
        ]  # a serial accept loop fills its backlog
        hello = _partial_client_hello()
        for sock in stalled[:10]:
            sock.sendall(hello)  # these stop inside their ClientHello
        try:
            context = ssl.create_default_context(cafile=str(tmp_path / "tls-ca.crt"))
            assert post(f"https://localhost:{server.port}", "echo", {"n": 1}, context) == (200, {"n": 1})
        finally:
            for sock in stalled:
                sock.close()


def test_a_client_that_stops_inside_its_client_hello_is_dropped(manager: Any, tmp_path: Path) -> None:
    with _tls_server(manager, tmp_path, handshake_timeout=0.3).start() as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(_partial_client_hello())
            sock.settimeout(15)
            try:
                while sock.recv(4096):
                    pass
            except (ConnectionError, ssl.SSLError):
                pass
            except TimeoutError:
                pytest.fail("the server kept a half-sent ClientHello open past its handshake timeout")
        finally:
            sock.close()


# ------------------------------------------------------------ also: Hygon simulate state dir


def test_a_simulated_hygon_node_releases_what_an_earlier_call_prepared(hami_manager: Any, register_backend: Any, tmp_path: Path) -> None:
    """The agent builds a node context per call; in simulate mode both must name the same state
    directory, or release never finds prepare's vDCU config and its compute units stay taken."""
    from hami_hygon.plugin import plugin as hygon

    inventory = tmp_path / "nodes.yaml"
    inventory.write_text(yaml.safe_dump({"nodes": [{"name": "n", "devices": [{"vendor": "DCU", "type": "Z100", "memory": 32768}]}]}))
    config = {"inventory": str(inventory), "vdev_root": str(tmp_path / "etc-vdev")}
    register_backend(hygon, config=config)
    hami_manager.configure("hygon", config)
    pod = {"metadata": {"uid": "u1", "name": "p", "namespace": "default"}}
    grants = [Grant("DCU-n-0", "DCU", 4000, 60)]
    state = tmp_path / "state"
    prepared_on = hami_manager.node_context("hygon", "n", state_root=state)
    hami_manager.prepare(grants, pod, {"name": "c"}, prepared_on)
    vdev = state / "hygon" / "vdev"
    assert len(list(vdev.glob("vdev*.conf"))) == 1
    released_on = hami_manager.node_context("hygon", "n", state_root=state)
    assert released_on.state_dir == prepared_on.state_dir
    hami_manager.release(grants, pod, {"name": "c"}, released_on)
    assert not list(vdev.glob("vdev*.conf"))
    # the units are free again: a pod asking for 60 % more fits (it would not beside the leaked 60 %)
    second = {"metadata": {"uid": "u2", "name": "q", "namespace": "default"}}
    hami_manager.prepare(grants, second, {"name": "c"}, hami_manager.node_context("hygon", "n", state_root=state))
    third = {"metadata": {"uid": "u3", "name": "r", "namespace": "default"}}
    hami_manager.prepare([Grant("DCU-n-0", "DCU", 4000, 40)], third, {"name": "c"}, released_on)


# ------------------------------------------------------------ item 7: hostile registrations, both encodings


@pytest.mark.parametrize(
    ("encoding", "text", "named"),
    [
        ("json", '[{"id": "GPU-x", "count": 4, "devmem": 1e400, "devcore": 100}]', "devmem=inf"),
        ("json", '[{"id": "GPU-x", "count": 4, "devmem": NaN, "devcore": 100}]', "devmem=nan"),
        ("json", '[{"id": "GPU-x", "count": 4, "devmem": 16384, "devcore": 1e6}]', "devcore=1000000.0"),
        ("json", '[{"id": "GPU-x;GPU-y", "count": 4, "devmem": 16384, "devcore": 100}]', "';'"),
        ("csv", "DCU-x,4," + "1" + "0" * 400 + ",100,Z100,0,true:", "devmem="),
        ("csv", f"DCU-x,{10**18},16384,100,Z100,0,true:", "count=1000000000000000000"),
        ("csv", f"DCU-x,4,16384,{10**6},Z100,0,true:", "devcore=1000000"),
        ("csv", "DCU-x;y,4,16384,100,Z100,0,true:", "contains ';'"),
    ],
)
def test_hostile_registrations_leave_the_node_without_devices_in_both_encodings(encoding: str, text: str, named: str) -> None:
    """The scheduler's view of a node whose agent (or anyone who may patch the node) wrote hostile
    values: no device at all, and the problem names the value (JSON floats such as 1e400 and NaN,
    and the CSV encoding Hygon registers with, which the first regression tests did not reach)."""
    from hami.scheduler.state import ClusterState
    from hami_hygon.plugin import KIND as HYGON

    kinds = {"NVIDIA": KIND, "DCU": HYGON}
    vendor, kind = ("NVIDIA", KIND) if encoding == "json" else ("DCU", HYGON)
    assert kind.node_encoding == encoding
    state = ClusterState(kinds)
    state.apply_node({"metadata": {"name": "evil", "annotations": {kind.annotations.node_register: text}}})
    assert state.nodes["evil"].devices == {}, text[:80]
    problem = state.nodes["evil"].problems[vendor]
    assert "corrupt" in problem and named in problem, problem
