"""HAMi-core's shared region: the per-container cache file ``libvgpu.so`` keeps its accounting in.

HAMi-core (``CUDA_DEVICE_MEMORY_SHARED_CACHE``, mounted from ``<hook_path>/vgpu/containers/<pod
uid>_<container>/``) maps one ``shared_region_t`` per container: per device the limits and, per
process slot, the memory in use and SM utilization; plus the priority-feedback fields the vGPU monitor
writes. The layouts are HAMi-core's own (Project-HAMi/HAMi-core ``src/multiprocess/multiprocess_memory_limit.h``):

* **v0** (HAMi-core before version fields, commit 7a9c88b): no ``major/minor_version``, 5-field
  ``device_memory_t``, 3-field ``device_util_t``, no ``last_kernel_time``;
* **v1** (``MAJOR_VERSION 1``: minor 1 from 9b46404, minor 2 today): versions after the flag, an
  ``unused`` tail on each struct, ``last_kernel_time``; minor 2 put ``seqlock`` where an ``unused`` was
  and ``sem_postinit`` where ``unused[4]`` was, so both minors have one layout.

These are the two HAMi's monitor reads (Project-HAMi/HAMi ``pkg/monitor/nvidia/cudevshr.go`` loadCache,
``v0/spec.go``, ``v1/spec.go``), chosen the same way: the magic flag 19920718 first, then a file
at least v0's size but smaller than v1's is v0, ``major_version == 1`` with v1's size is v1, anything else
is refused. The structs are declared with :mod:`ctypes`, which lays them out by the platform's C ABI
(padding, ``size_t``, ``sem_t`` as 32 bytes aligned 8 on 64-bit Linux); the tests compile a C writer
from the upstream declarations and read its files back, so the offsets are checked against a C compiler.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path
from typing import Any

import attrs

MAGIC = 19920718
MAX_DEVICES = 16
MAX_PROCS = 1024
UUID_BYTES = 96

u64, i32, u32 = ctypes.c_uint64, ctypes.c_int32, ctypes.c_uint32
_SEM = u64 * 4  # sem_t: 32 bytes, aligned like a long (x86_64 and aarch64 glibc)


class _MemoryV0(ctypes.Structure):
    _fields_ = [("context_size", u64), ("module_size", u64), ("data_size", u64), ("offset", u64), ("total", u64)]


class _UtilV0(ctypes.Structure):
    _fields_ = [("dec_util", u64), ("enc_util", u64), ("sm_util", u64)]


class _SlotV0(ctypes.Structure):
    _fields_ = [
        ("pid", i32),
        ("hostpid", i32),
        ("used", _MemoryV0 * MAX_DEVICES),
        ("monitorused", u64 * MAX_DEVICES),
        ("device_util", _UtilV0 * MAX_DEVICES),
        ("status", i32),
    ]


class RegionV0(ctypes.Structure):
    _fields_ = [
        ("initialized_flag", i32),
        ("sm_init_flag", i32),
        ("owner_pid", ctypes.c_size_t),
        ("sem", _SEM),
        ("num", u64),
        ("uuids", (ctypes.c_char * UUID_BYTES) * MAX_DEVICES),
        ("limit", u64 * MAX_DEVICES),
        ("sm_limit", u64 * MAX_DEVICES),
        ("procs", _SlotV0 * MAX_PROCS),
        ("proc_num", ctypes.c_int),
        ("utilization_switch", ctypes.c_int),
        ("recent_kernel", ctypes.c_int),
        ("priority", ctypes.c_int),
    ]


class _MemoryV1(ctypes.Structure):
    _fields_ = [*_MemoryV0._fields_, ("unused", u64 * 3)]


class _UtilV1(ctypes.Structure):
    _fields_ = [*_UtilV0._fields_, ("unused", u64 * 3)]


class _SlotV1(ctypes.Structure):
    _fields_ = [
        ("pid", i32),
        ("hostpid", i32),
        ("used", _MemoryV1 * MAX_DEVICES),
        ("monitorused", u64 * MAX_DEVICES),
        ("device_util", _UtilV1 * MAX_DEVICES),
        ("status", i32),
        ("seqlock", u64),
        ("unused", u64 * 2),
    ]


class RegionV1(ctypes.Structure):
    _fields_ = [
        ("initialized_flag", i32),
        ("major_version", u32),
        ("minor_version", u32),
        ("sm_init_flag", i32),
        ("owner_pid", ctypes.c_size_t),
        ("sem", _SEM),
        ("num", u64),
        ("uuids", (ctypes.c_char * UUID_BYTES) * MAX_DEVICES),
        ("limit", u64 * MAX_DEVICES),
        ("sm_limit", u64 * MAX_DEVICES),
        ("procs", _SlotV1 * MAX_PROCS),
        ("proc_num", ctypes.c_int),
        ("utilization_switch", ctypes.c_int),
        ("recent_kernel", ctypes.c_int),
        ("priority", ctypes.c_int),
        ("last_kernel_time", u64),
        ("sem_postinit", _SEM),
    ]


V0_SIZE = ctypes.sizeof(RegionV0)
V1_SIZE = ctypes.sizeof(RegionV1)
_HEADER = 12  # initialized_flag, major_version, minor_version


class RegionError(Exception):
    """A file that is not a readable shared region (truncated, foreign, unknown version): a skip."""


@attrs.frozen
class DeviceFigures:
    """One device of a region, summed over its live process slots as HAMi's monitor does."""

    index: int
    uuid: str
    limit: int
    sm_limit: int
    used: int
    context: int
    module: int
    buffer: int
    sm_util: int


