"""The gcs's actor table on its own (no processes): which dead actors it keeps,
and which actors a group's removal finds."""

from __future__ import annotations

import asyncio
import time

from runtime._private import rpc
from runtime.gcs._actors import ActorManager, ActorRecord
from runtime.gcs._storage import MemoryStorage
from runtime.protocol.rt import ActorInfo, ActorState, Address, NodeInfo


def _manager(storage: MemoryStorage, dead_kept: int = 10) -> ActorManager:
    async def save(actor_id: bytes, entry: bytes) -> None:
        await storage.put("actors", actor_id, entry)

    async def forget(actor_id: bytes) -> None:
        await storage.delete("actors", actor_id)

    return ActorManager(
        channels=rpc.ChannelPool(),
        nodes=list,
        job_running=lambda _job: True,
        save=save,
        forget=forget,
        dead_kept=dead_kept,
    )


def _alive(manager: ActorManager, index: int, group: bytes = b"") -> ActorRecord:
    info = ActorInfo(
        actor_id=bytes([index]) * 16,
        class_name="A",
        state=ActorState.ALIVE,
        placement_group_id=group,
    )
    record = ActorRecord(info, creation_task=b"task")
    manager.actors[info.actor_id] = record
    manager._join_group(record)
    return record


async def test_the_oldest_dead_actors_are_forgotten_here_and_in_the_storage() -> None:
    storage = MemoryStorage()
    manager = _manager(storage, dead_kept=2)
    records = [_alive(manager, i) for i in range(4)]
    for record in records:
        manager._set_dead(record, "gone")
        manager._set_dead(record, "said twice")  # counted once
        assert record.creation_task == b""  # it never runs again
    kept = [r.info.actor_id for r in records[2:]]
    assert list(manager.actors) == kept
    deadline = time.monotonic() + 5
    while sorted(await storage.load("actors")) != kept:  # the writes land in order
        assert time.monotonic() < deadline, await storage.load("actors")
        await asyncio.sleep(0)
    await manager.close()


async def test_a_groups_removal_finds_its_live_actors_only() -> None:
    manager = _manager(MemoryStorage())
    group, other = b"g" * 16, b"o" * 16
    inside = [_alive(manager, i, group) for i in range(3)]
    _alive(manager, 9, other)
    manager._set_dead(inside[0], "gone")
    assert manager._in_group == {
        group: {inside[1].info.actor_id, inside[2].info.actor_id},
        other: {bytes([9]) * 16},
    }
    await manager.close()


async def test_a_caller_that_lost_a_worker_hears_of_the_actor_on_another() -> None:
    """A caller waits for the incarnation after the one it lost: a restart
    counted, or the actor alive on another worker (a gcs that came back may
    have placed it again without counting one); never forever."""
    manager = _manager(MemoryStorage())
    record = _alive(manager, 1)
    actor_id = record.info.actor_id
    record.info.address = Address(worker_id=b"w" * 16)
    waiting = asyncio.ensure_future(manager.wait(actor_id, 1, lost_worker_id=b"w" * 16))
    await asyncio.sleep(0)
    assert not waiting.done()  # still the worker it lost
    record.info.address = Address(worker_id=b"x" * 16)
    manager._set_state(record, ActorState.ALIVE, persist=False)
    reply = await asyncio.wait_for(waiting, 5)
    assert reply.found and reply.actor.num_restarts == 0
    # Without a worker named, only a restart counted answers.
    waiting = asyncio.ensure_future(manager.wait(actor_id, 1))
    await asyncio.sleep(0)
    assert not waiting.done()
    record.info.num_restarts = 1
    manager._set_state(record, ActorState.ALIVE, persist=False)
    assert (await asyncio.wait_for(waiting, 5)).actor.num_restarts == 1
    await manager.close()


async def test_a_worker_whose_raylet_is_gone_died_with_its_node() -> None:
    """Its raylet cannot say how the worker ended (it died too): the cause waits
    to hear of the node's death, which comes a moment after the worker's."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = NodeInfo(node_id=b"n" * 16, alive=True)
    manager = ActorManager(channels=rpc.ChannelPool(), nodes=lambda: [node], job_running=bool)
    record = _alive(manager, 1)
    record.info.node_id = node.node_id
    record.worker_id = b"w" * 16
    record.lease = (("127.0.0.1", port), b"lease")
    how = asyncio.ensure_future(manager._how_it_ended(record))
    deadline = time.monotonic() + 5
    while not manager._node_fates:  # it asked the raylet, and waits for the node
        assert time.monotonic() < deadline and not how.done(), "it did not wait"
        await asyncio.sleep(0.01)
    node.alive = False
    manager.node_died(node.node_id)
    assert await asyncio.wait_for(how, 5) == f"died with its node {node.node_id.hex()[:12]}"
    assert not manager._node_fates
    await manager.close()
