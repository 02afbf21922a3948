"""The distributed half of reference counting: borrowers, containment, pins.

The rules that keep an object alive exactly while someone can use it:

1. **Borrowers register.** A process that gets a ref to an object owned
   elsewhere (by unpickling it) registers with the owner (``AddBorrower``).
   The owner then asks it to say when it lets go (``WaitForRefsRemoved``, a
   long poll over all the objects it borrows from us, answered with those
   whose count reached zero, or failing when the borrower dies). At most
   ``POLLS_PER_BORROWER`` polls per borrower are in flight, whatever the
   number of objects: a borrower of 10,000 refs costs one call, not 10,000
   concurrent streams.
2. **Senders hold until receivers registered.** A ref sent to another
   process stays held by the sender until the receiver has registered:
   - refs nested in task arguments: the submitter holds them until the reply,
     and a worker sends a reply only once its registrations are done;
   - refs nested in a task's result: the executing worker pins them until the
     result's owner has taken them over (``ReleasePins`` on the task stream).
3. **Containers hold what they contain.** A stored value (a put, a task
   result) that contains refs keeps them alive while it lives: its owner
   holds those refs until it frees the value.

All state here lives on the core worker's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._private import rpc
from .._private.serialization import METADATA_IN_STORE
from .._private.tasks import TaskSet
from ..protocol.rt import (
    AddBorrowerRequest,
    Address,
    CoreWorkerStub,
    ReferenceRow,
    ReferenceTableReply,
    WaitForRefsRemovedRequest,
)
from ._memory_store import discard_from
from ._reference import NO_OWNER, OwnerAddress, Reference

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger(__name__)

#: Long polls in flight per borrower: one may hold refs kept for long while
#: another carries refs that came since (so they are not held up behind it).
POLLS_PER_BORROWER = 2
#: How long a borrower holds a poll that nothing answers, seconds.
POLL_S = 10.0


class Ownership:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self._tasks = TaskSet()
        # Borrower side: registrations under way, and owners waiting for us to let go.
        self._registrations: set[asyncio.Future[None]] = set()
        self._to_register: dict[OwnerAddress, list[bytes]] = {}
        self._removal_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        # Owner side: per borrower, the borrowed objects no poll carries yet,
        # and the polls in flight (at most POLLS_PER_BORROWER).
        self._unpolled: dict[OwnerAddress, set[bytes]] = {}
        self._polls: dict[OwnerAddress, int] = {}
        # Owner side: refs held by the values that contain them.
        self.contained: dict[bytes, list[Reference]] = {}
        # Executing side: refs in results, held until the result's owner has them.
        self._pins: dict[bytes, list[Reference]] = {}

    async def close(self) -> None:
        for waiters in self._removal_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        await self._tasks.close()

    # -- borrower side ------------------------------------------------------------
    def borrowed(self, object_id: bytes, owner: OwnerAddress) -> None:
        """This process holds a ref to ``owner``'s object for the first time.

        Registrations are batched: one ``AddBorrower`` per owner per loop
        iteration (unpickling a list of 10,000 refs sends one message).
        """
        if owner == NO_OWNER:
            return  # (nobody to tell)
        batch = self._to_register.get(owner)
        if batch is None:
            batch = self._to_register[owner] = []
            if len(self._to_register) == 1:
                asyncio.get_running_loop().call_soon(self._flush_registrations)
        batch.append(object_id)

    def _flush_registrations(self) -> None:
        batches, self._to_register = self._to_register, {}
        for owner, object_ids in batches.items():
            task = self._tasks.spawn(self._register(object_ids, owner))
            self._registrations.add(task)
            task.add_done_callback(self._registrations.discard)

    async def _register(self, object_ids: list[bytes], owner: OwnerAddress) -> None:
        worker = self._worker
        host, port, _ = owner
        me = Address(host=worker.host, port=worker.port, worker_id=worker.worker_id)
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            # An unreachable owner is a dead one: its objects are lost anyway.
            await CoreWorkerStub(worker.channels.get(host, port)).add_borrower(
                AddBorrowerRequest(object_ids=object_ids, borrower=me)
            )

    def after_registrations(self, callback: Callable[[], None]) -> None:
        """Runs ``callback`` once every registration started so far is done."""
        if self._to_register:
            self._flush_registrations()
        pending = [f for f in self._registrations if not f.done()]
        if not pending:
            callback()
            return

        async def wait() -> None:
            await asyncio.gather(*pending, return_exceptions=True)
            callback()

        self._tasks.spawn(wait())

    def borrow_ended(self, object_id: bytes) -> None:
        for fut in self._removal_waiters.pop(object_id, ()):
            if not fut.done():
                fut.set_result(None)

    async def wait_refs_removed(self, object_ids: list[bytes], timeout: float) -> list[bytes]:
        """Serves an owner's long poll: the objects we hold no ref to, once there
        is one (at once if there is one now), or none after ``timeout``."""
        refs = self._worker.refs
        gone = [o for o in object_ids if o not in refs]
        if gone or not object_ids:
            return gone
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._removal_waiters
        for object_id in object_ids:
            waiters.setdefault(object_id, []).append(fut)
        timer = loop.call_later(max(0.0, timeout), _settle, fut)
        try:
            await fut
        finally:
            timer.cancel()
            for object_id in object_ids:
                discard_from(waiters, object_id, fut)
        return [o for o in object_ids if o not in refs]

    # -- owner side -------------------------------------------------------------------
    def add_borrowers(self, object_ids: list[bytes], borrower: OwnerAddress) -> None:
        refs = self._worker.refs
        added = []
        for object_id in object_ids:
            if object_id not in refs:
                logger.warning(
                    "a borrower registered for %s, which is already freed", object_id.hex()
                )
            elif refs.add_borrower(object_id, borrower):
                added.append(object_id)
        if added:
            self._unpolled.setdefault(borrower, set()).update(added)
            self._maybe_poll(borrower)

    def _maybe_poll(self, borrower: OwnerAddress) -> None:
        in_flight = self._polls.get(borrower, 0)
        if in_flight >= POLLS_PER_BORROWER or not self._unpolled.get(borrower):
            return
        object_ids = self._unpolled.pop(borrower)
        self._polls[borrower] = in_flight + 1
        self._tasks.spawn(self._poll(borrower, object_ids))

    async def _poll(self, borrower: OwnerAddress, object_ids: set[bytes]) -> None:
        host, port, _ = borrower
        worker = self._worker
        request = WaitForRefsRemovedRequest(object_ids=list(object_ids), timeout=POLL_S)
        try:
            reply = await CoreWorkerStub(worker.channels.get(host, port)).wait_for_refs_removed(
                request, timeout=POLL_S + 30.0
            )
            removed = [o for o in reply.removed if o in object_ids]
        except rpc.CONNECTION_ERRORS:  # a deadline passed too (TimeoutError is an OSError)
            removed = list(object_ids)  # it died (or is unreachable): it lets go of all
        finally:
            self._polls[borrower] -= 1
        freed = []
        for object_id in removed:
            object_ids.discard(object_id)
            if worker.refs.remove_borrower(object_id, borrower) is not None:
                freed.append(object_id)
        if freed:
            worker.objects.free_owned(freed)
        # What it still holds is asked about again, with what came meanwhile.
        if object_ids:
            self._unpolled.setdefault(borrower, set()).update(object_ids)
        if not self._polls[borrower] and not self._unpolled.get(borrower):
            del self._polls[borrower]
            self._unpolled.pop(borrower, None)
        self._maybe_poll(borrower)

    def contain(self, outer_id: bytes, refs: list[Reference]) -> None:
        if refs:
            self.contained[outer_id] = refs

    def release_contained(self, outer_id: bytes) -> None:
        if self.contained:
            self.contained.pop(outer_id, None)

    # -- executing side -----------------------------------------------------------------
    def pin(self, task_id: bytes, refs: list[Reference]) -> None:
        if refs:
            self._pins.setdefault(task_id, []).extend(refs)

    def unpin(self, task_id: bytes) -> None:
        self._pins.pop(task_id, None)

    def table(self) -> ReferenceTableReply:
        """This process's references, for `runtime memory`."""
        worker = self._worker
        nested: dict[bytes, int] = {}
        for held in self.contained.values():
            for inner in held:
                nested[inner.binary()] = nested.get(inner.binary(), 0) + 1
        rows = []
        for object_id, entry in worker.refs.items():
            obj = worker.store.get_nowait(object_id)
            in_store = obj is not None and obj.metadata == METADATA_IN_STORE
            rows.append(
                ReferenceRow(
                    object_id=object_id,
                    local=entry.local,
                    submitted=entry.submitted,
                    borrowers=len(entry.borrowers),
                    contained=nested.get(object_id, 0),
                    owned=entry.owned,
                    in_store=in_store,
                    size=len(obj.data) if obj is not None and not in_store else -1,
                    call_site=worker.objects.call_sites.get(object_id, ""),
                    reconstructable=worker.lineage.entry_for(object_id) is not None,
                )
            )
        return ReferenceTableReply(
            worker=Address(host=worker.host, port=worker.port, worker_id=worker.worker_id),
            pid=os.getpid(),
            job_id=worker.job_id,
            rows=rows,
            lineage_bytes=worker.lineage.total_bytes,
        )

    def stats(self) -> dict[str, int]:
        return {
            "contained": sum(len(v) for v in self.contained.values()),
            "pinned": sum(len(v) for v in self._pins.values()),
            "registrations": len(self._registrations),
            "removal_waiters": sum(len(v) for v in self._removal_waiters.values()),
            "borrower_polls": sum(self._polls.values()),
        }


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
