"""Where the sandbox's default cluster and example pods live: package data inside the ``hami`` wheel
(``hami/sandbox/examples``), so ``hami sandbox`` works from any install and any working directory.

``deploy/examples`` in the repository is the human-readable copy of the same files;
tests/install/test_packaged_examples.py keeps the two identical (``make examples`` copies them over).
This module imports nothing heavy: the CLI finds the defaults before it starts a cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

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


def node_set_files() -> list[Path]:
    """Every packaged node set: ``nodes.yaml`` first, then the others (``nodes-*.yaml``) by name."""
    directory = examples_dir()
    if directory is None:
        return []
    return sorted(directory.glob("nodes*.yaml"), key=lambda p: (p.name != NODES_FILE, p.name))


def default_cluster(vendors: Collection[str]) -> dict[str, Any]:
    """The cluster ``hami sandbox`` runs when given no ``--nodes``: the nodes of every packaged node set
    that carry a device of an installed vendor key (``vendors``), so that a full install gets a node of
    every vendor and an install with one backend gets only the nodes that backend can serve. Nodes
    without devices are kept; a node whose devices no installed backend owns would only sit idle."""
    import yaml

    installed = set(vendors)
    nodes: list[dict[str, Any]] = []
    for path in node_set_files():
        for node in (yaml.safe_load(path.read_text()) or {}).get("nodes") or []:
            devices = node.get("devices") or []
            if not devices or any(d.get("vendor") in installed for d in devices):
                nodes.append(node)
    return {"nodes": nodes}


def write_default_cluster(directory: Path, vendors: Collection[str]) -> Path:
    """:func:`default_cluster` as ``<directory>/nodes.yaml`` (the backends read the inventory from a file)."""
    import yaml

    path = directory / NODES_FILE
    path.write_text(yaml.safe_dump(default_cluster(vendors), sort_keys=False))
    return path


NOT_COUNTED = ("cpu", "memory", "ephemeral-storage", "pods")


def unserved_resources(pod: Mapping[str, Any], served: Collection[str]) -> list[str]:
    """The extended resources ``pod`` asks for (limits or requests of any container) that no installed
    backend serves (``served``: every installed backend's resource names); Kubernetes' own resources
    (cpu, memory, hugepages-*, ``kubernetes.io/`` names) are not counted."""
    spec = pod.get("spec") or {}
    wanted: set[str] = set()
    for container in (*(spec.get("initContainers") or []), *(spec.get("containers") or [])):
        resources = container.get("resources") or {}
        for section in ("limits", "requests"):
            wanted.update(resources.get(section) or {})
    own = {n for n in wanted if n in NOT_COUNTED or n.startswith("hugepages-") or "kubernetes.io/" in n}
    return sorted(wanted - own - set(served))


def skip_reason(pod: Mapping[str, Any], served: Collection[str]) -> str:
    """Why an example pod is not run in this install ('' when it is): it needs a backend that is not installed."""
    missing = unserved_resources(pod, served)
    if not missing:
        return ""
    return f"asks for {', '.join(missing)}, which no installed backend serves (`hami backends` lists those installed)"
