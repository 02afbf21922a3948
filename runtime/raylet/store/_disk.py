"""The object store's files on disk: spill files and fallback allocations.

Every file is made without a name on disk (or unlinked at once), so nothing
of it outlives the store's process, however that process ends. These run on
the store's I/O thread.
"""

from __future__ import annotations

import os
from typing import Any

from ._store import SpillFile

#: Spill files are written in chunks of this size, and objects read back so.
IO_CHUNK = 8 << 20


def _open_unlinked(path: str) -> int:
    """A new file in ``path``'s folder with no name on disk: nothing of it can
    outlive this process (a SIGKILL included)."""
    folder = os.path.dirname(path)
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(folder, os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError:
            pass  # a file system without unnamed files: make one and unlink it
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(path)
    return fd


def reserved_file(path: str, size: int) -> int:
    """An unnamed file of ``size`` bytes whose blocks are reserved: writing
    into a mapping of it cannot fail for want of disk later (no SIGBUS)."""
    fd = _open_unlinked(path)
    try:
        os.posix_fallocate(fd, 0, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_spill_file(path: str, jobs: list[tuple[Any, Any, int]]) -> tuple[int, list[int]]:
    fd = _open_unlinked(path)
    offsets = []
    position = 0
    try:
        for _, mapping, size in jobs:
            offsets.append(position)
            view = memoryview(mapping)
            try:
                for start in range(0, size, IO_CHUNK):
                    chunk = view[start : min(size, start + IO_CHUNK)]
                    written = 0
                    while written < len(chunk):
                        written += os.pwrite(fd, chunk[written:], position + start + written)
            finally:
                view.release()
            position += size
    except BaseException:
        os.close(fd)
        raise
    return fd, offsets


def read_spilled(file: SpillFile, offset: int, size: int, mapping: Any) -> None:
    view = memoryview(mapping)
    try:
        done = 0
        while done < size:
            n = os.preadv(file.fd, [view[done : min(size, done + IO_CHUNK)]], offset + done)
            if not n:
                raise OSError(f"spill file {file.path} is truncated")
            done += n
    finally:
        view.release()
