"""Reading a trace: openb node and pod CSVs (and our node inventory YAML) into plain value types.

The simulator is only as trustworthy as its input, so a bad row is an error naming the file, the
line and the value, never a silently skipped task.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from hami.backendkit.inventory import load_inventory
from hami.errors import HamiError
from hami.plugin.model import frozen_tuple

MILLI = 1000
"""One whole GPU in the trace's unit (``gpu_milli``)."""


class TraceError(HamiError, ValueError):
    """A trace file is malformed; the message names the file, line and value."""


def _positive_milli(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise TraceError(f"{type(instance).__name__}.{attribute.name}={value!r}: must not be negative")


@attrs.frozen
class GpuModelDevice:
    """One GPU of a simulated node: the trace only knows its model; memory is nominal."""

    model: str
    memory: int = 16384
    vendor: str | None = None
    """The device's vendor key when the node file names it (our inventory does; openb's CSV does not)."""


@attrs.frozen
class TraceNode:
    name: str
    cpu_milli: int = attrs.field(validator=_positive_milli)
    memory_mib: int = attrs.field(validator=_positive_milli)
    gpus: tuple[GpuModelDevice, ...] = attrs.field(default=(), converter=frozen_tuple)

    @property
    def gpu_milli(self) -> int:
        return MILLI * len(self.gpus)


@attrs.frozen
class TraceTask:
    """One task of the workload: ``num_gpu`` devices of ``gpu_milli`` each (a share when < 1000)."""

    name: str
    cpu_milli: int = attrs.field(validator=_positive_milli)
    memory_mib: int = attrs.field(validator=_positive_milli)
    num_gpu: int = attrs.field(default=0, validator=_positive_milli)
    gpu_milli: int = attrs.field(default=0, validator=_positive_milli)
    gpu_spec: tuple[str, ...] = attrs.field(default=(), converter=frozen_tuple)
    """Allowed GPU models; empty = any."""

    def __attrs_post_init__(self) -> None:
        if self.num_gpu and not 0 < self.gpu_milli <= MILLI:
            raise TraceError(f"task {self.name!r}: gpu_milli={self.gpu_milli} must be 1..{MILLI} when num_gpu={self.num_gpu}")
        if self.num_gpu > 1 and self.gpu_milli != MILLI:
            raise TraceError(f"task {self.name!r}: num_gpu={self.num_gpu} with gpu_milli={self.gpu_milli}: multi-GPU tasks take whole GPUs")
        if not self.num_gpu and self.gpu_milli:
            raise TraceError(f"task {self.name!r}: gpu_milli={self.gpu_milli} with num_gpu=0")

    @property
    def total_gpu_milli(self) -> int:
        """What the task adds to the arrived workload (Σ num_gpu × gpu_milli)."""
        return self.num_gpu * self.gpu_milli


# Nominal per-GPU memory (MiB) of the openb models; requests are percentages, so only the
# proportions matter. Unknown models get 16 GiB.
MODEL_MEMORY = {"P100": 16384, "T4": 15360, "V100M16": 16384, "V100M32": 32768, "A10": 24576, "G1": 16384, "G2": 16384, "G3": 32768}

# Required columns. The published openb lists vary (some pod lists lack gpu_spec, qos or the times), so
# everything else is optional with the obvious default: no gpu_spec = any GPU model; a node's model is
# needed only on a row with gpu > 0 (checked per row); qos, pod_phase and the times are not used.
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")


def _rows(path: Path, required: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise TraceError(f"{path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise TraceError(
                f"{path}: line 1: missing column(s) {', '.join(missing)} (has: {', '.join(reader.fieldnames or ()) or 'nothing'})"
            )
        for row in reader:
            yield reader.line_num, row


def _int(row: dict[str, str], column: str, where: str, default: int | None = None) -> int:
    text = (row.get(column) or "").strip()
    if not text and default is not None:
        return default
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            raise TraceError(f"{where}: {column}={text!r} is not a whole number") from None
        if as_float != int(as_float):
            raise TraceError(f"{where}: {column}={text!r} is not a whole number") from None
        value = int(as_float)
    if value < 0:
        raise TraceError(f"{where}: {column}={text!r} must not be negative")
    return value


def read_nodes_csv(path: str | os.PathLike[str]) -> list[TraceNode]:
    """openb's node list: ``sn, cpu_milli, memory_mib, gpu`` and ``model`` (needed where ``gpu`` > 0)."""
    path = Path(path)
    nodes = []
    seen: set[str] = set()
    for line, row in _rows(path, NODE_COLUMNS):
        where = f"{path}: line {line}"
        name = (row.get("sn") or "").strip()
        if not name:
            raise TraceError(f"{where}: empty sn (node name)")
        if name in seen:
            raise TraceError(f"{where}: node {name!r} appears twice")
        seen.add(name)
        gpus = _int(row, "gpu", where, 0)
        model = (row.get("model") or "").strip()
        if gpus and not model:
            absent = "" if "model" in row else " (the file has no model column)"
            raise TraceError(f"{where}: node {name!r} has gpu={gpus} but no model{absent}")
        device = GpuModelDevice(model, MODEL_MEMORY.get(model, 16384)) if gpus else None
        nodes.append(TraceNode(name, _int(row, "cpu_milli", where), _int(row, "memory_mib", where), (device,) * gpus if device else ()))
    if not nodes:
        raise TraceError(f"{path}: no nodes")
    return nodes


def read_nodes_inventory(path: str | os.PathLike[str]) -> list[TraceNode]:
    """Our node inventory YAML (:mod:`hami.backendkit.inventory`): every device becomes a GPU of its
    type and vendor (the simulator keeps one vendor's, see :func:`hami.sim.cluster.trace_kind`)."""
    nodes = []
    for node in load_inventory(path):
        gpus = tuple(GpuModelDevice(d.type, d.memory, d.vendor) for d in node.devices)
        nodes.append(TraceNode(node.name, node.cpu_milli, node.memory, gpus))
    if not nodes:
        raise TraceError(f"{path}: no nodes")
    return nodes


def read_nodes(path: str | os.PathLike[str]) -> list[TraceNode]:
    """Nodes from an openb CSV or, by extension, our inventory YAML/JSON."""
    suffix = Path(path).suffix.lower()
    return read_nodes_inventory(path) if suffix in (".yaml", ".yml", ".json") else read_nodes_csv(path)


def read_pods_csv(path: str | os.PathLike[str]) -> list[TraceTask]:
    """openb's pod list: ``name, cpu_milli, memory_mib, num_gpu, gpu_milli``, and ``gpu_spec`` when present
    (allowed models, ``|``-separated; absent or empty = any model). Other columns are ignored."""
    path = Path(path)
    tasks = []
    for line, row in _rows(path, POD_COLUMNS):
        where = f"{path}: line {line}"
        name = (row.get("name") or "").strip() or f"line-{line}"
        spec = tuple(s.strip() for s in (row.get("gpu_spec") or "").split("|") if s.strip())
        try:
            tasks.append(
                TraceTask(
                    name,
                    _int(row, "cpu_milli", where, 0),
                    _int(row, "memory_mib", where, 0),
                    _int(row, "num_gpu", where, 0),
                    _int(row, "gpu_milli", where, 0),
                    spec,
                )
            )
        except TraceError as exc:
            raise TraceError(f"{where}: {exc}") from None
    if not tasks:
        raise TraceError(f"{path}: no tasks")
    return tasks
