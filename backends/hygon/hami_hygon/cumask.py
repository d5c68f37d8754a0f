"""Compute-unit masks for virtual DCUs: ``dcucores`` percent → a CU count → bits no one else holds.

A DCU's compute units are bits of a mask; each vDCU gets a set of bits, written into its vdev
config as two 64-bit words (``cu_mask`` twice: CUs 0–63, then 64–127). HAMi's Go allocator can hand
out overlapping bits when a nibble is partly used; here a mask is always chosen among the free bits
only, so two containers on one DCU never share a compute unit.
"""

from __future__ import annotations

from collections.abc import Iterable

from hami.sdk import BackendError

WORD_BITS = 64
MAX_UNITS = 2 * WORD_BITS
"""Two ``cu_mask`` words: the most compute units one vdev config can describe."""


def units_for(cores_percent: int, total_units: int) -> int:
    """CUs for a ``dcucores`` percentage: rounded down like HAMi's plugin, but at least one."""
    if not 0 <= cores_percent <= 100:
        raise BackendError(f"dcucores={cores_percent} must be a percentage from 0 to 100")
    if not 1 <= total_units <= MAX_UNITS:
        raise BackendError(f"compute units={total_units} must be from 1 to {MAX_UNITS}")
    return max(1, cores_percent * total_units // 100)


def used_mask(masks: Iterable[int]) -> int:
    used = 0
    for mask in masks:
        used |= mask
    return used


def allocate(used: int, total_units: int, count: int) -> int:
    """A mask of ``count`` free CUs (lowest first) among ``total_units``; BackendError when too few are free."""
    if count < 1:
        raise BackendError(f"a vDCU needs at least one compute unit, asked for {count}")
    free = [bit for bit in range(total_units) if not used >> bit & 1]
    if len(free) < count:
        raise BackendError(f"only {len(free)} of {total_units} compute units are free, {count} needed")
    mask = 0
    for bit in free[:count]:
        mask |= 1 << bit
    return mask


def to_words(mask: int) -> tuple[str, str]:
    """The two ``cu_mask`` values as the vdev config writes them (``0x`` + 16 hex digits each)."""
    low = mask & ((1 << WORD_BITS) - 1)
    high = mask >> WORD_BITS
    return f"0x{low:016x}", f"0x{high:016x}"


def from_words(words: Iterable[str]) -> int:
    mask = 0
    for position, word in enumerate(words):
        mask |= int(word, 16) << (WORD_BITS * position)
    return mask
