"""``hami certs``: the certificate it issues is what kube-apiserver accepts for the webhook Service,
it is kept while valid and replaced when not, and the caBundle follows it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
from pathlib import Path

from click.testing import CliRunner
from kubernetes.client import AdmissionregistrationV1Api

from hami.certs import (
    TLSBundle,
    certs_command,
    ensure_secret,
    issue,
    patch_ca_bundle,
    renewal_reason,
    service_dns_names,
)
from hami.plugin.manager import BackendManager
from hami.scheduler.core import Scheduler
from hami.scheduler.server import Extender, ExtenderHTTPServer
from hami.scheduler.state import ClusterState

NAMES = service_dns_names("hami-scheduler", "hami-system")


def test_names_cover_every_way_to_reach_the_service() -> None:
    assert NAMES == [
        "hami-scheduler",
        "hami-scheduler.hami-system",
        "hami-scheduler.hami-system.svc",
        "hami-scheduler.hami-system.svc.cluster.local",
    ]


def test_the_extender_serves_the_certificate_and_clients_verify_it_with_the_ca(tmp_path: Path) -> None:
    bundle = issue(NAMES, days=30)
    (tmp_path / "tls.crt").write_text(bundle.cert)
    (tmp_path / "tls.key").write_text(bundle.key)
    manager = BackendManager(strict=True, allow=(), deny=())
    extender = Extender(Scheduler(manager, ClusterState({}), None))
    with ExtenderHTTPServer(extender, tls_cert=str(tmp_path / "tls.crt"), tls_key=str(tmp_path / "tls.key")) as server:
        context = ssl.create_default_context(cadata=bundle.ca)
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="hami-scheduler.hami-system.svc") as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert tls.recv(1024).startswith(b"HTTP/1.1 200")
        other = ssl.create_default_context(cadata=issue(NAMES).ca)  # another CA must not verify it
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            try:
                other.wrap_socket(raw, server_hostname="hami-scheduler.hami-system.svc")
                raise AssertionError("a foreign CA verified the certificate")
            except ssl.SSLCertVerificationError:
                pass
    extender.scheduler.close()


def test_renewal_reasons() -> None:
    bundle = issue(NAMES, days=400)
    assert renewal_reason(bundle, NAMES) is None
    assert "lacks the names" in renewal_reason(bundle, [*NAMES, "hami-scheduler.other.svc"])
    assert "expires" in renewal_reason(bundle, NAMES, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=380))
    mixed = TLSBundle(issue(NAMES).ca, bundle.cert, bundle.key)
    assert "not issued by its CA" in renewal_reason(mixed, NAMES)
    assert TLSBundle.from_secret_data(bundle.secret_data()) == bundle
    assert TLSBundle.from_secret_data({"tls.crt": "x"}) is None


def test_secret_is_kept_while_valid_and_the_ca_bundle_follows(kube_apiserver, core_v1, tmp_path: Path) -> None:
    admission = AdmissionregistrationV1Api(core_v1.api_client)
    admission.create_mutating_webhook_configuration(
        {
            "metadata": {"name": "w"},
            "webhooks": [
                {
                    "name": f"{i}.hami.io",
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                    "clientConfig": {"service": {"name": "s", "namespace": "n"}},
                }
                for i in range(2)
            ],
        }
    )
    first = ensure_secret(core_v1, "hami-system", "tls", NAMES)
    assert ensure_secret(core_v1, "hami-system", "tls", NAMES) == first  # kept
    assert patch_ca_bundle(admission, "w", first.ca) == 2
    assert patch_ca_bundle(admission, "w", first.ca) == 0  # nothing to change
    renewed = ensure_secret(core_v1, "hami-system", "tls", [*NAMES, "extra.example"])
    assert renewed != first
    secret = json.loads(core_v1.read_namespaced_secret("tls", "hami-system", _preload_content=False).data)
    assert secret["type"] == "kubernetes.io/tls" and base64.b64decode(secret["data"]["tls.crt"]).decode() == renewed.cert

    kubeconfig = kube_apiserver.write_kubeconfig(tmp_path / "kc")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        certs_command,
        [
            "--namespace",
            "hami-system",
            "--secret",
            "tls",
            "--service",
            "hami-scheduler",
            "--extra-dns-name",
            "extra.example",
            "--webhook-config",
            "w",
            "--kubeconfig",
            str(kubeconfig),
            "--out-dir",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 webhook(s) updated" in result.output and (out / "ca.crt").read_text() == renewed.ca
    hooks = json.loads(admission.read_mutating_webhook_configuration("w", _preload_content=False).data)["webhooks"]
    assert {base64.b64decode(h["clientConfig"]["caBundle"]).decode() for h in hooks} == {renewed.ca}
    missing = CliRunner().invoke(
        certs_command,
        ["--namespace", "n", "--secret", "tls", "--service", "s", "--webhook-config", "nope", "--kubeconfig", str(kubeconfig)],
    )
    assert missing.exit_code == 1 and "cannot read MutatingWebhookConfiguration 'nope'" in missing.output
