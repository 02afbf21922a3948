"""The words for a worker's death: how its process ended, asked of its raylet.

A worker's stream breaks as its process ends; the raylet that started it
learns the exit code (or the killing signal) a moment later. A task that fails
(or is retried) because its worker died, and an actor whose worker died, wait
for that answer (at most ``EXIT_WAIT_S`` plus a second), so that the error
says "was killed by SIGKILL" rather than that a stream ended.
"""

from __future__ import annotations

import asyncio

from ..protocol.rt import RayletStub, WorkerExitRequest
from . import process, rpc

#: How long the raylet waits for the process to end (its stream may break
#: first); a worker still running after it is left undescribed.
EXIT_WAIT_S = 1.0


class WorkerEnded(ConnectionError):
    """A worker's stream broke because its process ended (the message says how)."""


async def how_it_ended(raylet: RayletStub, worker_id: bytes) -> tuple[int, str] | None:
    """The worker's pid and how its process ended ("exited with code 3"), or
    None if its raylet cannot tell."""
    request = WorkerExitRequest(worker_id=worker_id, wait_s=EXIT_WAIT_S)
    try:
        reply = await asyncio.wait_for(raylet.get_worker_exit(request), EXIT_WAIT_S + 1.0)
    except rpc.CONNECTION_ERRORS:  # (OSError among them, and so TimeoutError)
        return None
    if not reply.known:
        return None
    return reply.pid, process.describe_exit(reply.code if reply.has_code else None)


async def worker_ended(raylet: RayletStub, worker_id: bytes) -> WorkerEnded | None:
    """The worker's end as the error its tasks fail with, or None."""
    ended = await how_it_ended(raylet, worker_id)
    if ended is None:
        return None
    pid, how = ended
    return WorkerEnded(f"its process (pid={pid}) {how}")
