"""docs/migrating-from-hami.md cannot drift from the chart: every HAMi values key its mapping table names
(HAMi v2.10.0 charts/hami/values.yaml) is a key our values.schema.json knows (so ``helm install``
accepts it, maps it or refuses it naming ours; an unknown key would fail as a typo), and every test file
the guide names exists."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "migrating-from-hami.md"
SCHEMA = ROOT / "deploy" / "helm" / "hami" / "values.schema.json"


def mapped_hami_keys(text: str) -> list[str]:
    """The keys of the first column of the "| HAMi key | becomes |" table, braces expanded, ``.x``
    completed from the key before it; ``(…)`` asides (example values, versions) are left out."""
    lines = text.split("| HAMi key | becomes |", 1)[1].splitlines()[2:]
    keys: list[str] = []
    for line in lines:
        if not line.startswith("|"):
            break
        cell = re.sub(r"\([^)]*\)", "", line.split("|")[1])
        for raw in re.findall(r"`([^`]+)`", cell):
            if raw.startswith("."):
                raw = keys[-1].rsplit(".", 1)[0] + raw
            keys.extend(_expand(raw))
    return keys


def _expand(key: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", key)
    if not match:
        return [key]
    return [e for option in match.group(1).split(",") for e in _expand(key[: match.start()] + option + key[match.end() :])]


def _children(node: dict[str, Any], segment: str) -> Iterator[dict[str, Any]]:
    for branch in node.get("oneOf", [node]):
        properties = branch.get("properties", {})
        if segment == "*" or re.fullmatch(r"<[^>]+>", segment):
            yield from properties.values()
        elif segment.endswith("…"):
            yield from (v for k, v in properties.items() if k.startswith(segment[:-1]))
        elif segment in properties:
            yield properties[segment]
        elif isinstance(branch.get("additionalProperties"), dict):
            yield branch["additionalProperties"]


def schema_knows(schema: dict[str, Any], key: str) -> bool:
    nodes = [schema]
    for segment in key.split("."):
        nodes = [child for node in nodes for child in _children(node, segment)]
    return bool(nodes)


def test_the_table_is_read():
    keys = mapped_hami_keys(GUIDE.read_text())
    assert len(keys) >= 40
    assert {
        "scheduler.kubeScheduler.image.pullPolicy",
        "scheduler.defaultSchedulerPolicy.gpuSchedulerPolicy",
        "devices.hygon.enabled",
    } <= set(keys)
    assert not [k for k in keys if " " in k or k.startswith(".")]


def test_schema_lookup_refuses_what_it_does_not_know():
    schema = json.loads(SCHEMA.read_text())
    assert schema_knows(schema, "devicePlugin.deviceSplitCount")
    assert not schema_knows(schema, "devicePlugin.deviceSplitCont")
    assert not schema_knows(schema, "device.mthreads.enabled")


def test_every_mapped_hami_key_is_in_the_schema():
    schema = json.loads(SCHEMA.read_text())
    unknown = [key for key in mapped_hami_keys(GUIDE.read_text()) if not schema_knows(schema, key)]
    assert not unknown, f"docs/migrating-from-hami.md maps keys values.schema.json does not know: {unknown}"


@pytest.mark.parametrize("path", sorted(set(re.findall(r"\b((?:tests|backends/\w+/tests)/[\w/]+\.py)\b", GUIDE.read_text()))))
def test_every_named_test_file_exists(path):
    assert (ROOT / path).is_file(), f"docs/migrating-from-hami.md names {path}, which does not exist"
