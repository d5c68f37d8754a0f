"""Recorded ``nvidia-smi`` outputs (``recordings/*.txt``) turned into fake-NVML scenarios.

The backend reads NVML, not nvidia-smi; nvidia-smi prints what NVML answers. So a published
``nvidia-smi -q -x`` or ``nvidia-smi -L`` output describes what the driver's library told it, and
replaying those answers through the fake ``libnvidia-ml.so.1`` shows what discovery makes of that
machine. A figure the recording does not show is left out of the scenario (the fake then answers
NOT_SUPPORTED or its default), and the tests do not assert it.

Each recording starts with ``# key: value`` lines: ``source`` (where it was published), ``command``,
``excerpt``, ``absent from the source``, and for a GPU that stopped answering ``lost: <index>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).parent / "recordings"

# NVML return codes for the error strings nvidia-smi prints (nvml.h)
NVML_CODES = {"GPU is lost": 15, "Unknown Error": 999, "Insufficient Permissions": 4, "Not Supported": 3}

_LIST_GPU = re.compile(r"^GPU (\d+): (.+) \(UUID: (GPU-[0-9a-f-]+)\)$")
_LIST_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[0-9a-f-]+)\)$")
_MIG_ROW = re.compile(r"^\|\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\s*(\d+)MiB /\s*(\d+)MiB")
_NO_HANDLE = re.compile(r"^Unable to determine the device handle for GPU ?([0-9A-Fa-f:.]+): (.+?)\.?$")


@attrs.frozen
class Recording:
    name: str
    header: dict[str, str]
    body: str

    @property
    def source(self) -> str:
        return self.header["source"]


def recordings() -> list[Path]:
    return sorted(HERE.glob("*.txt"))


def load(path: Path) -> Recording:
    header: dict[str, str] = {}
    lines = path.read_text().splitlines()
    body_at = 0
    for body_at, line in enumerate(lines):  # noqa: B007 - the first non-header line is where the body starts
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(":")
        header[key.strip()] = value.strip()
    if "source" not in header:
        raise ValueError(f"{path.name}: no '# source:' header naming where the output was published")
    return Recording(path.name, header, "\n".join(lines[body_at:]))


def _mib(text: str | None) -> int | None:
    match = re.fullmatch(r"\s*(\d+) MiB\s*", text or "")
    return int(match.group(1)) if match else None


def _number(text: str | None, unit: str) -> float | None:
    match = re.fullmatch(rf"\s*([\d.]+) {unit}\s*", text or "")
    return float(match.group(1)) if match else None


def _from_xml(body: str) -> list[dict[str, Any]]:
    root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", body).strip())
    devices = []
    for gpu in root.findall("gpu"):
        spec: dict[str, Any] = {"uuid": gpu.findtext("uuid"), "name": gpu.findtext("product_name")}
        spec["bus_id"] = gpu.findtext("pci/pci_bus_id") or gpu.get("id")
        if (total := _mib(gpu.findtext("fb_memory_usage/total"))) is not None:
            spec["memory_mib"] = total
        if (used := _mib(gpu.findtext("fb_memory_usage/used"))) is not None:
            spec["used_mib"] = used
        mig = (gpu.findtext("mig_mode/current_mig") or "").strip()
        if mig in ("Enabled", "Disabled"):
            spec["mig"] = 1 if mig == "Enabled" else 0
        util = [_number(gpu.findtext(f"utilization/{k}"), "%") for k in ("gpu_util", "memory_util")]
        if None not in util:
            spec["util"] = [int(u) for u in util if u is not None]  # NVML's nvmlUtilization_t holds whole percents
        if (watts := _number(gpu.findtext("power_readings/power_draw"), "W")) is not None:
            spec["power_mw"] = round(watts * 1000)
        if (celsius := _number(gpu.findtext("temperature/gpu_temp"), "C")) is not None:
            spec["temp_c"] = int(celsius)
        devices.append(spec)
    return devices


def _from_listing(body: str, header: dict[str, str]) -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = []
    mig_memory: dict[tuple[int, int], int] = {}
    errors = []
    for line in body.splitlines():
        if match := _LIST_GPU.match(line):
            devices.append({"uuid": match.group(3), "name": match.group(2)})
        elif match := _LIST_MIG.match(line):
            gpu = devices[-1]
            gpu["mig"] = 1
            gpu.setdefault("mig_devices", []).append(
                {"uuid": match.group(3), "name": f"{gpu['name']} MIG {match.group(1)}", "dev": int(match.group(2))}
            )
        elif match := _MIG_ROW.match(line):
            mig_memory[(int(match.group(1)), int(match.group(4)))] = int(match.group(6))
        elif match := _NO_HANDLE.match(line):
            errors.append((match.group(1), match.group(2)))
    for index, gpu in enumerate(devices):
        for mig in gpu.get("mig_devices", []):
            if (memory := mig_memory.get((index, mig.pop("dev")))) is not None:
                mig["memory_mib"] = memory
    for bus, message in errors:
        lost = devices[int(header["lost"])]
        lost.update(bus_id=bus, handle_error=NVML_CODES[message])
    return devices


def _from_query(body: str) -> list[dict[str, Any]]:
    """``nvidia-smi -q``: ``GPU <bus id>`` opens a GPU; ``Key : value`` lines, nested under section
    lines (``MIG Mode``, ``FB Memory Usage``) by indentation."""
    devices: list[dict[str, Any]] = []
    section = ""
    for line in body.splitlines():
        if match := re.match(r"^GPU ([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.\d)$", line):
            devices.append({"bus_id": match.group(1)})
            continue
        if not devices or not line.startswith("    "):
            continue
        key, sep, value = (part.strip() for part in line.partition(" : "))
        if not sep:
            section = key if not line.startswith("        ") else section
            continue
        gpu, value = devices[-1], value.strip()
        if key == "Product Name":
            gpu["name"] = value
        elif key == "GPU UUID":
            gpu["uuid"] = value
        elif section == "MIG Mode" and key == "Current" and value in ("Enabled", "Disabled"):
            gpu["mig"] = 1 if value == "Enabled" else 0
        elif section == "FB Memory Usage" and key in ("Total", "Used") and (mib := _mib(value)) is not None:
            gpu["memory_mib" if key == "Total" else "used_mib"] = mib
    return devices


def scenario(recording: Recording) -> dict[str, Any]:
    """The fake NVML's JSON for the machine the recording shows."""
    body = recording.body.strip()
    if body.startswith("<?xml"):
        devices = _from_xml(body)
    elif body.startswith("==============NVSMI LOG"):
        devices = _from_query(body)
    else:
        devices = _from_listing(body, recording.header)
    if not devices:
        raise ValueError(f"{recording.name}: no GPU found in the recording")
    return {"devices": devices}
