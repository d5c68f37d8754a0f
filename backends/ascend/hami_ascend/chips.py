"""The chip table: per chip its memory, AI cores, vNPU templates and topology, read from YAML.

Templates are data because new chips (910B4-1, 910C…) arrive faster than releases: the packaged
``templates.yaml`` holds HAMi's table, and the file named by the ``templates_file`` setting replaces
entries by ``commonWord``. Loading is cached per path, so the scheduler's hot path never reads files
after the first call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import yaml

from hami.sdk import BackendError

log = logging.getLogger(__name__)

PACKAGED = "templates.yaml"
_CHIP_KEYS = {
    "commonWord",
    "chipName",
    "npuSmiNames",
    "memoryAllocatable",
    "memoryCapacity",
    "memoryFactor",
    "aiCore",
    "aiCPU",
    "templates",
    "maxVnpus",
    "vnpuIdSpan",
    "hccs",
    "ringSize",
    "minCount",
    "resourceName",
    "resourceMemoryName",
    "resourceCoreName",
    "topologyPairs",
    "superPod",
}
_TEMPLATE_KEYS = {"name", "memory", "aiCore", "aiCPU"}


@attrs.frozen
class Template:
    """One vNPU template: ``npu-smi set -t create-vnpu -f <name>``."""

    name: str
    memory: int
    ai_core: int
    ai_cpu: int = 0


@attrs.frozen
class Chip:
    """One chip kind (a HAMi ``commonWord``) and how it splits."""

    vendor: str
    chip_name: str
    npu_smi_names: tuple[str, ...]
    memory: int
    """Schedulable MiB of a whole chip (HAMi's ``memoryAllocatable``)."""
    capacity: int
    ai_core: int
    templates: tuple[Template, ...]
    """Smallest memory first."""
    max_vnpus: int = 0
    vnpu_id_span: int = 16
    hccs: Literal["ring", "module", "none"] = "none"
    ring_size: int = 4
    min_count: int = 1

    def core_share(self, template: Template) -> int:
        """A template's AI cores in percent of the chip, rounded up (HAMi: vir05 of 20 cores → 25)."""
        return min(100, math.ceil(template.ai_core * 100 / self.ai_core)) if self.ai_core else 0

    def template_for(self, memory: int, cores: int = 0) -> Template | None:
        """The smallest template holding ``memory`` MiB and ``cores`` percent; None means the whole chip."""
        for template in self.templates:
            if template.memory >= memory and self.core_share(template) >= cores:
                return template
        return None

    def template_named(self, name: str) -> Template | None:
        return next((t for t in self.templates if t.name == name), None)

    def vnpu_ids(self, phy_id: int) -> range:
        start = phy_id * 16 + 100
        return range(start, start + self.vnpu_id_span)


def _int(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BackendError(f"{where}={value!r}: must be an integer >= {minimum}")
    return value


def _chip(raw: Any, where: str) -> Chip:
    if not isinstance(raw, Mapping):
        raise BackendError(f"{where}: expected a mapping, got {raw!r:.80}")
    unknown = sorted(set(raw) - _CHIP_KEYS)
    if unknown:
        raise BackendError(f"{where}: unknown key(s) {unknown}")
    vendor = raw.get("commonWord")
    if not isinstance(vendor, str) or not vendor:
        raise BackendError(f"{where}: commonWord={vendor!r} must be a chip name such as 'Ascend910B3'")
    where = f"{where} ({vendor})"
    templates = []
    for i, t in enumerate(raw.get("templates") or []):
        tw = f"{where} templates[{i}]"
        if not isinstance(t, Mapping) or set(t) - _TEMPLATE_KEYS or not isinstance(t.get("name"), str):
            raise BackendError(f"{tw}={t!r:.80}: needs name, memory, aiCore (and optionally aiCPU)")
        templates.append(
            Template(
                t["name"],
                _int(t.get("memory"), f"{tw}.memory", 1),
                _int(t.get("aiCore", 0), f"{tw}.aiCore"),
                _int(t.get("aiCPU", 0), f"{tw}.aiCPU"),
            )
        )
    hccs = raw.get("hccs", "none")
    if hccs not in ("ring", "module", "none"):
        raise BackendError(f"{where}.hccs={hccs!r}: must be ring, module or none")
    names = raw.get("npuSmiNames") or [raw.get("chipName") or vendor]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise BackendError(f"{where}.npuSmiNames={names!r}: must be a list of names")
    allocatable = _int(raw.get("memoryAllocatable"), f"{where}.memoryAllocatable", 1)
    return Chip(
        vendor=vendor,
        chip_name=str(raw.get("chipName") or vendor),
        npu_smi_names=tuple(names),
        memory=allocatable,
        capacity=_int(raw.get("memoryCapacity", allocatable), f"{where}.memoryCapacity", 1),
        ai_core=_int(raw.get("aiCore", 0), f"{where}.aiCore"),
        templates=tuple(sorted(templates, key=lambda t: (t.memory, t.ai_core))),
        max_vnpus=_int(raw.get("maxVnpus", 0), f"{where}.maxVnpus"),
        vnpu_id_span=_int(raw.get("vnpuIdSpan", 16), f"{where}.vnpuIdSpan", 1),
        hccs=hccs,
        ring_size=_int(raw.get("ringSize", 4), f"{where}.ringSize", 1),
        min_count=_int(raw.get("minCount", 1), f"{where}.minCount", 1),
    )


def parse_table(data: Any, source: str) -> dict[str, Chip]:
    """Chips by vendor key from loaded YAML (``{vnpus: [...]}`` or a bare list, as HAMi's ConfigMap has it)."""
    entries = data.get("vnpus") if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise BackendError(f"{source}: expected a 'vnpus' list of chips")
    chips: dict[str, Chip] = {}
    for i, raw in enumerate(entries):
        chip = _chip(raw, f"{source} vnpus[{i}]")
        if chip.vendor in chips:
            raise BackendError(f"{source}: chip {chip.vendor!r} is listed twice")
        chips[chip.vendor] = chip
    return chips


def _load(text: str, source: str) -> dict[str, Chip]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendError(f"{source} is not valid YAML: {exc}") from None
    return parse_table(data, source)


@lru_cache(maxsize=1)
def packaged_table() -> dict[str, Chip]:
    return _load(resources.files("hami_ascend").joinpath(PACKAGED).read_text(), f"hami_ascend/{PACKAGED}")


@lru_cache(maxsize=16)
def _table_with(path: str) -> dict[str, Chip]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BackendError(f"templates_file {path!r}: {exc.strerror or exc}") from None
    overrides = _load(text, f"templates_file {path!r}")
    table = dict(packaged_table())
    for vendor, chip in overrides.items():
        if vendor not in table:
            log.warning("event=ascend_template_ignored file=%s chip=%s reason=no_device_kind_declared", path, vendor)
            continue
        table[vendor] = chip
    log.info("event=ascend_templates_loaded file=%s overridden=%s", path, ",".join(sorted(set(overrides) & set(table))))
    return table


def chip_table(config: Mapping[str, Any]) -> dict[str, Chip]:
    """The packaged table overlaid with ``config["templates_file"]`` when set (cached per path)."""
    path = config.get("templates_file")
    return _table_with(str(path)) if path else packaged_table()


def chip_for(config: Mapping[str, Any], vendor: str) -> Chip:
    chip = chip_table(config).get(vendor)
    if chip is None:
        raise BackendError(f"no chip entry for {vendor!r} in the Ascend template table")
    return chip


def classify(table: Mapping[str, Chip], name: str, hbm: int) -> Chip | None:
    """The chip an ``npu-smi`` name with ``hbm`` MiB is, or None when no entry lists the name."""
    candidates = [c for c in table.values() if name in c.npu_smi_names]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    exact = [c for c in candidates if c.capacity == hbm]
    if exact:
        return exact[0]
    holding = sorted((c for c in candidates if c.capacity >= hbm), key=lambda c: c.capacity)
    return holding[0] if holding else max(candidates, key=lambda c: c.capacity)
