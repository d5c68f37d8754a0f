"""``hami certs``: TLS for the extender and the admission webhook without third-party images.

kube-apiserver calls the webhook over HTTPS and checks the serving certificate against the
``caBundle`` of the MutatingWebhookConfiguration. The Helm chart runs this command as a hook Job
(our own image): before install it puts a self-signed CA and a serving certificate for the Service
into a ``kubernetes.io/tls`` Secret (kept while valid, so upgrades do not rotate it), and after
install it copies the CA into every webhook's ``caBundle``.

Written with ``cryptography`` rather than the ``openssl`` CLI: the image then needs no extra
binary, the logic is testable in-process, and the key never touches a temporary file.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import click

from hami.errors import HamiError

log = logging.getLogger(__name__)

CA_KEY, CERT_KEY, KEY_KEY = "ca.crt", "tls.crt", "tls.key"


class CertError(HamiError):
    """A certificate could not be made, read or stored."""


def _crypto() -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:  # pragma: no cover - the image and the dev extra install it
        raise CertError("hami certs needs the 'cryptography' package: pip install 'hami[certs]'") from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


@attrs.frozen
class TLSBundle:
    """PEM texts: the CA certificate, the serving certificate and its private key."""

    ca: str
    cert: str
    key: str = attrs.field(repr=False)

    def secret_data(self) -> dict[str, str]:
        return {
            name: base64.b64encode(value.encode()).decode()
            for name, value in ((CA_KEY, self.ca), (CERT_KEY, self.cert), (KEY_KEY, self.key))
        }

    @classmethod
    def from_secret_data(cls, data: dict[str, str] | None) -> TLSBundle | None:
        try:
            values = {name: base64.b64decode((data or {})[name]).decode() for name in (CA_KEY, CERT_KEY, KEY_KEY)}
        except (KeyError, ValueError):
            return None
        return cls(values[CA_KEY], values[CERT_KEY], values[KEY_KEY])


def service_dns_names(service: str, namespace: str, extra: Sequence[str] = ()) -> list[str]:
    """Every name kube-apiserver (and in-cluster clients) may use for the Service."""
    base = [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]
    return base + [name for name in extra if name not in base]


def issue(dns_names: Sequence[str], *, days: int = 3650, now: dt.datetime | None = None) -> TLSBundle:
    """A fresh self-signed CA and a serving certificate for ``dns_names`` signed by it (ECDSA P-256)."""
    x509, hashes, serialization, ec, eku, name_oid = _crypto()
    if not dns_names:
        raise CertError("a serving certificate needs at least one DNS name")
    now = now or dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, "hami-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return TLSBundle(ca.public_bytes(pem).decode(), cert.public_bytes(pem).decode(), key_pem)


def renewal_reason(
    bundle: TLSBundle, dns_names: Sequence[str], *, renew_before_days: int = 30, now: dt.datetime | None = None
) -> str | None:
    """Why ``bundle`` must be replaced (unreadable, expiring, wrong names, not signed by its CA), or None."""
    x509, *_ = _crypto()
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        ca = x509.load_pem_x509_certificate(bundle.ca.encode())
        cert = x509.load_pem_x509_certificate(bundle.cert.encode())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        cert.verify_directly_issued_by(ca)
    except Exception as exc:
        return f"unreadable or not issued by its CA ({type(exc).__name__}: {exc})"
    missing = sorted(set(dns_names) - set(names))
    if missing:
        return f"the certificate lacks the names {', '.join(missing)}"
    expires = min(cert.not_valid_after_utc, ca.not_valid_after_utc)
    if expires - now < dt.timedelta(days=renew_before_days):
        return f"it expires at {expires.isoformat()}"
    return None


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def ensure_secret(
    core_v1: Any, namespace: str, name: str, dns_names: Sequence[str], *, days: int = 3650, renew_before_days: int = 30
) -> TLSBundle:
    """The Secret's bundle when still good, else a new one written to it (create, or update with its resourceVersion)."""
    from kubernetes.client.exceptions import ApiException

    try:
        current = json.loads(core_v1.read_namespaced_secret(name, namespace, _preload_content=False).data)
    except ApiException as exc:
        if exc.status != 404:
            raise CertError(f"cannot read Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None
        current = None
    if current is not None:
        bundle = TLSBundle.from_secret_data(current.get("data"))
        reason = (
            renewal_reason(bundle, dns_names, renew_before_days=renew_before_days) if bundle else "it has no ca.crt, tls.crt and tls.key"
        )
        if reason is None:
            log.info("event=tls_secret_kept secret=%s/%s", namespace, name)
            return bundle  # type: ignore[return-value]
        log.info("event=tls_secret_renewing secret=%s/%s reason=%r", namespace, name, reason)
    bundle = issue(dns_names, days=days)
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "hami-certs"}},
        "data": bundle.secret_data(),
    }
    try:
        if current is None:
            core_v1.create_namespaced_secret(namespace, body, _preload_content=False)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            core_v1.replace_namespaced_secret(name, namespace, body, _preload_content=False)
    except ApiException as exc:
        raise CertError(f"cannot write Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}") from None
    log.info("event=tls_secret_written secret=%s/%s names=%s", namespace, name, ",".join(dns_names))
    return bundle


