"""Works as users install it: the core and every backend distribution (13 today) build as wheels and sdists with clean metadata,
and the wheels, installed into a fresh venv WITHOUT extras, run the CLI from a directory outside the
checkout — `hami backends`, `hami devices` on a simulated inventory, `hami sandbox` with its packaged
default cluster, and `hami dev apiserver` answering HTTP.

Built once and installed once per test session. Dependencies come from a wheelhouse
(``$HAMI_WHEELHOUSE``, default ``~/.cache/hami/wheelhouse``) with ``pip --no-index``; only when it lacks
something is it filled with ``pip download`` from the configured index (as ``make test`` itself installs),
so later runs need no network.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PROJECTS = [REPO, *sorted(p.parent for p in (REPO / "backends").glob("*/pyproject.toml"))]
WHEELHOUSE = Path(os.environ.get("HAMI_WHEELHOUSE") or Path.home() / ".cache" / "hami" / "wheelhouse")


def _run(args: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


def _pyproject_value(project: Path, key: str) -> str | None:
    """A top-level string/array key of [project] (tomllib is Python 3.11+, this suite runs on 3.10 too)."""
    text = (project / "pyproject.toml").read_text()
    section = re.search(r"^\[project\]\n(.*?)(?=^\[)", text, re.M | re.S)
    assert section, f"{project}/pyproject.toml has no [project] table"
    match = re.search(rf"^{re.escape(key)}\s*=\s*(.+)$", section.group(1), re.M)
    return match.group(1).strip() if match else None


def _distribution(project: Path) -> str:
    name = _pyproject_value(project, "name")
    assert name, project
    return name.strip('"')


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels and sdists of the core and every backend, built in parallel with ``python -m build``
    (sdist first, the wheel from the sdist: a file missing from the sdist breaks the wheel)."""
    out = tmp_path_factory.mktemp("dist")
    for module in ("build", "twine"):
        done = _run([sys.executable, "-c", f"import {module}"])
        assert done.returncode == 0, f"{module} is missing: install the dev extra (pip install -e '.[dev]', as `make test` does)"
    builds = [
        (
            project,
            subprocess.Popen(
                [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for project in PROJECTS
    ]
    for project, process in builds:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"python -m build {project} failed:\n{output[-4000:]}"
    return out


def _wheels(dist: Path) -> list[Path]:
    return sorted(dist.glob("*.whl"))


def _install(python: Path, wheels: list[Path], dist: Path) -> subprocess.CompletedProcess[str]:
    return _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--no-index",
            "--find-links",
            dist,
            "--find-links",
            WHEELHOUSE,
            *wheels,
        ],
        timeout=900,
    )


@pytest.fixture(scope="session")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (its bundled pip, no upgrade) holding every wheel and their plain dependencies."""
    root = tmp_path_factory.mktemp("venv")
    done = _run([sys.executable, "-m", "venv", root], timeout=300)
    assert done.returncode == 0, done.stderr
    python = root / "bin" / "python"
    wheels = _wheels(dist)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    with (WHEELHOUSE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = _install(python, wheels, dist)
        if done.returncode != 0:  # the wheelhouse lacks a dependency: fetch what the wheels require
            fetched = _run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--dest", WHEELHOUSE, "--find-links", dist, *wheels], timeout=1800
            )
            assert fetched.returncode == 0, f"pip download into {WHEELHOUSE} failed:\n{fetched.stderr[-4000:]}"
            for own in WHEELHOUSE.glob("hami*"):  # never a stale copy of our own wheels
                own.unlink()
            done = _install(python, wheels, dist)
    assert done.returncode == 0, f"pip install of the wheels failed:\n{done.stderr[-4000:]}"
    return root


@pytest.fixture(scope="session")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with nothing of the checkout in or above it."""
    cwd = tmp_path_factory.mktemp("user")
    assert REPO not in cwd.parents
    return cwd


@pytest.fixture(scope="session")
def env(venv: Path) -> dict[str, str]:
    """The user's environment: the venv's bin first, nothing pointing back at the checkout."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("HAMI_")}
    clean["PATH"] = f"{venv / 'bin'}{os.pathsep}{clean.get('PATH', '')}"
    clean["VIRTUAL_ENV"] = str(venv)
    return clean


def hami(venv: Path, outside: Path, env: dict[str, str], *args: str, extra_env: dict[str, str] | None = None) -> str:
    done = _run([venv / "bin" / "hami", *args], cwd=outside, env={**env, **(extra_env or {})}, timeout=300)
    assert done.returncode == 0, f"hami {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


def test_a_wheel_and_sdist_per_distribution_with_clean_metadata(dist: Path) -> None:
    names = {_distribution(p).replace("-", "_") for p in PROJECTS}
    assert names == {"hami"} | {f"hami_{p.name}" for p in PROJECTS[1:]} and len(names) == 14  # the core and 13 backends
    assert {w.name.split("-")[0] for w in _wheels(dist)} == names
    assert {s.name.split("-")[0] for s in dist.glob("*.tar.gz")} == names
    done = _run([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()


def test_one_version_source_and_backends_pin_a_compatible_core(dist: Path) -> None:
    assert _pyproject_value(REPO, "version") is None and _pyproject_value(REPO, "dynamic") == '["version"]', (
        "the core's version lives in hami.__version__ only"
    )
    version = re.search(r'^__version__ = "([^"]+)"$', (REPO / "core" / "hami" / "__init__.py").read_text(), re.M)
    assert version
    major, minor = (int(x) for x in version.group(1).split(".")[:2])
    for wheel in _wheels(dist):
        metadata = _metadata(wheel)
        assert "License-Expression: Apache-2.0" in metadata and "Description-Content-Type: text/markdown" in metadata, wheel.name
        if wheel.name.startswith("hami-"):
            assert f"Version: {version.group(1)}\n" in metadata
            continue
        pins = re.findall(r"^Requires-Dist: hami([<>=!~,.\d]*)$", metadata, re.M)
        assert pins, f"{wheel.name} does not depend on hami"
        assert set(pins[0].split(",")) == {f">={major}.{minor}", f"<{major}.{minor + 1}"}, f"{wheel.name}: hami{pins[0]}"


def test_the_core_wheel_carries_the_sandbox_defaults_and_no_test_dependency(dist: Path) -> None:
    wheel = next(w for w in _wheels(dist) if w.name.startswith("hami-"))
    with zipfile.ZipFile(wheel) as archive:
        names = [Path(n) for n in archive.namelist() if n.startswith("hami/sandbox/examples/")]
    examples = REPO / "deploy" / "examples"
    for sub in ("", "quickstart"):  # the top-level pods and node sets, and the quick-start pods beside them
        packaged = {n.name for n in names if n.parent == Path("hami/sandbox/examples") / sub}
        assert packaged == {p.name for p in (examples / sub).glob("*.yaml")}, sub or "examples"
    plain = [line for line in _metadata(wheel).splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [line for line in plain if re.search(r"\b(pytest|hypothesis)\b", line)]


def test_no_extras_means_no_test_tools(venv: Path) -> None:
    for module in ("pytest", "hypothesis"):
        done = _run([venv / "bin" / "python", "-c", f"import {module}"])
        assert done.returncode != 0, f"{module} got installed without the testing extra"


def test_backends_from_outside_the_checkout(venv: Path, outside: Path, env: dict[str, str]) -> None:
    backends = json.loads(hami(venv, outside, env, "backends", "--json"))
    assert {b["name"]: b["distribution"] for b in backends} == {p.name: f"hami-{p.name}" for p in PROJECTS[1:]}
    assert len(backends) == 13 and all(b["status"] == "ok" for b in backends), [b for b in backends if b["status"] != "ok"]
    located = _run(
        [venv / "bin" / "python", "-c", "import hami, hami_nvidia; print(hami.__file__); print(hami_nvidia.__file__)"], cwd=outside, env=env
    )
    for path in located.stdout.split():
        assert Path(path).is_relative_to(venv), f"{path}: imported from outside the venv"


def test_devices_on_a_simulated_inventory(venv: Path, outside: Path, env: dict[str, str]) -> None:
    nodes = _run(
        [venv / "bin" / "python", "-c", "from hami.sandbox.defaults import default_nodes_file; print(default_nodes_file())"],
        cwd=outside,
        env=env,
    ).stdout.strip()
    assert Path(nodes).is_relative_to(venv), nodes
    expected = next(n for n in yaml.safe_load(Path(nodes).read_text())["nodes"] if n["name"] == "gpu-a100")["devices"][0]
    devices = json.loads(hami(venv, outside, env, "devices", "--json", "--node-name", "gpu-a100", extra_env={"HAMI_INVENTORY": nodes}))
    assert [d["id"] for d in devices] == [f"NVIDIA-gpu-a100-{i}" for i in range(expected["count"])]
    assert {(d["backend"], d["type"]) for d in devices} == {("nvidia", expected["type"])}


def test_the_sandbox_runs_its_packaged_default_cluster(venv: Path, outside: Path, env: dict[str, str]) -> None:
    report = json.loads(hami(venv, outside, env, "sandbox", "--json"))
    example_pods = [
        d["metadata"]["name"]
        for f in sorted((REPO / "deploy" / "examples").glob("*.yaml"))
        if not f.name.startswith("nodes")
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    assert sorted(p["name"] for p in report["pods"]) == sorted(example_pods) and report["skipped"] == []  # every backend is installed
    wrong = {p["name"]: (p["phase"], p["expected"], p["reason"]) for p in report["pods"] if p["phase"] != p["expected"]}
    assert not wrong
    assert {n["name"] for n in report["nodes"]} >= {"gpu-a100", "npu-910b3", "mlu-370", "dcu-z100", "amd-mi300x", "vastai-va1"}


@pytest.fixture
def apiserver(venv: Path, outside: Path, env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(
        [str(venv / "bin" / "hami"), "dev", "apiserver", "--port", "0"],
        cwd=outside,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        if match is None:
            process.terminate()
            _, stderr = process.communicate(timeout=30)
            pytest.fail(f"hami dev apiserver printed {line!r}; stderr: {stderr[-4000:]}")
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_dev_apiserver_answers_http(apiserver: str) -> None:
    with urllib.request.urlopen(f"{apiserver}/api/v1/namespaces/default/pods", timeout=30) as response:
        body = json.load(response)
    assert response.status == 200 and body["kind"] == "PodList" and body["items"] == []
