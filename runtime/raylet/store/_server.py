"""The object store server: the raylet's Unix socket, on the raylet's loop.

Each client connection is read with ``add_reader`` (no reader task per
connection); requests of one client are handled in order by one task, so a
create that waits for spilling holds back only that client. File
descriptors of segments go back as SCM_RIGHTS data with the reply. Spill
and restore I/O runs on a thread, never on the loop.

Bad input (a malformed frame or message, a file descriptor sent to us)
disconnects that client; a request the store refuses (unknown object, sealing
twice, a size that cannot fit) gets an error reply. Either way the store goes
on serving everyone else.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Callable

from ..._private import process
from ..._private.framing import FrameDecoder, FrameError, frame
from ..._private.tasks import TaskSet
from ...protocol.rt import (
    ObjectLocation,
    SegmentInfo,
    StoreOp,
    StoreReply,
    StoreRequest,
    StoreStats,
)
from ._access import same_user
from ._disk import read_spilled, reserved_file, write_spill_file
from ._segments import Segment, destroy, round_up
from ._store import ObjectState, ObjectStore, SpillFile, StoredObject, StoreError, StoreFullError

logger = logging.getLogger(__name__)


class StoreServer:
    def __init__(
        self, store: ObjectStore, path: str, spill_dir: str, frame_timeout_s: float = 10.0
    ) -> None:
        self.store = store
        self.path = path
        self.spill_dir = spill_dir
        self.frame_timeout_s = frame_timeout_s
        self._sock: socket.socket | None = None
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        # A process's connections share one store client record (by its token).
        self._records: dict[bytes, int] = {}
        self._record_connections: dict[int, int] = {}
        self._spill_ids = itertools.count(1)
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-io")
        self._restoring: dict[bytes, asyncio.Future[None]] = {}
        self._room = asyncio.Lock()  # one room-making pass at a time
        self._tasks = TaskSet()
        # The raylet's own client record (node-to-node transfers).
        self._internal = next(self._ids)
        self.store.connect(self._internal)
        #: Called with the ids an owner deleted (the raylet frees other nodes' copies).
        self.on_delete: Callable[[list[bytes]], None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        process.remove_at_exit(self.path)
        os.chmod(self.path, 0o600)  # only this user's processes may connect
        sock.listen(512)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for client in list(self._clients.values()):
            client.close()
        await self._tasks.close()
        self._io.shutdown(wait=True, cancel_futures=True)
        self.store.close()
        for file in list(self.store.spill_files):
            with contextlib.suppress(OSError):
                os.close(file.fd)
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def stats(self) -> StoreStats:
        s = self.store
        return StoreStats(
            capacity=s.capacity,
            used=s.used,
            pooled=s.pool.pooled_bytes,
            num_objects=len(s.objects),
            spilled_bytes=s.spilled_bytes,
            num_spilled=sum(1 for o in s.objects.values() if o.state is ObjectState.SPILLED),
            spill_files=len(s.spill_files),
            num_restored=s.num_restored,
            fallback_bytes=s.fallback_bytes,
            num_clients=len(self._clients),
        )

    # -- connections ------------------------------------------------------------
    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            if not same_user(conn):
                logger.warning("refused a store client of another user")
                conn.close()
                continue
            conn.setblocking(False)
            client = _Client(self, next(self._ids), conn)
            self._clients[client.client_id] = client

    def _hello(self, client: _Client, token: bytes) -> int:
        record = self._records.get(token)
        if record is None:
            record = self._records[token] = next(self._ids)
            self.store.connect(record)
        self._record_connections[record] = self._record_connections.get(record, 0) + 1
        return record

    def _disconnected(self, client: _Client) -> None:
        if self._clients.pop(client.client_id, None) is None or client.record is None:
            return
        record = client.record
        left = self._record_connections[record] - 1
        if left:
            self._record_connections[record] = left
            return
        del self._record_connections[record]
        for token, rid in list(self._records.items()):
            if rid == record:
                del self._records[token]
        self.store.disconnect(record)
        self._delete_dead_spill_files()

    # -- requests -------------------------------------------------------------------
    async def handle(self, client: _Client, request: StoreRequest) -> tuple[StoreReply, list[int]]:
        reply = StoreReply(seq=request.seq)
        fds: list[int] = []
        ids = list(request.object_ids)
        try:
            op = request.op
            if op is StoreOp.HELLO:
                if client.record is not None or len(ids) != 1:
                    raise StoreError("hello takes one token, once")
                client.record = self._hello(client, ids[0])
                client.token = ids[0]
                return reply, fds
            if client.record is None:
                raise StoreError("the first request must be hello")
            client_id = client.record
            if op is StoreOp.CREATE:
                if len(ids) != 1:
                    raise StoreError("create takes exactly one object id")
                existing = self.store.lookup(ids[0])
                if existing is not None:
                    # Made by an earlier attempt of its task, or pulled from another
                    # node: it stays, as this node's primary copy now.
                    existing.secondary = False
                    existing.owner = request.owner or existing.owner
                    reply.exists = True
                else:
                    obj = await self._create(client_id, ids[0], request.size, request.owner)
                    reply.objects = [self._locate(client_id, obj, fds, writable=True)]
            elif op is StoreOp.SEAL:
                for object_id in ids:
                    self.store.seal(client_id, object_id)
            elif op is StoreOp.ABORT:
                for object_id in ids:
                    self.store.abort(client_id, object_id)
            elif op is StoreOp.GET:
                reply.objects = [await self._get(client_id, oid, fds) for oid in ids]
            elif op is StoreOp.RELEASE:
                for object_id in ids:
                    self.store.release(client_id, object_id)
            elif op is StoreOp.DELETE:
                # Only an object's owner may delete it (the raylet frees copies itself).
                mine = [oid for oid in ids if self._owned_by(oid, client.token)]
                self.delete(mine)
                if len(mine) < len(ids):
                    raise StoreError("only an object's owner may delete it")
            elif op is StoreOp.STATS:
                reply.stats = self.stats()
            elif op is StoreOp.CONTAINS:
                reply.objects = [
                    ObjectLocation(object_id=oid, found=self.store.contains(oid)) for oid in ids
                ]
            elif op is StoreOp.MAP:
                for object_id in ids:
                    stored = self.store.objects.get(object_id)
                    segment = stored.segment if stored is not None else None
                    if stored is None or segment is None:
                        raise StoreError(f"object {object_id.hex()} is not in memory")
                    writable = self.store.clients[client_id].mapped.get(segment.segment_id, False)
                    self.store.hand_out(client_id, segment, writable)
                    fds.append(segment.fd if writable else segment.read_only_fd())
                    info = SegmentInfo(
                        segment_id=segment.segment_id,
                        size=segment.size,
                        has_fd=True,
                        writable=writable,
                    )
                    reply.objects.append(
                        ObjectLocation(
                            object_id=object_id, found=True, segment=info, size=stored.size
                        )
                    )
            else:
                raise StoreError(f"unknown operation {op!r}")
        except StoreFullError as e:
            reply.error = str(e)
            reply.store_full = True
        except StoreError as e:
            reply.error = str(e)
        if client.record is not None:
            reply.unmap = self.store.take_unmaps(client.record)
        return reply, fds

    def _locate(
        self, client_id: int, obj: StoredObject, fds: list[int], writable: bool = False
    ) -> ObjectLocation:
        """Where an object is, with an fd of its segment if the client needs one:
        writable for its creator, read-only for readers."""
        segment = obj.segment
        assert segment is not None
        has_fd = self.store.hand_out(client_id, segment, writable)
        if has_fd:
            fds.append(segment.fd if writable else segment.read_only_fd())
        info = SegmentInfo(
            segment_id=segment.segment_id, size=segment.size, has_fd=has_fd, writable=writable
        )
        return ObjectLocation(object_id=obj.object_id, found=True, segment=info, size=obj.size)

    def _owned_by(self, object_id: bytes, token: bytes) -> bool:
        obj = self.store.lookup(object_id)
        return obj is None or not obj.owner or obj.owner == token

    async def _create(
        self, client_id: int, object_id: bytes, size: int, owner: bytes
    ) -> StoredObject:
        if object_id in self.store.objects:
            raise StoreError(f"object {object_id.hex()} already exists")
        try:
            await self._make_room(size)
        except StoreFullError as full:
            segment = await self._fallback_segment(object_id, size, full)
            try:  # (another create of this id may have come first, meanwhile)
                return self.store.create(client_id, object_id, size, owner, segment)
            except StoreError:
                destroy(segment)
                raise
        return self.store.create(client_id, object_id, size, owner)

    async def _fallback_segment(self, object_id: bytes, size: int, full: StoreFullError) -> Segment:
        """Ray's fallback allocation: memory for an object no spilling can make
        room for, in a file on disk (its pages written back under pressure).
        Its blocks are reserved now, so that writing it later cannot fail."""
        path = os.path.join(self.spill_dir, f"fallback-{os.getpid()}-{object_id.hex()}")
        loop = asyncio.get_running_loop()
        try:
            fd = await loop.run_in_executor(self._io, reserved_file, path, round_up(size))
        except OSError as e:
            raise StoreFullError(f"{full}; and no room on disk for it either: {e}") from e
        logger.info("%s: %s (%d bytes) is kept on disk instead", full, object_id.hex(), size)
        return self.store.pool.adopt(fd, size)

    def delete(self, object_ids: list[bytes]) -> None:
        for object_id in object_ids:
            self.store.delete(object_id)
        self._delete_dead_spill_files()
        if self.on_delete is not None:
            self.on_delete(object_ids)

    # -- the raylet's own access (transfers between nodes) ----------------------------
    async def pin_local(self, object_id: bytes) -> memoryview | None:
        """The sealed object's bytes (restored if spilled), pinned until
        :meth:`unpin_local`; None if this store does not have it."""
        loc = await self._get(self._internal, object_id, [])
        if not loc.found:
            return None
        obj = self.store.objects[object_id]
        assert obj.segment is not None
        return memoryview(obj.segment.mapping())[: obj.size]

    def unpin_local(self, object_id: bytes) -> None:
        self.store.release(self._internal, object_id)
        self.store.take_unmaps(self._internal)  # the raylet maps segments itself

    async def create_local(self, object_id: bytes, size: int, owner: bytes) -> memoryview:
        """Allocates a secondary copy to write into; seal or abort it after."""
        obj = await self._create(self._internal, object_id, size, owner)
        obj.secondary = True
        assert obj.segment is not None
        return memoryview(obj.segment.mapping())[:size]

    def seal_local(self, object_id: bytes) -> None:
        self.store.seal(self._internal, object_id)

    def abort_local(self, object_id: bytes) -> None:
        with contextlib.suppress(StoreError):
            self.store.abort(self._internal, object_id)

    def owner_died(self, owner: bytes) -> None:
        self._deleted(self.store.owner_died(owner))

    def owners_died(self, dead: Callable[[bytes], bool]) -> None:
        self._deleted(self.store.owners_died(dead))

    def _deleted(self, object_ids: list[bytes]) -> None:
        if object_ids:
            self._delete_dead_spill_files()
            if self.on_delete is not None:
                self.on_delete(object_ids)

    async def _get(self, client_id: int, object_id: bytes, fds: list[int]) -> ObjectLocation:
        obj = self.store.lookup(object_id)
        # Again after a restore: a fallback copy read and released meanwhile by
        # another client is on disk only once more.
        while obj is not None and (
            obj.state is ObjectState.SPILLED or object_id in self._restoring
        ):
            await self._restore(obj)
            obj = self.store.lookup(object_id)
        if obj is None or obj.state is not ObjectState.SEALED:
            return ObjectLocation(object_id=object_id, found=False)
        self.store.pin(client_id, obj)
        return self._locate(client_id, obj, fds)

    # -- making room, spilling, restoring ---------------------------------------------
    async def _make_room(self, size: int) -> None:
        async with self._room:
            while True:
                missing = self.store.room_for(size)  # raises StoreFullError
                if missing <= 0:
                    return
                victims = self.store.spill_candidates(missing)
                if victims:
                    await self._spill(victims)

    async def _spill(self, victims: list[StoredObject]) -> None:
        """Writes objects into one new spill file (small ones fused together)."""
        path = os.path.join(self.spill_dir, f"spill-{os.getpid()}-{next(self._spill_ids)}")
        jobs = [(obj, obj.segment.mapping(), obj.size) for obj in victims if obj.segment]
        loop = asyncio.get_running_loop()
        try:
            fd, offsets = await loop.run_in_executor(self._io, write_spill_file, path, jobs)
        except OSError as e:
            logger.error("spilling %d objects to %s failed: %s", len(victims), path, e)
            for obj in victims:
                self.store.spill_failed(obj)
            raise StoreFullError(f"spilling to disk failed: {e}") from e
        file = SpillFile(path, fd)
        for obj, offset in zip(victims, offsets, strict=True):
            self.store.spilled(obj, file, offset)
        self._delete_dead_spill_files()
        total = sum(obj.size for obj in victims)
        logger.info("spilled %d objects (%d bytes) to %s", len(victims), total, path)

    async def _restore(self, obj: StoredObject) -> None:
        pending = self._restoring.get(obj.object_id)
        if pending is not None:
            await asyncio.shield(pending)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._restoring[obj.object_id] = fut
        try:
            try:
                await self._make_room(obj.size)
                fallback = False
            except StoreFullError:
                # Every byte is being read: read it into memory of its own,
                # given back when its readers are done (Ray's fallback).
                fallback = True
                logger.info(
                    "object store full of objects in use: restoring %s (%d bytes) outside it",
                    obj.object_id.hex(),
                    obj.size,
                )
            assert obj.spill is not None
            file, offset = obj.spill
            segment = self.store.begin_restore(obj, fallback)
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(
                    self._io, read_spilled, file, offset, obj.size, segment.mapping()
                )
            except OSError as e:
                self.store.restore_failed(obj)
                raise StoreError(f"restoring object {obj.object_id.hex()} failed: {e}") from e
            self.store.restored(obj)
        finally:
            del self._restoring[obj.object_id]
            fut.set_result(None)

    def _delete_dead_spill_files(self) -> None:
        for file in self.store.dead_spill_files():
            with contextlib.suppress(OSError):
                os.close(file.fd)


_OPS = frozenset(op for op in StoreOp if op is not StoreOp.UNSPECIFIED)
_MAX_ID = 64


def _parse(payload: bytes) -> StoreRequest:
    """A request, checked: the protobuf decoder accepts much that is no request."""
    request = StoreRequest.parse(payload)
    if not isinstance(request.op, StoreOp) or request.op not in _OPS:
        raise FrameError(f"not a store request (op {request.op!r})")
    if not isinstance(request.object_ids, list) or any(
        not isinstance(i, bytes) or not i or len(i) > _MAX_ID for i in request.object_ids
    ):
        raise FrameError("malformed object ids")
    if not isinstance(request.size, int) or request.size < 0:
        raise FrameError("malformed size")
    if not isinstance(request.owner, bytes) or len(request.owner) > _MAX_ID:
        raise FrameError("malformed owner")
    return request


class _Client:
    """One connection: reads frames as they come, answers requests in order."""

    def __init__(self, server: StoreServer, client_id: int, conn: socket.socket) -> None:
        self.server = server
        self.client_id = client_id
        self.conn = conn
        self.record: int | None = None  # the process's store client record, after hello
        self.token = b""  # what it said at hello: its worker id (an owner's, for deletes)
        self._decoder = FrameDecoder()
        self._stall: asyncio.TimerHandle | None = None  # armed while a frame is partial
        self._queue: asyncio.Queue[StoreRequest] = asyncio.Queue()
        self._closed = False
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), self._on_readable)
        self._worker = server._tasks.spawn(self._serve())

    def _on_readable(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.conn, 1 << 16, 8)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if fds:
            for fd in fds:
                os.close(fd)
            logger.warning(
                "store client %d sent file descriptors; disconnecting it", self.client_id
            )
            self.close()
            return
        if not data:
            self.close()
            return
        try:
            for payload in self._decoder.feed(data):
                self._queue.put_nowait(_parse(payload))
        except Exception as e:  # whatever the bytes were, only this client suffers
            logger.warning(
                "malformed input from store client %d (%s); disconnecting it", self.client_id, e
            )
            self.close()
            return
        # Part of a frame waits for the rest; a client that never sends it goes.
        if self._decoder.pending and self._stall is None:
            timeout = self.server.frame_timeout_s
            self._stall = asyncio.get_running_loop().call_later(timeout, self._stalled)
        elif not self._decoder.pending and self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        logger.warning(
            "store client %d left a frame unfinished for %gs; disconnecting it",
            self.client_id,
            self.server.frame_timeout_s,
        )
        self.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            request = await self._queue.get()
            reply, fds = await self.server.handle(self, request)
            if self._closed:
                return
            data = frame(bytes(reply))
            ancillary = (
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            )
            try:
                while True:
                    try:
                        # The descriptors ride with the first byte sent.
                        sent = self.conn.sendmsg([data], ancillary)
                        break
                    except BlockingIOError:
                        await self._writable(loop)
                if sent < len(data):
                    await loop.sock_sendall(self.conn, data[sent:])
            except OSError:
                self.close()
                return

    async def _writable(self, loop: asyncio.AbstractEventLoop) -> None:
        fut: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_writer(fd, ready)
        try:
            await fut
        finally:
            loop.remove_writer(fd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stall is not None:
            self._stall.cancel()
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
        self.conn.close()
        self._worker.cancel()
        self.server._disconnected(self)
