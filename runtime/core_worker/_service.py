"""The CoreWorker service: object requests answered, borrowers, cancellation.

Task pushes do not come here: they take the worker's task port
(``_task_server.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpclib.const

from .._private import stacks
from .._private.ids import OBJECT_ID_SIZE
from ..exceptions import ObjectLostError
from ..protocol.rt import (
    AddBorrowerRequest,
    AdoptObjectRequest,
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
    StacksReply,
    WaitForRefsRemovedReply,
    WaitForRefsRemovedRequest,
)
from ._adoption import adopt

if TYPE_CHECKING:
    from ._core_worker import CoreWorker


class CoreWorkerService(CoreWorkerBase):
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker

    async def add_borrower(self, message: AddBorrowerRequest) -> Empty:
        borrower = message.borrower
        if borrower is not None:
            address = (borrower.host, borrower.port, borrower.worker_id)
            self._worker.ownership.add_borrowers(list(message.object_ids), address)
        return Empty()

    async def adopt_object(self, message: AdoptObjectRequest) -> Empty:
        try:
            adopt(self._worker, message)
        except ValueError as e:
            raise grpclib.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(e)) from None
        return Empty()

    async def wait_for_refs_removed(
        self, message: WaitForRefsRemovedRequest
    ) -> WaitForRefsRemovedReply:
        if not 0 <= message.timeout <= 3600:
            raise grpclib.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, "timeout must be 0..3600 s"
            )
        removed = await self._worker.ownership.wait_refs_removed(
            list(message.object_ids), message.timeout
        )
        return WaitForRefsRemovedReply(removed=removed)

    async def ask_exit(self, message: Empty) -> ExitReply:
        reason = self._worker.exit_blocker()
        return ExitReply(accepted=not reason, reason=reason)

    async def get_reference_table(self, message: Empty) -> ReferenceTableReply:
        return self._worker.ownership.table()

    async def get_stacks(self, message: Empty) -> StacksReply:
        return await stacks.this_process()

    async def reconstruct(self, message: ReconstructRequest) -> ReconstructReply:
        if len(message.object_id) != OBJECT_ID_SIZE:
            raise grpclib.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, f"object_id must be {OBJECT_ID_SIZE} bytes"
            )
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
