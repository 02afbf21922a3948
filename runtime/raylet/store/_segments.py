"""Shared-memory segments: memfd files, created, reused and destroyed.

Copying into freshly created pages runs at a fraction of the speed of
copying into pages already faulted in (page faults dominate), so segments
freed by deleted objects are kept in a pool and reused for objects of about
the same size. Destroying a segment punches a hole through it, which gives
its memory back at once even while some client still has it mapped (no
reader does: a segment is only destroyed once nobody reads its object).
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import ctypes.util
import itertools
import mmap
import os
from dataclasses import dataclass, field

PAGE = mmap.PAGESIZE
#: A pooled segment serves a request of at least this fraction of its size.
REUSE_FILL = 0.8

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def round_up(size: int) -> int:
    return max(PAGE, (size + PAGE - 1) // PAGE * PAGE)


@dataclass(eq=False)
class Segment:
    segment_id: int
    fd: int
    size: int
    _map: mmap.mmap | None = field(default=None, repr=False)
    _read_only: int = -1  # a read-only descriptor of the same file, for readers

    def read_only_fd(self) -> int:
        """A descriptor readers get: a mapping of it can never be made writable."""
        if self._read_only < 0:
            self._read_only = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
        return self._read_only

    def mapping(self) -> mmap.mmap:
        """The store's own mapping (for spilling and restoring)."""
        if self._map is None:
            self._map = mmap.mmap(self.fd, self.size)
        return self._map


class SegmentPool:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        # Invariant: sorted by size.
        self._free: list[tuple[int, int, Segment]] = []
        self.pooled_bytes = 0

    def __len__(self) -> int:
        return len(self._free)

    def take(self, size: int) -> Segment | None:
        """A pooled segment that fits ``size`` without much waste, if any."""
        need = round_up(size)
        i = bisect.bisect_left(self._free, (need, 0))
        if i < len(self._free):
            seg_size, _, segment = self._free[i]
            if need >= seg_size * REUSE_FILL:
                del self._free[i]
                self.pooled_bytes -= seg_size
                return segment
        return None

    def new(self, size: int) -> Segment:
        fd = os.memfd_create("runtime-object", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, round_up(size))
        except OSError:
            os.close(fd)
            raise
        return Segment(next(self._ids), fd, round_up(size))

    def adopt(self, fd: int, size: int) -> Segment:
        """A segment of a file made elsewhere (a fallback allocation on disk)."""
        return Segment(next(self._ids), fd, round_up(size))

    def give_back(self, segment: Segment) -> None:
        bisect.insort(self._free, (segment.size, segment.segment_id, segment))
        self.pooled_bytes += segment.size

    def shrink(self, nbytes: int) -> list[Segment]:
        """Destroys pooled segments (largest first) until ``nbytes`` are freed."""
        destroyed = []
        while self._free and nbytes > 0:
            seg_size, _, segment = self._free.pop()
            self.pooled_bytes -= seg_size
            nbytes -= seg_size
            destroy(segment)
            destroyed.append(segment)
        return destroyed

    def close(self) -> None:
        self.shrink(self.pooled_bytes + 1)


def destroy(segment: Segment) -> None:
    # Punch first: the memory is free now, whoever still maps the file.
    _libc.fallocate(
        segment.fd,
        _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
        ctypes.c_long(0),
        ctypes.c_long(segment.size),
    )
    if segment._map is not None:
        with contextlib.suppress(BufferError):
            segment._map.close()
        segment._map = None
    with contextlib.suppress(OSError):
        os.close(segment.fd)
    if segment._read_only >= 0:
        with contextlib.suppress(OSError):
            os.close(segment._read_only)
        segment._read_only = -1
