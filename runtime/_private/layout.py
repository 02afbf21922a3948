"""How a serialized value is laid out in bytes: in a store segment, or inline.

``[header][in-band pickle][buffer 0][buffer 1]...``: the header holds a magic,
the number of out-of-band buffers (pickle protocol 5) and the in-band
length, then an (offset, length) entry per buffer. Buffers start at 64-byte
boundaries, so arrays read in place are aligned. A large buffer written into
a store segment (which starts on a page) also starts at the same place in its
page as its source does, rounded down to 64 bytes (see :func:`phases`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from . import memcopy

MAGIC = b"RTO1"
HEADER = struct.Struct("<4sIQ")
ENTRY = struct.Struct("<QQ")
ALIGN = 64
PAGE = 4096
#: Buffers from this size on are placed by their source's phase (smaller ones'
#: copies are too short for it to matter, and each could cost a page).
PHASED_MIN_BYTES = 1024 * 1024


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(
    inband_len: int, buffer_lens: Sequence[int], phases: Sequence[int] = ()
) -> tuple[int, list[int]]:
    """The total size, and each buffer's offset; ``phases`` (from :func:`phases`):
    where in its page each buffer should start (-1: anywhere aligned)."""
    pos = HEADER.size + ENTRY.size * len(buffer_lens) + inband_len
    offsets = []
    for i, length in enumerate(buffer_lens):
        pos = _align(pos)
        if phases and phases[i] >= 0:
            pos += (phases[i] - pos) % PAGE  # (both are multiples of ALIGN)
        offsets.append(pos)
        pos += length
    return pos, offsets


def phases(buffers: Sequence[memoryview]) -> list[int]:
    """Where in its page each large buffer starts, rounded down to ``ALIGN``.

    A copy whose destination starts a little ahead of its source within a page
    (its stores then alias its next loads, the 4K aliasing of x86 cores) runs
    five to six times slower than one whose destination starts at the same
    place or just behind: 8 against 45 GB/s for 800 MB on this project's
    machines. So a buffer in a segment starts where its source does.
    """
    return [
        memcopy.address(b) % PAGE // ALIGN * ALIGN
        if b.nbytes >= PHASED_MIN_BYTES and b.c_contiguous
        else -1
        for b in buffers
    ]


def write(
    dest: memoryview, inband: bytes, buffers: Sequence[memoryview], offsets: Sequence[int]
) -> None:
    """Writes the value at ``dest``, each buffer at its offset from :func:`plan`."""
    lens = [b.nbytes for b in buffers]
    HEADER.pack_into(dest, 0, MAGIC, len(buffers), len(inband))
    pos = HEADER.size
    for offset, length in zip(offsets, lens, strict=True):
        ENTRY.pack_into(dest, pos, offset, length)
        pos += ENTRY.size
    dest[pos : pos + len(inband)] = inband
    for offset, length, buf in zip(offsets, lens, buffers, strict=True):
        memcopy.copy(dest[offset : offset + length], buf)


def encode(inband: bytes, buffers: Sequence[memoryview]) -> bytes:
    total, offsets = plan(len(inband), [b.nbytes for b in buffers])
    out = bytearray(total)
    write(memoryview(out), inband, buffers, offsets)
    return bytes(out)


def read(view: memoryview) -> tuple[memoryview, list[memoryview]]:
    """The in-band pickle and the buffers, as views into ``view`` (no copy)."""
    magic, count, inband_len = HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError("not a serialized object (bad magic)")
    pos = HEADER.size
    buffers = []
    for _ in range(count):
        offset, length = ENTRY.unpack_from(view, pos)
        pos += ENTRY.size
        buffers.append(view[offset : offset + length])
    return view[pos : pos + inband_len], buffers
