"""``hami webhook``: option parsing, clear usage errors, and the real command serving in a subprocess
(with the installed backends) until SIGTERM."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from hami.errors import ValidationError
from hami.webhook.cli import parse_bind, webhook_command
from hami.webhook.config import WebhookConfig


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:9443", ("0.0.0.0", 9443)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":8443", ("0.0.0.0", 8443)),
        ("[::1]:9443", ("::1", 9443)),
        ("localhost:443", ("localhost", 443)),
    ],
)
def test_parse_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["9443", "host:", "host:port", "host:70000", "::1:9443", ""])
def test_parse_bind_rejects_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("[", r"\[").replace("]", r"\]")):
        parse_bind(text)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--bind", "nowhere"], "--bind 'nowhere'"),
        (["--scheduler-name", "Not_A_Name"], "scheduler_name='Not_A_Name'"),
        (["--tls-cert", "/no/such/file"], "'/no/such/file' does not exist"),
    ],
)
def test_usage_errors(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(webhook_command, args)
    assert result.exit_code == 2
    assert fragment in result.output


def test_tls_cert_without_key(tmp_path: Any) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    result = CliRunner().invoke(webhook_command, ["--tls-cert", str(cert), "--bind", "127.0.0.1:0"])
    assert result.exit_code == 2 and "--tls-cert and --tls-key go together" in result.output


def test_config_validation() -> None:
    with pytest.raises(ValidationError, match="max_body_bytes=0"):
        WebhookConfig(max_body_bytes=0)
    assert WebhookConfig().scheduler_name == "hami-scheduler" and WebhookConfig().overwrite_default_scheduler is True


def test_command_serves_until_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HAMI_STRICT_PLUGINS": "0"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    code = "from hami.webhook.cli import webhook_command; webhook_command(prog_name='hami webhook')"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--bind", "127.0.0.1:0", "--scheduler-name", "gpu-sched"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("listening on http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
        port = int(line.rsplit("port ", 1)[1].rstrip(")\n"))
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "cli",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "operation": "CREATE",
                "namespace": "default",
                "object": {
                    "metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpumem": "3000"}}}]},
                },
            },
        }
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/webhook", body=json.dumps(review).encode())
        response = json.loads(conn.getresponse().read())["response"]
        conn.close()
        ops = json.loads(base64.b64decode(response["patch"]))
        assert ops == [
            {"op": "add", "path": "/spec/schedulerName", "value": "gpu-sched"},
            {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"},
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
