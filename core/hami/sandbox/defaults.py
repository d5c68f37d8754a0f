"""Where the sandbox's default cluster and example pods live: package data inside the ``hami`` wheel
(``hami/sandbox/examples``), so ``hami sandbox`` works from any install and any working directory.

``deploy/examples`` in the repository is the human-readable copy of the same files;
tests/install/test_packaged_examples.py keeps the two identical (``make examples`` copies them over).
This module imports nothing heavy: the CLI finds the defaults before it starts a cluster.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

NODES_FILE = "nodes.yaml"
"""The default heterogeneous node set (hami.backendkit.inventory format) in the examples directory."""


def examples_dir() -> Path | None:
    """The packaged examples directory, or None when this installation lacks it (a broken install).

    ``resources.files`` of a regular (unzipped) package is a real directory; the sandbox reads its
    files by path, and so may a user who wants to copy them."""
    candidate = Path(str(resources.files("hami.sandbox") / "examples"))
    return candidate if candidate.is_dir() else None


def default_nodes_file() -> Path:
    """``nodes.yaml`` of the packaged examples: the node set the example pods are written for."""
    directory = examples_dir()
    if directory is None:
        raise FileNotFoundError("hami/sandbox/examples is missing from this installation of hami; reinstall the hami wheel")
    return directory / NODES_FILE


def example_pod_files() -> list[Path]:
    """Every packaged example pod file (all of ``examples/*.yaml`` but the node set), sorted by name."""
    directory = examples_dir()
    if directory is None:
        return []
    return sorted(p for p in directory.glob("*.yaml") if not p.name.startswith("nodes"))  # nodes.yaml, nodes-all-vendors.yaml
