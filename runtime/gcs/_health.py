"""The gcs's health checks of raylets.

Every ``period`` the gcs calls each live raylet's ``HealthCheck``; a call
that fails or takes longer than ``timeout`` is a miss, an answer resets the
count, and ``threshold`` misses in a row mark the node dead (Ray's defaults:
a 3 s period, 5 misses). This catches what a closed connection does not: a
hung raylet, a machine that froze, a network that dropped it. (A raylet that
exits is noticed at once, by its subscription stream ending.)

Checks of different nodes run concurrently; one node is checked by at most
one call at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._private import rpc
from .._private.tasks import TaskSet
from ..protocol.rt import Empty, NodeInfo, RayletStub

logger = logging.getLogger(__name__)


class HealthChecker:
    def __init__(
        self,
        *,
        channels: rpc.ChannelPool,
        nodes: Callable[[], list[NodeInfo]],
        mark_dead: Callable[[bytes, str], None],
        period: float,
        timeout: float,
        threshold: int,
    ) -> None:
        self._channels = channels
        self._nodes = nodes
        self._mark_dead = mark_dead
        self.period = period
        self.timeout = timeout
        self.threshold = max(1, threshold)
        self.misses: dict[bytes, int] = {}
        self._checking: set[bytes] = set()
        self._tasks = TaskSet()

    def start(self) -> None:
        self._tasks.spawn(self._run())

    async def close(self) -> None:
        await self._tasks.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            for node in self._nodes():
                if node.alive and node.node_id not in self._checking:
                    self._checking.add(node.node_id)
                    self._tasks.spawn(self._check(node))

    async def _check(self, node: NodeInfo) -> None:
        try:
            stub = RayletStub(self._channels.get(node.host, node.raylet_port))
            await asyncio.wait_for(stub.health_check(Empty()), self.timeout)
            self.misses.pop(node.node_id, None)
            return
        except rpc.CONNECTION_ERRORS as e:
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        finally:
            self._checking.discard(node.node_id)
        misses = self.misses.get(node.node_id, 0) + 1
        self.misses[node.node_id] = misses
        logger.warning(
            "node %s missed a health check (%d of %d): %s",
            node.node_id.hex()[:8],
            misses,
            self.threshold,
            error,
        )
        if misses >= self.threshold:
            self.misses.pop(node.node_id, None)
            self._mark_dead(node.node_id, f"it missed {misses} health checks in a row")
