"""The pod examples of docs/user-guide.md's "Requests" section, each sent to a webhook over HTTP: the
``# admitted: adds name=value, …; warns "…"`` or ``# denied: fragment`` line above each is the check.
The rules the examples show are HAMi v2.10's (pkg/device/nvidia/device.go, as the guide says)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _examples() -> list[Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", _section(GUIDE.read_text(), "Requests"), re.S)
    return [pytest.param(block, id=yaml.safe_load(block)["metadata"]["name"]) for block in blocks]


def _as_quantities(pod: dict[str, Any]) -> dict[str, Any]:
    """What the API server hands the webhook: quantities as strings."""
    for container in pod["spec"]["containers"]:
        for section in ("limits", "requests"):
            values = (container.get("resources") or {}).get(section) or {}
            for name, value in values.items():
                values[name] = str(value)
    return pod


def test_the_section_has_examples() -> None:
    assert len(_examples()) >= 4


@pytest.mark.parametrize("block", _examples())
def test_user_guide_request_examples(webhook: Any, admit: Any, block: str) -> None:
    expectation = block.splitlines()[0]
    response = admit(webhook, _as_quantities(yaml.safe_load(block)))
    if expectation.startswith("# denied:"):
        assert response["allowed"] is False
        assert expectation.removeprefix("# denied:").strip() in response["status"]["message"]
        return
    assert expectation.startswith("# admitted:"), expectation
    assert response["allowed"] is True
    added = {
        op["path"].rsplit("/", 1)[-1].replace("~1", "/"): op["value"] for op in response["_ops"] or () if "/resources/limits/" in op["path"]
    }
    wanted = dict(pair.split("=") for pair in re.findall(r"([\w./-]+=\w+)", expectation.split("adds", 1)[1].split(";")[0]))
    assert added == wanted
    for warning in re.findall(r'warns "([^"]+)"', expectation):
        assert any(warning in w for w in response.get("warnings", ())), response.get("warnings")
