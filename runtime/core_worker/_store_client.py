"""The core worker's client of its node's object store.

Each thread that touches the store has its own connection (a blocking Unix
socket), so no lock is needed; all connections of a process introduce
themselves with one token, and the store treats them as one client: the
segments mapped and the objects being read are the process's.

Segments are mapped once per process and the mappings cached: two gets of an
object return views of the same memory (zero copy), and putting into a
reused segment that is already mapped copies at memory speed. A get pins the
object at the store while anything built from its buffers lives: each get
wraps the object's bytes in a fresh ctypes array over the cached mapping;
every buffer handed to the unpickler derives from that array, so its
finalizer runs exactly when the last of them is garbage-collected, and the
object is released then (released ids are queued and sent by the loop, as a
finalizer may run in the middle of any other call).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .. import exceptions
from .._private import layout, serialization
from .._private.framing import FrameDecoder, frame
from ..protocol.rt import ObjectLocation, StoreOp, StoreReply, StoreRequest, StoreStats

_MAX_FDS = 64


class LostInStore(exceptions.ObjectLostError):
    """The store does not have the object: the owner may rebuild it, or explain."""


class _Connection:
    def __init__(self, path: str, token: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._decoder = FrameDecoder()
        self._seq = 0
        self.call(StoreRequest(op=StoreOp.HELLO, object_ids=[token]))

    def call(self, request: StoreRequest) -> tuple[StoreReply, list[int]]:
        self._seq += 1
        request.seq = self._seq
        self.sock.sendall(frame(bytes(request)))
        fds: list[int] = []
        while True:
            data, received, _, _ = socket.recv_fds(self.sock, 1 << 16, _MAX_FDS)
            fds.extend(received)
            if not data:
                for fd in fds:
                    os.close(fd)
                raise ConnectionError("the object store closed the connection")
            frames = self._decoder.feed(data)
            if frames:
                return StoreReply.parse(frames[0]), fds

    def close(self) -> None:
        self.sock.close()


class _Local(threading.local):
    conn: _Connection | None = None


class StoreClient:
    def __init__(
        self,
        path: str,
        token: bytes,
        on_release_pending: Callable[[], None],
        on_lost: Callable[[OSError], BaseException] = lambda e: e,
    ) -> None:
        self.path = path
        # The store (its raylet) is gone: the error to raise instead of a bare OSError.
        self._on_lost = on_lost
        self._token = token
        self._local = _Local()
        self._connections: list[_Connection] = []
        # segment id -> mapping; shared by this process's threads (dict ops are atomic).
        self._mappings: dict[int, mmap.mmap] = {}
        self._releases: deque[bytes] = deque()
        self._on_release_pending = on_release_pending
        self._closed = False

    # -- plumbing ---------------------------------------------------------------
    def _conn(self) -> _Connection:
        conn = self._local.conn
        if conn is None:
            if self._closed:
                raise exceptions.RaySystemError("the object store client is closed")
            conn = self._local.conn = _Connection(self.path, self._token)
            self._connections.append(conn)
        return conn

    def _call(
        self, op: StoreOp, ids: Sequence[bytes], size: int = 0, owner: bytes = b""
    ) -> tuple[StoreReply, list[int]]:
        request = StoreRequest(op=op, object_ids=list(ids), size=size, owner=owner)
        try:
            reply, fds = self._conn().call(request)
        except OSError as e:
            if self._closed:
                raise exceptions.RaySystemError("the object store client is closed") from e
            raise self._on_lost(e) from e
        for segment_id in reply.unmap:
            self._mappings.pop(segment_id, None)
        if reply.error:
            for fd in fds:
                os.close(fd)
            if reply.store_full:
                raise exceptions.ObjectStoreFullError(reply.error)
            raise exceptions.RaySystemError(f"object store: {reply.error}")
        return reply, fds

    def _mapping(self, loc: ObjectLocation, fds: list[int], populate: bool = False) -> mmap.mmap:
        """The cached mapping of a located object's segment (mapping it if new).

        ``populate`` (for writing) faults the whole segment in with one call,
        several times faster than page by page; a reader maps lazily, so a get
        costs the same whatever the object's size.
        """
        segment = loc.segment
        assert segment is not None
        if segment.has_fd:
            fd = fds.pop(0)
            try:
                cached = self._mappings.get(segment.segment_id)
                if cached is None or segment.writable:
                    # A writable fd replaces a reader's mapping (the segment was
                    # reused for an object this process creates). Readers get
                    # read-only fds, which cannot be mapped shared for writing:
                    # they map them copy-on-write, so nothing they do reaches
                    # the object, and they see what its writer puts there.
                    if segment.writable:
                        flags = mmap.MAP_SHARED | (mmap.MAP_POPULATE if populate else 0)
                    else:
                        flags = mmap.MAP_PRIVATE
                    prot = mmap.PROT_READ | mmap.PROT_WRITE
                    cached = mmap.mmap(fd, segment.size, flags=flags, prot=prot)
                    self._mappings[segment.segment_id] = cached
                return cached
            finally:
                os.close(fd)
        cached = self._mappings.get(segment.segment_id)
        if cached is None:
            # Another thread of ours got the descriptor and has not cached it yet.
            reply, more = self._call(StoreOp.MAP, [loc.object_id])
            return self._mapping(reply.objects[0], more)
        return cached

    def close(self) -> None:
        self._closed = True
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        self._mappings.clear()

    # -- operations -----------------------------------------------------------------
    def put(
        self, object_id: bytes, inband: bytes, buffers: Sequence[memoryview], owner: bytes
    ) -> None:
        """Creates, writes and seals an object: one copy, into shared memory."""
        lens = [b.nbytes for b in buffers]
        size, offsets = layout.plan(len(inband), lens, layout.phases(buffers))
        if self._releases:
            self.flush_releases()  # values freed just now make room for this one
        reply, fds = self._call(StoreOp.CREATE, [object_id], size, owner)
        if reply.exists:
            return  # an earlier attempt of the task stored it (any attempt's value will do)
        try:
            mapping = self._mapping(reply.objects[0], fds, populate=True)
            view = memoryview(mapping)
            try:
                layout.write(view[:size], inband, buffers, offsets)
            finally:
                view.release()
        except BaseException:
            self._call(StoreOp.ABORT, [object_id])
            raise
        self._call(StoreOp.SEAL, [object_id])

    def get_value(self, object_id: bytes) -> Any:
        """The object's value; its arrays are read-only views of shared memory."""
        if self._releases:
            self.flush_releases()  # values freed just now give their memory back first
        reply, fds = self._call(StoreOp.GET, [object_id])
        loc = reply.objects[0]
        if not loc.found:
            raise LostInStore(object_id.hex(), "it is not in this node's object store")
        try:
            mapping = self._mapping(loc, fds)
        except BaseException:
            self.release_later(object_id)
            raise
        anchor = (ctypes.c_char * loc.size).from_buffer(mapping, 0)
        weakref.finalize(anchor, self.release_later, object_id)
        root = memoryview(anchor).cast("B").toreadonly()
        del anchor  # from here on, only views derived from it keep it alive
        inband, buffers = layout.read(root)
        return serialization.loads(inband, buffers)

    def release_later(self, object_id: bytes) -> None:
        """Queues a release; runs in finalizers, on any thread, at any time."""
        self._releases.append(object_id)
        self._on_release_pending()

    def flush_releases(self) -> None:
        """Sends the queued releases (from the loop, or from a thread about to
        get or put: any thread may drain the queue, each id goes once)."""
        releases = self._releases
        ids = []
        while True:
            try:
                ids.append(releases.popleft())
            except IndexError:
                break
        if ids and not self._closed:
            self._call(StoreOp.RELEASE, ids)

    def delete(self, object_ids: Sequence[bytes]) -> None:
        if object_ids and not self._closed:
            self._call(StoreOp.DELETE, object_ids)

    def contains(self, object_id: bytes) -> bool:
        reply, _ = self._call(StoreOp.CONTAINS, [object_id])
        return bool(reply.objects and reply.objects[0].found)

    def stats(self) -> StoreStats:
        reply, _ = self._call(StoreOp.STATS, [])
        assert reply.stats is not None
        return reply.stats
