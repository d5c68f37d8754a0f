"""A stand-in for ``npu-smi``: replays recorded real output and records every invocation.

Environment: ``FAKE_NPU_SMI_DIR`` (the fixtures), ``FAKE_NPU_SMI_INFO`` (file replayed for ``info``),
``FAKE_NPU_SMI_LOG`` (JSON lines of argv, appended), ``FAKE_NPU_SMI_FAIL`` (comma list of
``<set type>:<n>`` or ``<set type>:*``: fail the n-th / every such call). An injected failure is
SYNTHETIC — no public page shows a failed create-vnpu — and says so in its output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def replay(name: str) -> str:
    text = (Path(os.environ["FAKE_NPU_SMI_DIR"]) / name).read_text()
    lines = text.splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines)


def main(argv: list[str]) -> int:
    log = Path(os.environ["FAKE_NPU_SMI_LOG"])
    previous = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    with log.open("a") as out:
        out.write(json.dumps(argv) + "\n")
    if argv == ["info"]:
        sys.stdout.write(replay(os.environ.get("FAKE_NPU_SMI_INFO", "info_910a_8card.txt")))
        return 0
    if argv[:3] == ["info", "-t", "board"]:
        sys.stdout.write(replay("board_910b.txt"))
        return 0
    if argv[:2] == ["set", "-t"] and len(argv) > 2 and argv[2] in ("create-vnpu", "destroy-vnpu"):
        kind = argv[2]
        nth = 1 + sum(1 for p in previous if p[:3] == ["set", "-t", kind])
        for rule in filter(None, os.environ.get("FAKE_NPU_SMI_FAIL", "").split(",")):
            verb, _, which = rule.partition(":")
            if verb == kind and which in ("*", str(nth)):
                sys.stdout.write(f"FAKE npu-smi: injected failure of {kind} call #{nth} (synthetic, not recorded output)\n")
                return 1
        sys.stdout.write(replay("create_vnpu_ok.txt" if kind == "create-vnpu" else "destroy_vnpu_ok.txt"))
        return 0
    sys.stdout.write(f"FAKE npu-smi: no recording for {argv}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
