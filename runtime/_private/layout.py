"""How a serialized value is laid out in bytes: in a store segment, or inline.

``[header][in-band pickle][buffer 0][buffer 1]...``: the header holds a magic,
the number of out-of-band buffers (pickle protocol 5) and the in-band
length, then an (offset, length) entry per buffer. Buffers start at 64-byte
boundaries, so arrays read in place are aligned.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from . import memcopy

MAGIC = b"RTO1"
HEADER = struct.Struct("<4sIQ")
ENTRY = struct.Struct("<QQ")
ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(inband_len: int, buffer_lens: Sequence[int]) -> tuple[int, list[int]]:
    """The total size, and each buffer's offset."""
    pos = HEADER.size + ENTRY.size * len(buffer_lens) + inband_len
    offsets = []
    for length in buffer_lens:
        pos = _align(pos)
        offsets.append(pos)
        pos += length
    return pos, offsets


def write(dest: memoryview, inband: bytes, buffers: Sequence[memoryview]) -> None:
    lens = [b.nbytes for b in buffers]
    _, offsets = plan(len(inband), lens)
    HEADER.pack_into(dest, 0, MAGIC, len(buffers), len(inband))
    pos = HEADER.size
    for offset, length in zip(offsets, lens, strict=True):
        ENTRY.pack_into(dest, pos, offset, length)
        pos += ENTRY.size
    dest[pos : pos + len(inband)] = inband
    for offset, length, buf in zip(offsets, lens, buffers, strict=True):
        memcopy.copy(dest[offset : offset + length], buf)


def encode(inband: bytes, buffers: Sequence[memoryview]) -> bytes:
    total, _ = plan(len(inband), [b.nbytes for b in buffers])
    out = bytearray(total)
    write(memoryview(out), inband, buffers)
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
