"""The gcs's health checker against a real gRPC raylet stand-in in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from runtime._private import rpc
from runtime.gcs._health import HealthChecker
from runtime.protocol.rt import Empty, NodeInfo, RayletBase

NODE = b"n" * 16


class Answering(RayletBase):
    """Answers health checks, or hangs until ``answering`` is set."""

    def __init__(self) -> None:
        self.answering = asyncio.Event()
        self.answering.set()
        self.checks = 0

    async def health_check(self, message: Empty) -> Empty:
        self.checks += 1
        await self.answering.wait()
        return Empty()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls ``predicate`` until it holds, or fails after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.timeout(30)
async def test_misses_in_a_row_mark_a_node_dead_and_an_answer_resets_them() -> None:
    raylet = Answering()
    sock = rpc.bind_socket("127.0.0.1", 0)
    server = await rpc.start_server_on([raylet], sock)
    node = NodeInfo(node_id=NODE, host="127.0.0.1", raylet_port=sock.getsockname()[1], alive=True)
    dead: list[str] = []

    def mark_dead(node_id: bytes, why: str) -> None:
        node.alive = False
        dead.append(why)

    channels = rpc.ChannelPool()
    checker = HealthChecker(
        channels=channels,
        nodes=lambda: [node],
        mark_dead=mark_dead,
        period=0.02,
        # Long enough that the test answers the third check in time even when the
        # machine is busy (it waits for the second miss, then lets the raylet answer).
        timeout=0.5,
        threshold=3,
    )
    checker.start()
    try:
        await until(lambda: raylet.checks >= 5)  # healthy: checked, never marked
        assert not dead and not checker.misses
        raylet.answering.clear()
        await until(lambda: checker.misses.get(NODE, 0) >= 2)  # two misses...
        raylet.answering.set()  # ...then an answer: the count starts over
        await until(lambda: not checker.misses.get(NODE, 0))
        assert not dead
        raylet.answering.clear()
        await until(lambda: bool(dead))
        assert dead == ["it missed 3 health checks in a row"]
    finally:
        raylet.answering.set()
        await checker.close()
        channels.close()
        await rpc.stop_server(server)
