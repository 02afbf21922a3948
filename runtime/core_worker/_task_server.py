"""A worker's task port: task pushes and actor calls in, replies out.

Each owner (and the gcs, for actor creations) holds one task channel
(``_private/task_channel.py``) to the worker. Items go to the executor as
they arrive; replies are queued on the channel as they are ready, so
replies finished in one loop iteration leave in one frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import rpc, serialization, task_channel, tls
from .._private.task_wire import WireReply

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger(__name__)


class TaskServer:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self._sock = rpc.bind_socket(worker.host)
        self.port: int = self._sock.getsockname()[1]
        self._servers: list[asyncio.AbstractServer] = []
        self._channels: set[task_channel.Channel] = set()

    async def start(self) -> None:
        local = task_channel.local_name(self._worker.worker_id)
        self._servers = await task_channel.serve(
            self._sock, self._accept, tls.server_context(), local
        )

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for channel in list(self._channels):
            channel.close()
        self._channels.clear()

    def _accept(self) -> tuple[task_channel.OnItems, task_channel.OnLost, Any]:
        worker = self._worker
        executor = worker.executor
        ownership = worker.ownership
        holder: list[task_channel.Channel] = []

        def bind(channel: task_channel.Channel) -> None:
            holder.append(channel)
            self._channels.add(channel)

        def reply(result: WireReply) -> None:
            # Refs borrowed while running the task are registered with their
            # owners before the submitter hears that the task is done.
            ownership.after_registrations(lambda: holder[0].send(result))

        def on_items(items: list[Any]) -> None:
            if executor is None:
                return
            for item in items:
                try:
                    executor.enqueue(item, reply)
                except Exception as e:  # a malformed item: say so, keep the channel
                    logger.error("a malformed task item: %r", e)
                    task_id = _task_id_of(item)
                    if task_id is not None:
                        error = exceptions.RaySystemError(f"malformed task: {e!r}")
                        reply(
                            (
                                task_id,
                                False,
                                [serialization.serialize_error(error)],
                                False,
                                [],
                                None,
                            )
                        )
            executor.end_batch()

        def on_lost(error: BaseException | None) -> None:
            if holder:
                self._channels.discard(holder[0])

        return on_items, on_lost, bind


def _task_id_of(item: Any) -> bytes | None:
    if type(item) is tuple and item and type(item[0]) is bytes:
        return item[0]
    return None