class Region:
    """A mapped shared region, readable and (for priority feedback) writable in place."""

    def __init__(self, path: Path, raw: Any, struct: Any, version: str, closer: Any) -> None:
        self.path = path
        self._raw = raw
        self.s = struct
        self.version = version
        self._closer = closer
        stat = os.stat(path)
        self.identity = (stat.st_ino, stat.st_size)

    def close(self) -> None:
        self.s = None
        if self._closer is not None:
            try:
                self._closer()
            except BufferError:  # a ctypes view still alive: the mapping goes with the last reference
                pass
            self._closer = None

    # ------------------------------------------------------------ reading

    def devices(self) -> list[DeviceFigures]:
        """Every initialised device (a slot whose uuid is still empty is HAMi-core starting up)."""
        s = self.s
        count = min(int(s.num), MAX_DEVICES)
        procs = s.procs[: min(max(int(s.proc_num), 0), MAX_PROCS)]
        live = [p for p in procs if p.status != 0]
        out = []
        for i in range(count):
            raw = bytes(s.uuids[i])
            if not raw or raw[0] == 0:
                continue
            uuid = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            out.append(
                DeviceFigures(
                    index=i,
                    uuid=uuid,
                    limit=int(s.limit[i]),
                    sm_limit=int(s.sm_limit[i]),
                    used=sum(int(p.used[i].total) for p in live),
                    context=sum(int(p.used[i].context_size) for p in live),
                    module=sum(int(p.used[i].module_size) for p in live),
                    buffer=sum(int(p.used[i].data_size) for p in live),
                    sm_util=sum(int(p.device_util[i].sm_util) for p in live),
                )
            )
        return out

    @property
    def last_kernel_time(self) -> int:
        """Seconds since the epoch of the last kernel launch (v1; 0 = none, or v0 which has none)."""
        return int(self.s.last_kernel_time) if self.version == "v1" else 0

    @property
    def priority(self) -> int:
        return int(self.s.priority)

    @property
    def recent_kernel(self) -> int:
        return int(self.s.recent_kernel)

    @recent_kernel.setter
    def recent_kernel(self, value: int) -> None:
        self.s.recent_kernel = value

    @property
    def utilization_switch(self) -> int:
        return int(self.s.utilization_switch)

    @utilization_switch.setter
    def utilization_switch(self, value: int) -> None:
        self.s.utilization_switch = value

    def uuids(self) -> list[str]:
        """The uuid of every device slot (HAMi's feedback walks all 16, empty ones included)."""
        return [bytes(u).split(b"\0", 1)[0].decode("utf-8", "replace") for u in self.s.uuids]


def layout(size: int, major: int) -> tuple[str, type[ctypes.Structure]]:
    """Which layout a file of ``size`` bytes with ``major_version`` holds (cudevshr.go loadCache)."""
    if V0_SIZE <= size < V1_SIZE:
        return "v0", RegionV0
    if major == 1 and size >= V1_SIZE:
        return "v1", RegionV1
    raise RegionError(f"unknown layout: {size} bytes, major version {major} (HAMi reads v0 of {V0_SIZE} bytes and v1 of {V1_SIZE})")


def open_region(path: Path | str, *, writable: bool = True) -> Region:
    """Map ``path``; RegionError (with the reason) for a truncated, foreign or unknown file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size < _HEADER:
            raise RegionError(f"truncated: {size} bytes, not even a header")
        with path.open("rb") as f:
            flag, major = int.from_bytes(f.read(4), "little", signed=True), int.from_bytes(f.read(8)[:4], "little")
        if flag != MAGIC:
            raise RegionError(f"foreign file: flag {flag}, not HAMi-core's {MAGIC}")
        version, struct = layout(size, major)
        if writable and os.access(path, os.W_OK):
            fd = os.open(path, os.O_RDWR)
            try:
                mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                os.close(fd)
            return Region(path, mapped, struct.from_buffer(mapped), version, mapped.close)
        copy = bytearray(path.read_bytes()[: ctypes.sizeof(struct)])
        if len(copy) < ctypes.sizeof(struct):
            raise RegionError(f"truncated while reading: {len(copy)} bytes")
        return Region(path, copy, struct.from_buffer(copy), version, None)
    except OSError as exc:
        raise RegionError(f"unreadable: {type(exc).__name__}: {exc.strerror or exc}") from None
