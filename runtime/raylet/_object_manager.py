"""The object manager: moves objects between nodes' stores.

A core worker that needs an object held by another node asks its own raylet
(``PullObject``); the raylet pulls it from the holder's object manager port
into a *secondary* copy in its store, and answers once it is sealed.
Concurrent requests for one object share one pull.

The transfer is plain TCP, not gRPC: HTTP/2 would cut the object into 16 KiB
frames, each handled in Python. A request frame, a header frame, then the
object's bytes, sent in chunks straight from the holder's shared memory
(``sock_sendall`` of a view of the mapping) and received straight into the
puller's (``sock_recv_into``): no process ever holds a second copy of the
object, only the kernel's socket buffers in between.

The holder remembers which nodes pulled a copy, so that when the owner frees
the object the copies are freed with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import defaultdict

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._private import auth, rpc
from .._private.framing import LENGTH, FrameError, frame
from .._private.ids import OBJECT_ID_SIZE
from .._private.tasks import TaskSet
from ..protocol.rt import (
    ContainsObjectReply,
    ContainsObjectRequest,
    FreeObjectsRequest,
    ObjectSizesReply,
    ObjectSizesRequest,
    PullObjectReply,
    PullObjectRequest,
    RayletStub,
    TransferHeader,
    TransferRequest,
)
from ._cluster_view import ClusterView
from ._transfer_conn import Conn, accepted, connect
from .store import StoreError, StoreFullError, StoreServer

logger = logging.getLogger(__name__)

_MAX_HEADER = 4096
#: Most objects one size lookup may name.
MAX_SIZE_LOOKUP = 100_000


class ObjectManager:
    def __init__(
        self,
        *,
        store: StoreServer,
        node_id: bytes,
        view: ClusterView,
        chunk_size: int,
        channels: rpc.ChannelPool,
    ) -> None:
        self._store = store
        self._node_id = node_id
        self._view = view
        self._chunk = max(64 * 1024, chunk_size)
        self._channels = channels
        # Pulls under way: object id -> (the node it comes from, the transfer).
        self._pulls: dict[bytes, tuple[bytes, asyncio.Task[str]]] = {}
        # Objects held here -> the nodes that pulled a copy of them.
        self._copies: dict[bytes, set[bytes]] = defaultdict(set)
        self._tasks = TaskSet()
        self._sock: socket.socket | None = None
        self.port = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.num_pulls = 0  # transfers started (concurrent requests share one)
        store.on_delete = self.forward_deletes

    async def start(self, host: str) -> None:
        sock = rpc.bind_socket(host, 0)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._tasks.spawn(self._accept())

    async def close(self) -> None:
        await self._tasks.close()
        if self._sock is not None:
            self._sock.close()

    # -- serving copies -------------------------------------------------------------
    async def _accept(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(self._sock)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._tasks.spawn(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        conn: Conn | None = None
        try:
            conn = await accepted(sock)
            while True:
                payload = await _read_frame(conn)
                if payload is None:
                    return
                request = TransferRequest.parse(payload)
                if not auth.check_transfer(request.token):
                    refusal = TransferHeader(found=False, error=f"unauthenticated: {auth.HOW_TO}")
                    await conn.sendall(frame(bytes(refusal)))
                    logger.debug("refused an unauthenticated transfer request")
                    return
                await self._send_object(conn, request)
        except (OSError, FrameError, ValueError) as e:  # (ssl.SSLError is an OSError)
            logger.debug("transfer connection ended: %s", e)
        finally:
            if conn is not None:
                conn.close()
            else:
                sock.close()

    async def _send_object(self, conn: Conn, request: TransferRequest) -> None:
        object_id = request.object_id
        try:
            view = await self._store.pin_local(object_id)
        except StoreError as e:
            await conn.sendall(frame(bytes(TransferHeader(found=False, error=str(e)))))
            return
        if view is None:
            await conn.sendall(frame(bytes(TransferHeader(found=False))))
            return
        try:
            size = len(view)
            await conn.sendall(frame(bytes(TransferHeader(found=True, size=size))))
            for offset in range(0, size, self._chunk):
                await conn.sendall(view[offset : offset + self._chunk])
            self.bytes_sent += size
        finally:
            view.release()
            self._store.unpin_local(object_id)
        if request.node_id and request.node_id != self._node_id:
            self._copies[object_id].add(request.node_id)

    # -- pulling copies ---------------------------------------------------------------
    async def pull(self, object_id: bytes, node_id: bytes, owner: bytes) -> str:
        """Makes the object local; "" once it is, else why it cannot be.

        Raises StoreFullError when this node's store has no room for it.
        """
        if self._store.store.contains(object_id):
            return ""
        if node_id == self._node_id:
            return "it is not in this node's store"
        pulling = self._pulls.get(object_id)
        if pulling is None:
            self.num_pulls += 1
            task = self._tasks.spawn(self._pull(object_id, node_id, owner))
            self._pulls[object_id] = (node_id, task)
            task.add_done_callback(lambda _: self._pulls.pop(object_id, None))
        else:
            task = pulling[1]
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                return f"node {node_id.hex()[:12]}, which held it, died during the transfer"
            raise

    async def _pull(self, object_id: bytes, node_id: bytes, owner: bytes) -> str:
        node = self._view.nodes.get(node_id)
        if node is None:
            return f"node {node_id.hex()[:12]}, which held it, is not in the cluster"
        if not node.alive:
            return f"node {node_id.hex()[:12]}, which held it, died"
        conn: Conn | None = None
        try:
            conn = await connect(node.host, node.transfer_port)
            request = TransferRequest(
                object_id=object_id, node_id=self._node_id, token=auth.token().encode()
            )
            await conn.sendall(frame(bytes(request)))
            payload = await _read_frame(conn)
            if payload is None:
                return f"node {node_id.hex()[:12]} closed the transfer"
            header = TransferHeader.parse(payload)
            if not header.found:
                return header.error or f"it is not in node {node_id.hex()[:12]}'s store"
            await self._receive(conn, object_id, header.size, owner)
            return ""
        except StoreFullError:
            raise  # the puller's problem, not the object's: the caller says so
        except (OSError, FrameError, ValueError, StoreError) as e:
            return f"pulling it from node {node_id.hex()[:12]} failed: {e}"
        finally:
            if conn is not None:
                conn.close()

    async def _receive(self, conn: Conn, object_id: bytes, size: int, owner: bytes) -> None:
        dest = await self._store.create_local(object_id, size, owner)
        try:
            offset = 0
            while offset < size:
                chunk = dest[offset : min(size, offset + self._chunk)]
                got = await conn.recv_into(chunk)
                chunk.release()
                if not got:
                    raise ConnectionError(f"the sender closed after {offset} of {size} bytes")
                offset += got
        except BaseException:
            dest.release()
            self._store.abort_local(object_id)
            raise
        dest.release()
        self._store.seal_local(object_id)
        self.bytes_received += size

    # -- the raylet's object RPCs ----------------------------------------------------------
    async def pull_reply(self, message: PullObjectRequest) -> PullObjectReply:
        try:
            error = await self.pull(message.object_id, message.node_id, message.owner)
        except StoreFullError as e:
            return PullObjectReply(ok=False, error=str(e), store_full=True)
        return PullObjectReply(ok=not error, error=error)

    def free(self, message: FreeObjectsRequest) -> None:
        """An owner frees objects in ``node_id``'s store: here, or sent on there."""
        ids = list(message.object_ids)
        if message.node_id in (b"", self._node_id):
            self._store.delete(ids)
        else:
            self._tasks.spawn(self.send_free(message.node_id, ids))

    async def contains(self, message: ContainsObjectRequest) -> ContainsObjectReply:
        """Whether ``node_id``'s store has the object (asked of that node's raylet)."""
        if message.node_id in (b"", self._node_id):
            return ContainsObjectReply(found=self._store.store.contains(message.object_id))
        node = self._view.nodes.get(message.node_id)
        if node is None or not node.alive:
            return ContainsObjectReply(found=False)
        stub = RayletStub(self._channels.get(node.host, node.port))
        try:
            return await asyncio.wait_for(
                stub.contains_object(ContainsObjectRequest(object_id=message.object_id)), 10.0
            )
        except rpc.CONNECTION_ERRORS:
            return ContainsObjectReply(found=False)

    def sizes(self, message: ObjectSizesRequest) -> ObjectSizesReply:
        """The sizes of the named objects this node's store holds (-1: not here)."""
        ids = message.object_ids
        if len(ids) > MAX_SIZE_LOOKUP:
            raise GRPCError(
                Status.INVALID_ARGUMENT, f"at most {MAX_SIZE_LOOKUP} objects per lookup"
            )
        if any(len(object_id) != OBJECT_ID_SIZE for object_id in ids):
            raise GRPCError(Status.INVALID_ARGUMENT, f"object ids are {OBJECT_ID_SIZE} bytes long")
        store = self._store.store
        return ObjectSizesReply(
            sizes=[store.size_of(object_id) for object_id in ids],
            spilled=[store.was_spilled(object_id) for object_id in ids],
        )

    # -- freeing copies ----------------------------------------------------------------
    def forward_deletes(self, object_ids: list[bytes]) -> None:
        """The owner freed these here: free the copies other nodes pulled too."""
        by_node: dict[bytes, list[bytes]] = defaultdict(list)
        for object_id in object_ids:
            for node_id in self._copies.pop(object_id, ()):
                by_node[node_id].append(object_id)
        for node_id, ids in by_node.items():
            self._tasks.spawn(self.send_free(node_id, ids))

    async def send_free(self, node_id: bytes, object_ids: list[bytes]) -> None:
        node = self._view.nodes.get(node_id)
        if node is None or not node.alive:
            return
        stub = RayletStub(self._channels.get(node.host, node.port))
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await stub.free_objects(FreeObjectsRequest(object_ids=object_ids, node_id=node_id))

    def node_died(self, node_id: bytes) -> None:
        for holders in self._copies.values():
            holders.discard(node_id)
        # Pulls from it end now (a hung node would keep them waiting forever).
        for source, task in list(self._pulls.values()):
            if source == node_id:
                task.cancel()


async def _read_frame(conn: Conn) -> bytes | None:
    """One length-prefixed frame, read exactly (the object's bytes follow it)."""
    head = bytearray(LENGTH.size)
    if not await _recv_exactly(conn, memoryview(head), eof_ok=True):
        return None
    (length,) = LENGTH.unpack(head)
    if length > _MAX_HEADER:
        raise FrameError(f"transfer frame of {length} bytes")
    body = bytearray(length)
    await _recv_exactly(conn, memoryview(body), eof_ok=False)
    return bytes(body)


async def _recv_exactly(conn: Conn, view: memoryview, *, eof_ok: bool) -> bool:
    offset = 0
    while offset < len(view):
        got = await conn.recv_into(view[offset:])
        if not got:
            if eof_ok and offset == 0:
                return False
            raise ConnectionError("the peer closed the transfer connection")
        offset += got
    return True
