"""Objects held by other nodes, and objects lost from a store.

Before a value in a shared-memory store is read, the core worker makes sure
this node's store has it: the IN_STORE marker names the node that holds the
object, and one held elsewhere is pulled through this node's raylet
(:meth:`ObjectRecovery.localize`).

A read that finds the object gone (``LostInStore``: evicted, or its node
died) asks the owner to rebuild it by running its task again (lineage), or
settles the error saying why it cannot be (:meth:`ObjectRecovery.recover`).
The owner side is :meth:`ObjectRecovery.reconstruct`, which rebuilds lost
arguments first, recursively.

All of it runs on the core worker's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .. import exceptions
from .._private import rpc, serialization
from .._private.ids import return_index, task_of
from .._private.serialization import SerializedObject
from .._private.task_wire import KIND_ACTOR_CALL
from ..protocol.rt import (
    ContainsObjectRequest,
    CoreWorkerStub,
    FreeObjectsRequest,
    PullObjectRequest,
    ReconstructRequest,
)
from ._generators import Replay
from ._reference import Reference
from ._store_client import LostInStore
from ._task_spec import TaskSpec, TaskState

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ObjectRecovery:
    def __init__(self, worker: CoreWorker) -> None:
        self._w = worker
        # Tasks being run again to rebuild their results, by task id.
        self.reconstructions: dict[bytes, asyncio.Future[None]] = {}
        self._replays: dict[bytes, Replay] = {}  # those of them that stream items

    # -- objects held by other nodes ----------------------------------------------------
    def remote_markers(self, objs: Sequence[SerializedObject | None]) -> list[SerializedObject]:
        """The IN_STORE markers among ``objs`` that name another node."""
        node_id = self._w.node_id
        return [
            obj
            for obj in objs
            if obj is not None
            and obj.metadata == serialization.METADATA_IN_STORE
            and obj.data[-serialization.NODE_ID_SIZE :] != node_id
        ]

    async def localize(self, objs: Sequence[SerializedObject | None]) -> None:
        """Pulls the objects held by other nodes into this node's store.

        One that cannot be pulled (its node died) stays missing here: reading
        it raises LostInStore, and the usual recovery (lineage, or an error
        naming why) takes over.
        """
        remote = self.remote_markers(objs)
        if remote:
            await asyncio.gather(*(self._pull(obj) for obj in remote))

    async def localize_until(
        self, objs: Sequence[SerializedObject | None], deadline: float | None
    ) -> None:
        if self.remote_markers(objs):
            await _until(deadline, self.localize(objs), "objects were copied from other nodes")

    def localize_blocking(self, objs: Sequence[SerializedObject | None]) -> None:
        """:meth:`localize` for a thread that runs no loop (a sync actor call)."""
        if self.remote_markers(objs):
            self._w.bridge.run_blocking(self.localize(objs))

    async def _pull(self, obj: SerializedObject) -> None:
        object_id, node_id = serialization.store_location(obj)
        try:
            reply = await self._w.raylet.pull_object(
                PullObjectRequest(object_id=object_id, node_id=node_id)
            )
        except rpc.CONNECTION_ERRORS as e:
            logger.warning("pulling object %s failed: %s", object_id.hex(), e)
            return
        if reply.store_full:
            raise exceptions.ObjectStoreFullError(
                f"object {object_id.hex()} could not be copied to this node: {reply.error}"
            )
        if not reply.ok:
            logger.info("object %s could not be pulled: %s", object_id.hex(), reply.error)

    async def present(self, obj: SerializedObject) -> bool:
        """Whether the store an IN_STORE marker names still has the object."""
        object_id, node_id = serialization.store_location(obj)
        if node_id == self._w.node_id:
            assert self._w.store_client is not None
            return self._w.store_client.contains(object_id)
        try:
            reply = await self._w.raylet.contains_object(
                ContainsObjectRequest(object_id=object_id, node_id=node_id)
            )
        except rpc.CONNECTION_ERRORS:
            return False
        return reply.found

    async def free_remote(self, node_id: bytes, object_ids: list[bytes]) -> None:
        """Frees owned objects another node holds (through this node's raylet)."""
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await self._w.raylet.free_objects(
                FreeObjectsRequest(object_ids=object_ids, node_id=node_id)
            )

    # -- lost objects: the reader's side ------------------------------------------------
    async def recover(
        self, ref: Reference, failed: SerializedObject | None = None
    ) -> SerializedObject:
        """A get found ``ref``'s value gone from the store: rebuild it or explain.

        Returns what to deserialize next: the rebuilt object's marker (its
        object pulled here), or the error to raise (kept, so later gets raise
        it at once).
        """
        w = self._w
        if w.objects.owned(ref):
            try:
                await self._rebuild_owned(ref._id, failed)
            except exceptions.ObjectLostError as e:
                return self._settle_lost(ref._id, e)
            rebuilt = w.store.get_nowait(ref._id) or serialization.serialize_error(
                exceptions.ObjectLostError(ref.hex(), "it was freed while being rebuilt")
            )
            await self.localize([rebuilt])
            return rebuilt
        try:
            await self._rebuild_at_owner(ref)
        except exceptions.ObjectLostError as e:
            return self._settle_lost(ref._id, e)
        # Rebuilt, perhaps on another node: ask the owner where it is now.
        w.store.delete(ref._id)
        obj = await w.reader.fetch_from_owner(ref)
        await self.localize([obj])
        return obj

    async def recover_until(
        self, ref: Reference, deadline: float | None, failed: SerializedObject | None = None
    ) -> SerializedObject:
        return await _until(deadline, self.recover(ref, failed), "the object was recovered")

    def _settle_lost(self, object_id: bytes, error: exceptions.ObjectLostError) -> SerializedObject:
        obj = serialization.serialize_error(error)
        if object_id in self._w.refs:
            self._w.store.put(object_id, obj)
        return obj

    # -- lost objects: the owner's side ---------------------------------------------------
    async def reconstruct(self, object_id: bytes) -> None:
        """Runs again the task that made an owned object lost from the store."""
        w = self._w
        task_id = task_of(object_id)
        running = self.reconstructions.get(task_id)
        if running is not None:
            replay = self._replays.get(task_id)
            await asyncio.shield(running)
            if replay is not None:
                self._check_replay(object_id, replay)
            return
        entry = w.lineage.entry_for(object_id)
        if entry is None and object_id in w.refs:
            streaming = w.tasks.pending.get(task_id)
            if streaming is not None and streaming.num_returns < 0:
                # An item of a stream still running: a retry (its first copy
                # died with its node) reports it again, unless it did already.
                current = w.store.get_nowait(object_id)
                in_store = (
                    current is not None and current.metadata == serialization.METADATA_IN_STORE
                )
                if current is None or (in_store and not await self.present(current)):
                    await w.generators.reported_again(object_id)
                return
        if entry is None or object_id not in w.refs:
            raise w.lineage.lost_error(object_id)
        spec = entry.spec
        if spec.retries_left == 0:
            raise exceptions.ObjectReconstructionFailedMaxAttemptsExceededError(
                object_id.hex(),
                f"it is lost and {spec.name}() has no retries left to rebuild it "
                f"(max_retries={spec.max_retries})",
            )
        assert w.loop is not None
        done: asyncio.Future[None] = w.loop.create_future()
        self.reconstructions[task_id] = done
        replay = None
        if spec.num_returns < 0:  # a streaming task: its items come back as a replay
            replay = self._replays[task_id] = w.generators.replay(task_id)
        # Arguments nobody refers to any more (``del a`` after ``g.remote(a)``),
        # held while this rebuild needs them: their lineage outlived them.
        held: list[bytes] = []
        try:
            for i, arg in enumerate(entry.resolved):
                # Lost arguments first, recursively; each goes where it is now
                # (rebuilt since, perhaps on another node).
                if arg.metadata != serialization.METADATA_IN_STORE:
                    continue
                arg_id = serialization.store_location(arg)[0]
                current = w.store.get_nowait(arg_id) or arg
                if current.metadata == serialization.METADATA_IN_STORE and not await self.present(
                    current
                ):
                    if arg_id not in w.refs and w.lineage.entry_for(arg_id) is not None:
                        w.refs.add_owned(arg_id, 1)
                        held.append(arg_id)
                    await self.reconstruct(arg_id)
                    current = w.store.get_nowait(arg_id) or current
                entry.resolved[i] = current
            if spec.retries_left > 0:
                spec.retries_left -= 1
            logger.warning("rebuilding a lost object by running %s() again", spec.name)
            spec.resolved = entry.resolved
            spec.state = TaskState.QUEUED
            spec.cancelled = False
            w.tasks.pending[task_id] = spec
            if spec.kind == KIND_ACTOR_CALL:  # to its actor (restarted, if it died)
                w.actor_client.resubmit(spec)
            else:
                w.submitter.submit(spec)
            await asyncio.shield(done)
        finally:
            if self.reconstructions.get(task_id) is done:
                del self.reconstructions[task_id]
            if not done.done():
                done.set_result(None)
            if replay is not None:
                self._replays.pop(task_id, None)
                w.generators.replays.pop(task_id, None)
            for arg_id in held:
                w.objects.drop_local(arg_id)
        if replay is not None:
            self._check_replay(object_id, replay)

    def _check_replay(self, object_id: bytes, replay: Replay) -> None:
        """After a streaming task's replay: whether it made the lost item again."""
        index = return_index(object_id) - 1  # (return 0 is the item count)
        if index < replay.reported or object_id not in self._w.refs:
            return
        if replay.error is not None:  # it failed before the item: that is why it is lost
            self._w.store.put(object_id, replay.error)
            return
        raise exceptions.StreamingGeneratorReplayInconsistentError(
            object_id.hex(),
            f"its streaming task was run again to rebuild item {index} and yielded "
            f"{replay.reported} items: the generator's output is not deterministic",
        )

    def lost_argument(self, spec: TaskSpec, error: SerializedObject) -> bool:
        """A task or actor call failed reading an argument lost from its store,
        so it did not run: the argument is rebuilt (by its owner), then the call
        is sent again with where the argument is now, spending none of its
        retries; one whose argument cannot be rebuilt fails with why. True if
        the call is taken care of here."""
        if not serialization.is_error(error):
            return False
        try:
            err = serialization.error_of(error)
        except Exception:
            return False
        cause = getattr(err, "cause", None)
        if not isinstance(cause, LostInStore):
            return False
        lost = bytes.fromhex(cause.object_id_hex)
        if not any(_names(obj, lost) for obj in spec.resolved):
            return False  # (not one of its arguments: what its code read, and reported)
        # (A rebuild's own run has no refs left: its arguments are owned here.)
        ref = next((r for r in spec.arg_refs if r._id == lost), None)
        if ref is None and not self._w.refs.owns(lost):
            return False
        self._w.background.spawn(self._rebuild_then_resend(spec, lost, ref))
        return True

    async def _rebuild_then_resend(
        self, spec: TaskSpec, lost: bytes, ref: Reference | None
    ) -> None:
        w = self._w
        try:
            if ref is None or w.objects.owned(ref):
                stale = next(obj for obj in spec.resolved if _names(obj, lost))
                await self._rebuild_owned(lost, stale)
                fresh = w.store.get_nowait(lost)
            else:
                await self._rebuild_at_owner(ref)
                w.store.delete(lost)  # where it was: the read below asks the owner
                fresh = (await w.reader.get_serialized([ref], None, fetch_local=False))[0]
        except exceptions.ObjectLostError as e:
            w.tasks.fail_task(spec, serialization.serialize_error(e))
            return
        if fresh is None or serialization.is_error(fresh):
            lost_error = exceptions.ObjectLostError(lost.hex(), "it was freed while being rebuilt")
            w.tasks.fail_task(spec, fresh or serialization.serialize_error(lost_error))
            return
        if spec.cancelled:
            cancelled = exceptions.TaskCancelledError(f"{spec.name}() was cancelled")
            w.tasks.fail_task(spec, serialization.serialize_error(cancelled))
            return
        spec.resolved = [fresh if _names(obj, lost) else obj for obj in spec.resolved]
        w.tasks.retry(spec, None)

    async def _rebuild_owned(self, object_id: bytes, failed: SerializedObject | None) -> None:
        """Rebuilds an owned object whose copy ``failed`` to be read, unless it
        has been already (another reader asked first): its current copy is
        another, and present."""
        current = self._w.store.get_nowait(object_id)
        if (
            current is not None
            and current != failed
            and current.metadata == serialization.METADATA_IN_STORE
            and await self.present(current)
        ):
            return
        await self.reconstruct(object_id)

    async def _rebuild_at_owner(self, ref: Reference) -> None:
        """Asks a borrowed object's owner to rebuild it; raises why it cannot."""
        host, port, _ = ref._owner
        try:
            reply = await CoreWorkerStub(self._w.channels.get(host, port)).reconstruct(
                ReconstructRequest(object_id=ref._id)
            )
        except rpc.CONNECTION_ERRORS as e:
            raise exceptions.OwnerDiedError(
                ref.hex(), f"its owner at {host}:{port} died ({type(e).__name__})"
            ) from None
        if not reply.ok:
            raise exceptions.ObjectLostError(ref.hex(), reply.error)


def _names(obj: SerializedObject, object_id: bytes) -> bool:
    """Whether ``obj`` is an IN_STORE marker of ``object_id``."""
    return (
        obj.metadata == serialization.METADATA_IN_STORE
        and serialization.store_location(obj)[0] == object_id
    )


async def _until(deadline: float | None, work: Coroutine[Any, Any, T], what: str) -> T:
    """``work``'s result, or GetTimeoutError at ``deadline`` (a get's)."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        raise exceptions.GetTimeoutError(f"get() timed out while {what}") from None
