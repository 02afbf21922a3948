"""Two nodes' object managers and stores in one process, over real sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from runtime._private import rpc
from runtime.protocol.rt import NodeInfo
from runtime.raylet._cluster_view import ClusterView
from runtime.raylet._object_manager import ObjectManager
from runtime.raylet.store import ObjectStore, StoreServer

A, B = b"a" * 16, b"b" * 16
CHUNK = 64 * 1024


class Node:
    def __init__(self, node_id: bytes, path: str, capacity: int = 64 << 20) -> None:
        self.node_id = node_id
        self.store = StoreServer(ObjectStore(capacity), os.path.join(path, "store"), path)
        self.view = ClusterView(node_id)
        self.channels = rpc.ChannelPool()
        self.manager = ObjectManager(
            store=self.store,
            node_id=node_id,
            view=self.view,
            chunk_size=CHUNK,
            channels=self.channels,
        )

    def info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            host="127.0.0.1",
            raylet_port=1,
            object_manager_port=self.manager.port,
            alive=True,
        )

    async def put(self, object_id: bytes, data: bytes) -> None:
        dest = await self.store.create_local(object_id, len(data), b"")
        dest[:] = data
        dest.release()
        self.store.seal_local(object_id)

    async def read(self, object_id: bytes) -> bytes | None:
        view = await self.store.pin_local(object_id)
        if view is None:
            return None
        try:
            return bytes(view)
        finally:
            view.release()
            self.store.unpin_local(object_id)


@pytest.fixture
async def nodes(tmp_path) -> AsyncIterator[tuple[Node, Node]]:
    a = Node(A, str(tmp_path / "a"))
    b = Node(B, str(tmp_path / "b"), capacity=8 << 20)
    for node in (a, b):
        os.makedirs(os.path.dirname(node.store.path), exist_ok=True)
        await node.store.start()
        await node.manager.start("127.0.0.1")
    for node in (a, b):
        node.view.update_node(a.info())
        node.view.update_node(b.info())
    try:
        yield a, b
    finally:
        for node in (a, b):
            await node.manager.close()
            await node.store.close()
            node.channels.close()


@pytest.mark.timeout(30)
async def test_pull_copies_an_object_in_chunks(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    data = os.urandom(10 * CHUNK + 12345)  # not a whole number of chunks
    object_id = os.urandom(16)
    await a.put(object_id, data)
    assert await b.manager.pull(object_id, A, b"") == ""
    assert await b.read(object_id) == data
    assert b.manager.bytes_received == len(data) == a.manager.bytes_sent
    # Once local, pulling again is free.
    assert await b.manager.pull(object_id, A, b"") == ""
    assert b.manager.num_pulls == 1


@pytest.mark.timeout(30)
async def test_concurrent_pulls_share_one_transfer(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    data = os.urandom(3 * CHUNK)
    object_id = os.urandom(16)
    await a.put(object_id, data)
    results = await asyncio.gather(*(b.manager.pull(object_id, A, b"") for _ in range(8)))
    assert results == [""] * 8
    assert b.manager.num_pulls == 1 and a.manager.bytes_sent == len(data)


@pytest.mark.timeout(30)
async def test_pull_failures_say_why(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    missing = await b.manager.pull(os.urandom(16), A, b"")
    assert "not in node" in missing
    unknown = await b.manager.pull(os.urandom(16), b"z" * 16, b"")
    assert "not in the cluster" in unknown
    dead = a.info()
    dead.alive = False
    b.view.update_node(dead)
    assert "died" in await b.manager.pull(os.urandom(16), A, b"")
    # A failed pull leaves nothing half-made behind.
    assert b.store.store.objects == {}


@pytest.mark.timeout(30)
async def test_a_transfer_cut_short_aborts_the_copy(nodes: tuple[Node, Node]) -> None:
    from runtime._private.framing import frame
    from runtime.protocol.rt import TransferHeader

    _, b = nodes
    promised = 5 * CHUNK

    async def half_then_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)  # the request
        writer.write(frame(bytes(TransferHeader(found=True, size=promised))))
        writer.write(b"x" * (promised // 2))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(half_then_hang_up, "127.0.0.1", 0)
    liar = NodeInfo(
        node_id=b"l" * 16,
        host="127.0.0.1",
        raylet_port=1,
        object_manager_port=server.sockets[0].getsockname()[1],
        alive=True,
    )
    b.view.update_node(liar)
    object_id = os.urandom(16)
    try:
        error = await b.manager.pull(object_id, liar.node_id, b"")
    finally:
        server.close()
        await server.wait_closed()
    assert "failed" in error and "closed" in error
    assert object_id not in b.store.store.objects
    assert b.store.store.used == 0


@pytest.mark.timeout(30)
async def test_no_room_here_is_disk_or_store_full_never_a_lost_object(
    nodes: tuple[Node, Node],
) -> None:
    from runtime.raylet.store._store import StoreFullError

    a, b = nodes
    data = os.urandom(16 << 20)  # twice the puller's whole store
    kept, refused = os.urandom(16), os.urandom(16)
    await a.put(kept, data)
    await a.put(refused, data)
    # Kept on disk, outside the store (Ray's fallback allocation).
    assert await b.manager.pull(kept, A, b"") == ""
    assert await b.read(kept) == data
    assert b.store.store.fallback_bytes >= len(data) and b.store.store.used == 0
    # With no disk for it either, the pull says the store is full (the
    # caller's ObjectStoreFullError), not that the object is lost.
    b.store.spill_dir = os.path.join(b.store.spill_dir, "gone")
    with pytest.raises(StoreFullError, match="no room on disk"):
        await b.manager.pull(refused, A, b"")
    assert refused not in b.store.store.objects
