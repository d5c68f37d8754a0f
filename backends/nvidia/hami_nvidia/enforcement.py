"""What enforces a GPU share on this node, checked rather than assumed (``hami_enforcement``).

hami-core: HAMi-core's ``libvgpu.so`` under ``<hook_path>/vgpu`` on the host (the chart's init
container copies it from HAMi's image, as upstream's ``docker/vgpu-init.sh`` does), an ELF shared
object for this node's architecture, plus the ``ld.so.preload`` that loads it into every container
process. mps: the control daemon's pipe directory (or, when the agent manages the daemon, its control
executable). mig: MIG mode switched on in the driver, per GPU, as NVML reported it at discovery.
none: time-slicing, which enforces no limit at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hami.sdk import Enforcement, NodeContext, PhysicalDevice, library_problem, simulated_enforcement
from hami_nvidia import edits
from hami_nvidia.mps import MpsPaths
from hami_nvidia.settings import mode_of, node_config

VENDOR = "NVIDIA"
MECHANISMS = {
    "hami-core": "HAMi-core (libvgpu.so preloaded)",
    "mps": "MPS control daemon",
    "mig": "MIG mode",
    "none": "time-slicing (no limits)",
}


def _version(config: Mapping[str, Any], lib: str) -> str:
    """HAMi-core's version as its file name carries it (``libvgpu.so.<version>``, upstream's Dockerfile
    names it after the HAMi release), from the configured name or the stable link's target."""
    name = Path(lib).name
    if name.startswith("libvgpu.so."):
        return name.removeprefix("libvgpu.so.")
    try:
        target = os.readlink(edits.host_path(config, lib))
    except OSError:
        return ""
    target_name = Path(target).name
    return target_name.removeprefix("libvgpu.so.") if target_name.startswith("libvgpu.so.") else ""


def hami_core(config: Mapping[str, Any]) -> Enforcement:
    """HAMi-core present and loadable-looking: the library (versioned name first, as edits mounts
    it), its ELF header, and the preload list."""
    lib = edits.library(config)
    problem = library_problem(edits.host_path(config, lib))
    if problem is None:
        preload = f"{edits.hook_dir(config)}/ld.so.preload"
        if not edits.host_path(config, preload).is_file():
            problem = f"{preload} is missing (it makes containers load libvgpu.so)"
    if problem is not None:
        return Enforcement(
            VENDOR,
            "hami-core",
            ready=False,
            mechanism=MECHANISMS["hami-core"],
            reason=f"HAMi-core: {problem}; install it with the chart (agent.hamiCore) or copy it there as HAMi's vgpu-init.sh does",
        )
    version = _version(config, lib)
    return Enforcement(VENDOR, "hami-core", mechanism=f"HAMi-core {lib}" + (f" ({version})" if version else " (version unknown)"))


def mps(config: Mapping[str, Any]) -> Enforcement:
    """The daemon's pipe directory on the host; when the agent starts the daemon itself, its control
    executable is enough (the pipe appears on first use)."""
    paths = MpsPaths(str(config.get("mps_root") or MpsPaths().root))
    pipe = edits.host_path(config, paths.pipe)
    if pipe.is_dir():
        return Enforcement(VENDOR, "mps", mechanism=f"MPS control daemon pipe {paths.pipe}")
    control = str(config.get("mps_control") or "nvidia-cuda-mps-control")
    if config.get("mps_manage_daemon", True) and shutil.which(control):
        return Enforcement(VENDOR, "mps", mechanism=f"MPS control daemon (started by the agent with {control})")
    how = (
        f"the agent cannot start one: {control} is not on its PATH" if config.get("mps_manage_daemon", True) else "mps_manage_daemon is off"
    )
    return Enforcement(
        VENDOR, "mps", ready=False, mechanism=MECHANISMS["mps"], reason=f"no MPS control daemon pipe at {paths.pipe} and {how}"
    )


def mig(devices: Sequence[PhysicalDevice]) -> list[Enforcement]:
    """MIG mode per GPU, as NVML reported it at discovery: a GPU the node wants in MIG mode that is not
    cannot give a MIG instance (its shares would be plain time-slicing)."""
    out = [Enforcement(VENDOR, "mig", mechanism="MIG mode (NVML)")]
    for d in devices:
        if not d.attributes.get("mig_enabled"):
            out.append(
                Enforcement(
                    VENDOR,
                    "mig",
                    ready=False,
                    mechanism=MECHANISMS["mig"],
                    device_ids=(d.id,),
                    reason=f"GPU {d.index} ({d.id}) is not in MIG mode (nvidia-smi -i {d.index} -mig 1, then reset the GPU)",
                )
            )
    return out


def check(devices: Sequence[PhysicalDevice], config: Mapping[str, Any], node: NodeContext) -> list[Enforcement]:
    """The report for this node: the configured mode, and MIG for GPUs in MIG mode (their split)."""
    cfg = node_config(config, node.name)
    mode = mode_of(cfg)
    modes = {mode} | ({"mig"} if any(d.attributes.get("mig_enabled") for d in devices) else set())
    if node.simulated:
        return [e for m in sorted(modes) for e in simulated_enforcement(devices, VENDOR, [m], MECHANISMS[m])]
    out: list[Enforcement] = []
    for m in sorted(modes):
        if m == "hami-core":
            out.append(hami_core(cfg))
        elif m == "mps":
            out.append(mps(cfg))
        elif m == "mig":
            out.extend(mig([d for d in devices if mode == "mig" or d.attributes.get("mig_enabled")]))
        else:
            out.append(
                Enforcement(
                    VENDOR,
                    "none",
                    ready=False,
                    mechanism=MECHANISMS["none"],
                    reason="mode none shares GPUs by time-slicing: nothing enforces memory or compute limits (set advisory_limits: true to offer shares anyway)",
                )
            )
    return out
