"""docs/user-guide.md, "Why a pod is Pending", explains every reason code hami's extender can give
(issue 18: "what each Pending reason means"): the codes are read from the scheduler's, the backend kit's
and every backend's source (string constants shaped like HAMi's codes: pkg/device/common/common.go
``CardInsufficientMemory``, ``NumaNotFit``, ``ExclusiveDeviceAllocateConflict``, …), so a new code
without a line in the guide fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hami.wire.isolation import MISSING_REASON

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "user-guide.md"
CODE = re.compile(
    r"((?:Card|NodeInsufficient|NodeUnregistered)[A-Za-z]*|[A-Z][A-Za-z]+(?:Mismatch|NotFit|Conflict|Exhausted|LimitReached))(?::.*)?", re.S
)


def reason_codes(files: list[Path]) -> dict[str, set[str]]:
    """Reason-shaped string constants (a code alone, or a code and ``: why``) and the files that hold them."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = CODE.fullmatch(node.value)
                if match:
                    found.setdefault(match.group(1), set()).add(path.name)
    return found


def pending_section() -> str:
    text = GUIDE.read_text()
    return text.split("## Why a pod is Pending", 1)[1].split("\n## ", 1)[0]


def _sources() -> list[Path]:
    core = ROOT / "core" / "hami"
    return [
        *sorted((core / "scheduler").glob("*.py")),
        *sorted((core / "backendkit").glob("*.py")),
        *sorted(ROOT.glob("backends/*/hami_*/**/*.py")),
    ]


def test_codes_are_found_in_the_source():
    codes = reason_codes(_sources())
    assert {"CardInsufficientMemory", "NodeInsufficientDevice", "ExclusiveDeviceAllocateConflict", "NumaNotFit"} <= set(codes)
    assert not {"NodeNames", "NodeContext"} & set(codes)


def test_every_reason_code_is_explained(tmp_path: Path):
    section = pending_section()
    missing = {code: sorted(where) for code, where in reason_codes(_sources()).items() if f"`{code}" not in section}
    assert not missing, f"docs/user-guide.md 'Why a pod is Pending' lacks: {missing}"
    assert f"`{MISSING_REASON}" in section
    # the check can fail: a new code in a backend's source is reported
    extra = tmp_path / "plugin.py"
    extra.write_text('def fits():\n    return "CardWarpCoreMelted"\n')
    assert "CardWarpCoreMelted" in reason_codes([*_sources(), extra]) and "`CardWarpCoreMelted" not in section
