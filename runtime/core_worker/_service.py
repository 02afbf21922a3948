"""The CoreWorker service: task pushes in, object requests answered.

``PushTasks`` is served on the raw grpclib stream rather than the generated
async-generator form: receiving tasks and sending replies run concurrently
on one stream, and replies that finish while a send is under way are
batched into the next message.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import TYPE_CHECKING

import grpclib.const
import grpclib.server

from .._private.ids import OBJECT_ID_SIZE
from .._private.push_stream import PUSH_ROUTE
from .._private.task_wire import WireReply, WireTask
from ..exceptions import ObjectLostError
from ..protocol.rt import (
    AddBorrowerRequest,
    CancelTaskRequest,
    CoreWorkerBase,
    Empty,
    ExitReply,
    GetObjectReply,
    GetObjectRequest,
    ObjectStatus,
    ReconstructReply,
    ReconstructRequest,
    ReferenceTableReply,
    TaskBatch,
    WaitForRefRemovedRequest,
)

if TYPE_CHECKING:
    from ._core_worker import CoreWorker


class CoreWorkerService(CoreWorkerBase):
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = super().__mapping__()
        mapping[PUSH_ROUTE] = grpclib.const.Handler(
            self._push_tasks,
            grpclib.const.Cardinality.STREAM_STREAM,
            TaskBatch,
            TaskBatch,
        )
        return mapping

    async def _push_tasks(self, stream: grpclib.server.Stream[TaskBatch, TaskBatch]) -> None:
        executor = self._worker.executor
        if executor is None:
            raise grpclib.GRPCError(grpclib.const.Status.FAILED_PRECONDITION, "not a worker")
        replies: list[WireReply] = []
        ready = asyncio.Event()

        def send(result: WireReply) -> None:
            replies.append(result)
            ready.set()

        def reply(result: WireReply) -> None:
            # Refs borrowed while running the task are registered with their
            # owners before the submitter hears that the task is done.
            self._worker.ownership.after_registrations(lambda: send(result))

        async def send_replies() -> None:
            nonlocal replies
            while True:
                await ready.wait()
                ready.clear()
                batch, replies = replies, []
                if batch:
                    await stream.send_message(TaskBatch(payload=pickle.dumps(batch, protocol=5)))

        sender = asyncio.ensure_future(send_replies())
        try:
            async for message in stream:
                tasks: list[WireTask] = pickle.loads(message.payload)
                for task in tasks:
                    executor.enqueue(task, reply)
            # The owner closed its side: it wants no more replies.
        finally:
            sender.cancel()

    async def add_borrower(self, message: AddBorrowerRequest) -> Empty:
        borrower = message.borrower
        if borrower is not None:
            address = (borrower.host, borrower.port, borrower.worker_id)
            for object_id in message.object_ids:
                self._worker.ownership.add_borrower(object_id, address)
        return Empty()

    async def wait_for_ref_removed(self, message: WaitForRefRemovedRequest) -> Empty:
        await self._worker.ownership.wait_ref_removed(message.object_id)
        return Empty()

    async def ask_exit(self, message: Empty) -> ExitReply:
        reason = self._worker.exit_blocker()
        return ExitReply(accepted=not reason, reason=reason)

    async def get_reference_table(self, message: Empty) -> ReferenceTableReply:
        return self._worker.ownership.table()

    async def reconstruct(self, message: ReconstructRequest) -> ReconstructReply:
        try:
            await self._worker.recovery.reconstruct(message.object_id)
        except ObjectLostError as e:
            return ReconstructReply(ok=False, error=e.reason or str(e))
        return ReconstructReply(ok=True)

    async def cancel_task(self, message: CancelTaskRequest) -> Empty:
        if len(message.object_id) != OBJECT_ID_SIZE:
            raise grpclib.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, f"object_id must be {OBJECT_ID_SIZE} bytes"
            )
        try:
            self._worker.tasks.cancel(message.object_id, message.force, message.recursive)
        except ValueError as e:
            raise grpclib.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(e)) from None
        return Empty()

    async def get_object(self, message: GetObjectRequest) -> GetObjectReply:
        obj = await self._worker.objects.serve_object(message.object_id, message.timeout)
        if obj is None:
            known = self._worker.objects.knows_object(message.object_id)
            status = ObjectStatus.TIMEOUT if known else ObjectStatus.FREED
            return GetObjectReply(status=status)
        return GetObjectReply(status=ObjectStatus.READY, metadata=obj.metadata, data=obj.data)