def patch_ca_bundle(admission_v1: Any, config_name: str, ca_pem: str) -> int:
    """Put ``ca_pem`` into every webhook of the MutatingWebhookConfiguration; returns how many changed."""
    from kubernetes.client.exceptions import ApiException

    encoded = base64.b64encode(ca_pem.encode()).decode()
    try:
        config = json.loads(admission_v1.read_mutating_webhook_configuration(config_name, _preload_content=False).data)
    except ApiException as exc:
        raise CertError(f"cannot read MutatingWebhookConfiguration {config_name!r}: HTTP {exc.status} {exc.reason}") from None
    ops = [
        {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": encoded}
        for i, hook in enumerate(config.get("webhooks") or [])
        if (hook.get("clientConfig") or {}).get("caBundle") != encoded
    ]
    if not ops:
        return 0
    ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": config["metadata"]["resourceVersion"]})
    try:
        admission_v1.patch_mutating_webhook_configuration(config_name, ops, _preload_content=False)
    except ApiException as exc:
        raise CertError(f"cannot patch the caBundle of {config_name!r}: HTTP {exc.status} {exc.reason}") from None
    log.info("event=ca_bundle_patched config=%s webhooks=%d", config_name, len(ops) - 1)
    return len(ops) - 1


@click.command("certs")
@click.option("--namespace", required=True, help="Namespace of the Secret and the Service.")
@click.option("--secret", "secret_name", required=True, help="The kubernetes.io/tls Secret to create or keep.")
@click.option("--service", required=True, help="The Service kube-apiserver reaches the webhook through (the certificate's names).")
@click.option("--extra-dns-name", multiple=True, help="More names for the certificate (repeatable).")
@click.option("--webhook-config", help="MutatingWebhookConfiguration whose caBundle to patch (the post-install step).")
@click.option("--days", default=3650, show_default=True, type=click.IntRange(min=1), help="Validity of a new CA and certificate.")
@click.option(
    "--renew-before-days", default=30, show_default=True, type=click.IntRange(min=0), help="Replace a certificate this close to expiry."
)
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Default: the in-cluster service account.")
@click.option("--out-dir", type=click.Path(file_okay=False), help="Also write ca.crt, tls.crt, tls.key here (kind, local runs).")
def certs_command(
    namespace: str,
    secret_name: str,
    service: str,
    extra_dns_name: tuple[str, ...],
    webhook_config: str | None,
    days: int,
    renew_before_days: int,
    kubeconfig: str | None,
    out_dir: str | None,
) -> None:
    """Create (or keep) the webhook's self-signed CA and serving certificate, and patch the caBundle."""
    from kubernetes.client import AdmissionregistrationV1Api, CoreV1Api

    from hami.kube import api_client

    api = api_client(kubeconfig)
    try:
        bundle = ensure_secret(
            CoreV1Api(api),
            namespace,
            secret_name,
            service_dns_names(service, namespace, extra_dns_name),
            days=days,
            renew_before_days=renew_before_days,
        )
        changed = patch_ca_bundle(AdmissionregistrationV1Api(api), webhook_config, bundle.ca) if webhook_config else 0
    except CertError as exc:
        raise click.ClickException(str(exc)) from None
    if out_dir:
        target = Path(out_dir)
        target.mkdir(parents=True, exist_ok=True)
        for name, value in ((CA_KEY, bundle.ca), (CERT_KEY, bundle.cert), (KEY_KEY, bundle.key)):
            (target / name).write_text(value)
        (target / KEY_KEY).chmod(0o600)
    click.echo(
        f"Secret {namespace}/{secret_name} ready"
        + (f"; caBundle of {webhook_config}: {changed} webhook(s) updated" if webhook_config else "")
    )


@click.command("signing-keys")
@click.option(
    "--out-dir", required=True, type=click.Path(file_okay=False), help="Directory for 'key' (scheduler only) and 'public-key' (agents)."
)
@click.option(
    "--previous-public-key",
    type=click.Path(exists=True, dir_okay=False),
    help="The public key being rotated out, written as 'previous-public-key' so pods it signed still verify.",
)
def signing_keys_command(out_dir: str, previous_public_key: str | None) -> None:
    """Write a new Ed25519 allocation key pair (scheduler: key; agents: public-key).

    Mount 'key' into the scheduler only, 'public-key' into the agents (docs/security.md)."""
    import shutil

    from hami.wire.signing import PREVIOUS_PUBLIC_KEY_FILE, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, SignatureError, SigningKeys, load_public_key

    target = Path(out_dir)
    if (target / PRIVATE_KEY_FILE).exists():
        raise click.ClickException(f"{str(target / PRIVATE_KEY_FILE)!r} exists; refusing to overwrite a signing key")
    try:
        if previous_public_key:
            load_public_key(Path(previous_public_key))
        SigningKeys.generate().write(target, private=True)
        if previous_public_key:
            shutil.copyfile(previous_public_key, target / PREVIOUS_PUBLIC_KEY_FILE)
    except (SignatureError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {target / PRIVATE_KEY_FILE} (scheduler only) and {target / PUBLIC_KEY_FILE} (agents)")
