"""Copying a large buffer with more than one core.

A put copies its value's buffers into shared memory. One thread's ``memcpy``
is bound by what one core can move (about 5-6 GB/s on a 2-core virtual
machine); two threads move about 1.4-1.6 times that. So a large buffer is cut
into chunks, each copied by ``ctypes.memmove``, which runs without the GIL:
the calling thread copies the last chunk, helper threads the others.

The addresses come from the buffer protocol itself (``PyObject_GetBuffer``),
which also keeps both buffers from moving or being freed until the copy ends.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

#: Buffers below this are copied by one thread (a hand-off costs more than it saves).
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
#: The least each thread copies.
CHUNK_MIN_BYTES = 4 * 1024 * 1024
#: At most this many threads copy one buffer (Ray's default is alike).
MAX_THREADS = 4

_PyBUF_SIMPLE = 0
_PyBUF_WRITABLE = 1


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _helpers() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS - 1, thread_name_prefix="runtime-memcopy")
        return _pool


def _forget_pool() -> None:
    """A forked child has none of its parent's threads: it makes its own pool."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def threads_for(nbytes: int) -> int:
    """How many threads copy a buffer of ``nbytes`` (1: the caller alone)."""
    if nbytes < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(MAX_THREADS, os.cpu_count() or 1, nbytes // CHUNK_MIN_BYTES))


def copy(dest: memoryview, src: memoryview) -> None:
    """``dest[:] = src`` for two C-contiguous byte buffers of one length."""
    n = src.nbytes
    if dest.nbytes != n:
        raise ValueError(f"copy of {n} bytes into a buffer of {dest.nbytes}")
    threads = threads_for(n)
    if threads == 1 or not (dest.c_contiguous and src.c_contiguous):
        dest[:] = src
        return
    d, s = _PyBuffer(), _PyBuffer()
    if _get_buffer(dest, ctypes.byref(d), _PyBUF_WRITABLE) != 0:
        raise BufferError("the destination is not a writable buffer")
    try:
        if _get_buffer(src, ctypes.byref(s), _PyBUF_SIMPLE) != 0:
            raise BufferError("the source is not a contiguous buffer")
        try:
            _copy_chunks(d.buf, s.buf, n, threads)
        finally:
            _release_buffer(ctypes.byref(s))
    finally:
        _release_buffer(ctypes.byref(d))


def address(buffer: memoryview) -> int:
    """Where ``buffer``'s bytes start in memory."""
    view = _PyBuffer()
    if _get_buffer(buffer, ctypes.byref(view), _PyBUF_SIMPLE) != 0:
        raise BufferError("not a contiguous buffer")
    try:
        return view.buf or 0
    finally:
        _release_buffer(ctypes.byref(view))


def _copy_chunks(dest: int, src: int, n: int, threads: int) -> None:
    step = -(-n // threads) // 4096 * 4096 or n  # whole pages per chunk
    starts = list(range(0, n, step))
    pool = _helpers()
    futures: list[Future[int]] = [
        pool.submit(ctypes.memmove, dest + a, src + a, min(step, n - a)) for a in starts[:-1]
    ]
    last = starts[-1]
    try:
        ctypes.memmove(dest + last, src + last, n - last)
    finally:
        wait(futures)  # every chunk is done before the caller releases the buffers
    for future in futures:
        future.result()
