"""The core names no vendor: every vendor word lives in a backend (issue 17, "vendor-neutral core").

Scanned: every Python file under core/hami — code, comments and docstrings alike, since an example
that names a vendor teaches readers that the core knows it. Not scanned: data files (the sandbox's
example cluster and pods under hami/sandbox/examples are user data that happen to ship in the wheel).

Exempt: HAMi's wire format, which the core must speak byte for byte (one line each, below), and
citations of HAMi's upstream source paths (``pkg/device/<vendor>/device.go``), which name a file,
not a vendor the core knows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hami

CORE = Path(hami.__file__).resolve().parent

BANNED = frozenset(
    [
        "nvidia",
        "nvml",
        "nvlink",
        "cuda",
        "mig",
        "ascend",
        "huawei",
        "hccs",
        "npu",
        "vnpu",
        "cambricon",
        "cnmon",
        "mlu",
        "smlu",
        "mlulink",
        "hygon",
        "dcu",
        "vdcu",
    ]
)
"""Vendor and vendor-technology words, compared with each word and each camelCase part of it."""
BANNED_PREFIXES = ("nvidia", "nvml", "nvlink", "cuda", "ascend", "huawei", "cambricon", "hygon", "mlu", "npu", "dcu")
"""Also caught inside a longer word (``dcucores``, ``npumem``); none begins an ordinary English word."""
BANNED_PHRASES = re.compile(r"hy-smi|npu-smi", re.IGNORECASE)
UPSTREAM_PATH = re.compile(r"\bpkg/device/[a-z]+/")
"""A citation of HAMi's source tree, e.g. ``pkg/device/<vendor>/device.go``."""

EXEMPT = {
    ("wire/codec.py", 'PARTITIONS_KEY = "migProfiles"'),  # HAMi's JSON key for partition layouts (pkg/util/types.go)
    ("wire/partitions.py", 'ANNOTATION = "hami.io/vgpu-mig-allocations"'),  # HAMi's partition-instance annotation
    ("wire/partitions.py", 'INSTANCE_UUID_KEY = "migUUID"'),  # its JSON key for the instance UUID
    ("metrics.py", 'PARTITION_NODE_METRIC = "hami_node_gpu_mig_instance_info"'),  # cmd/scheduler/metrics.go
    ("metrics.py", 'PARTITION_NODE_LEGACY = "nodeGPUMigInstance"'),  # its --legacy-metrics name
    ("metrics.py", 'PARTITION_CONTAINER_METRIC = "hami_mig_device_info"'),  # cmd/vGPUmonitor/metrics.go
    ("metrics.py", 'PARTITION_CONTAINER_LEGACY = "MigInfo"'),  # its --legacy-metrics name
    ("metrics.py", 'PARTITION_UUID_LABEL = "mig_uuid"'),  # their label for the instance UUID
}
"""(path under core/hami, the exact stripped line): HAMi's wire spelling, nothing else."""

_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def vendor_words(line: str) -> list[str]:
    line = UPSTREAM_PATH.sub("pkg/device/-/", line)
    found = [m.group(0) for m in BANNED_PHRASES.finditer(line)]
    for word in _WORD.findall(line):
        lowered = word.lower()
        parts = [p.lower() for p in _CAMEL.findall(word)]
        if lowered in BANNED or lowered.startswith(BANNED_PREFIXES) or any(p in BANNED for p in parts):
            found.append(word)
    return found


@pytest.mark.parametrize(
    "line",
    [
        '"nvidia.com/gpu"',
        "migProfiles",
        "mig_profiles",
        "a vNPU template",
        "dcucores",
        "NVLink pairs",
        "MLULink rings",
        "runs hy-smi",
        "CUDA_VISIBLE",
        "pkg/device/nvidia/device.go and nvidia",
    ],
)
def test_the_scan_catches_vendor_words(line: str) -> None:
    assert vendor_words(line)


@pytest.mark.parametrize(
    "line", ["input = migrate(simulate)", "GPU-node-0 gpucores", "hami.io/vgpu-node", "emulated Midnight", "(pkg/device/nvidia/device.go)"]
)
def test_the_scan_lets_ordinary_words_through(line: str) -> None:
    assert vendor_words(line) == []


def test_no_vendor_word_in_the_core() -> None:
    offenders = []
    used = set()
    for path in sorted(CORE.rglob("*.py")):
        relative = path.relative_to(CORE).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            words = vendor_words(line)
            if not words:
                continue
            if (relative, line.strip()) in EXEMPT:
                used.add((relative, line.strip()))
                continue
            offenders.append(f"core/hami/{relative}:{number}: {', '.join(words)}: {line.strip()[:100]}")
    assert not offenders, "vendor words belong in backends:\n" + "\n".join(offenders)
    assert used == EXEMPT, f"stale exemptions: {sorted(EXEMPT - used)}"
