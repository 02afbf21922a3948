"""The objects of one process: writing them, counting them, freeing them, serving them.

:class:`ObjectClient` keeps the process's side of every object it holds:
``put`` (pickled on the caller's thread, recorded on the loop), the local
counts that live refs hold (``add_local_ref`` / ``remove_local_ref``, from any
thread), freeing an owned object everywhere once no count holds it (memory
store, node store, lineage, nested refs), and serving owned objects to
borrowers. Reads (``get``, ``wait``) are :class:`~._reads.ObjectReader`'s.

Values of ``max_inline_object_size`` and more go to the node's shared-memory
store; smaller ones stay inline in the memory store. Store deletes are sent
once per loop iteration, in one batch per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import serialization
from .._private.serialization import SerializedObject
from ._reference import NO_OWNER, Reference
from ._states import State

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger("runtime")


class ObjectClient:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        worker.bridge.on_ref_added = self._add_local
        worker.bridge.on_ref_dropped = self.drop_local
        # Where each owned object was made, for `runtime memory`.
        self.call_sites: dict[bytes, str] = {}
        # Owned objects holding an error that someone has read (any thread adds).
        self.errors_read: set[bytes] = set()
        # Invariant: True while a _flush_releases is posted and has not run.
        self._release_scheduled = False
        # Owned objects freed from shared-memory stores, by the node holding them;
        # sent once per loop iteration (invariant: _delete_scheduled iff non-empty
        # and a flush is scheduled).
        self._store_deletes: dict[bytes, list[bytes]] = {}
        self._delete_scheduled = False
        # Owned objects that stand for something else (an actor's handle
        # object): what to do when they are freed.
        self.on_free: dict[bytes, Callable[[], None]] = {}
        # Refs pickled out of band (by user code): kept, so their objects
        # live as long as this process (any thread adds; never removed).
        self._pinned: dict[bytes, Reference] = {}

    # -- local counts (any thread) ---------------------------------------------------
    def add_local_ref(self, ref: Reference) -> None:
        self._worker.bridge.post_count(ref)

    def _add_local(self, ref: Reference) -> None:
        worker = self._worker
        object_id, owner = ref._id, ref._owner
        if worker.refs.add_local(object_id, owned=owner[2] == worker.worker_id):
            worker.ownership.borrowed(object_id, owner)

    def remove_local_ref(self, object_id: bytes) -> None:
        if self._worker.state is State.STOPPED:
            return
        self._worker.bridge.post_count(object_id)

    def pin_out_of_band(self, ref: Reference) -> None:
        """``ref`` was pickled by code other than the runtime's: its object is
        kept for as long as this process lives (as Ray's ``ray.cloudpickle``
        does), since nothing tells when the pickle is read, if ever."""
        if ref._id in self._pinned or ref._owner == NO_OWNER:
            return
        if not self._worker.config.allow_out_of_band_object_ref_serialization:
            raise exceptions.OufOfBandObjectRefSerializationException(
                f"ObjectRef {ref.hex()} was pickled outside the runtime's serialization "
                "(allow_out_of_band_object_ref_serialization is off). Pass refs in task "
                "arguments, results or put() values instead, or set "
                "RUNTIME_ALLOW_OUT_OF_BAND_OBJECT_REF_SERIALIZATION=1 to pin the object "
                "for this process's lifetime"
            )
        self._pinned[ref._id] = ref

    def drop_local(self, object_id: bytes) -> None:
        """On the loop: one local count less; the object goes if none is left."""
        dropped = self._worker.refs.remove_local(object_id)
        if dropped is not None:
            self.dropped(object_id, dropped.owned)

    def dropped(self, object_id: bytes, owned: bool) -> None:
        """No count holds the object here any more."""
        if owned:
            self.free_owned([object_id])
        else:
            self._worker.store.delete(object_id)  # a borrowed value cached here
            self._worker.ownership.borrow_ended(object_id)

    def owned(self, ref: Reference) -> bool:
        return ref._owner[2] == self._worker.worker_id

    # -- writing -------------------------------------------------------------------
    def put(self, value: Any) -> Reference:
        """Stores ``value`` (from any thread); this process owns the new object."""
        self._worker.check_cluster()
        pickled = pickle_for_put(value)
        worker = self._worker
        object_id = worker.ids.put_id()
        obj = self.store_or_inline(object_id, pickled)
        # Ready once put returns, as in Ray (a wait(timeout=0) right after sees
        # it); the loop then does the bookkeeping (and runs any callback due).
        worker.store.put_new(object_id, obj)
        self.call_sites[object_id] = _user_call_site("put")  # (a dict's set: any thread)
        ref = worker.make_ref(object_id, worker.address, worker, counted=True)
        worker.post(self._put_on_loop, object_id, obj, pickled.refs)
        return ref

    def put_serialized(self, obj: SerializedObject, what: str) -> Reference:
        """Stores an object already serialized (an error object, for one); as ``put``."""
        self._worker.check_cluster()
        worker = self._worker
        object_id = worker.ids.put_id()
        worker.store.put_new(object_id, obj)
        self.call_sites[object_id] = what
        ref = worker.make_ref(object_id, worker.address, worker, counted=True)
        worker.post(self._put_on_loop, object_id, obj, [])
        return ref

    def promise(self, fill: Callable[[], Awaitable[Any]], what: str) -> Reference:
        """A new owned object (from any thread) whose value is what ``fill()``
        returns once it does (run on the loop); what it raises is the error
        ``get`` raises. A placement group's ``ready()`` is one."""
        self._worker.check_cluster()
        worker = self._worker
        object_id = worker.ids.put_id()
        ref = worker.make_ref(object_id, worker.address, worker, counted=True)
        worker.post(self._promise_on_loop, object_id, fill, what)
        return ref

    def _promise_on_loop(
        self, object_id: bytes, fill: Callable[[], Awaitable[Any]], what: str
    ) -> None:
        self.call_sites[object_id] = what
        self._worker.refs.add_owned(object_id, 1)

        async def settle() -> None:
            try:
                obj, nested = self.serialize_value(await fill(), object_id)
            except Exception as e:
                obj, nested = serialization.serialize_error(e), []
            if object_id in self._worker.refs:  # not freed meanwhile
                self._worker.store.put(object_id, obj)
                self._worker.ownership.contain(object_id, nested)

        self._worker.background.spawn(settle())

    def _put_on_loop(
        self, object_id: bytes, obj: SerializedObject, nested: list[Reference]
    ) -> None:
        worker = self._worker
        worker.refs.add_owned(object_id, 1)
        worker.store.put(object_id, obj)
        worker.ownership.contain(object_id, nested)

    def store_or_inline(
        self, object_id: bytes, pickled: serialization.Pickled, owner: bytes = b""
    ) -> SerializedObject:
        """Small values stay inline; large ones go to this node's shared-memory store."""
        worker = self._worker
        client = worker.store_client
        if client is None or pickled.size < worker.config.max_inline_object_size:
            return pickled.inline()
        client.put(object_id, pickled.inband, pickled.buffers, owner or worker.worker_id)
        return serialization.in_store(object_id, worker.node_id)

    def serialize_value(
        self, value: Any, object_id: bytes, owner: bytes = b""
    ) -> tuple[SerializedObject, list[Reference]]:
        small = serialization.small_scalar(value, self._worker.config.max_inline_object_size)
        if small is not None:
            return small, []
        pickled = serialization.pickle_value(value)
        return self.store_or_inline(object_id, pickled, owner), pickled.refs

    def deserialize(self, obj: SerializedObject) -> Any:
        return serialization.deserialize(obj, self._read_store)

    def _read_store(self, object_id: bytes) -> Any:
        client = self._worker.store_client
        if client is None:
            raise exceptions.RaySystemError("this process has no object store client")
        return client.get_value(object_id)

    # -- the store's reader pins (released by finalizers, on any thread) ----------
    def release_pending(self) -> None:
        """From a finalizer, on any thread: have the loop send the releases."""
        if not self._release_scheduled:
            self._release_scheduled = True
            self._worker.post(self._flush_releases)

    def _flush_releases(self) -> None:
        self._release_scheduled = False
        client = self._worker.store_client
        if client is not None:
            with contextlib.suppress(exceptions.RayError, OSError):
                client.flush_releases()

    def error_read(self, ref: Reference) -> None:
        """Someone read the error an object holds (any thread): not unhandled."""
        if ref._owner[2] == self._worker.worker_id:
            self.errors_read.add(ref._id)

    def report_unhandled(self, object_id: bytes, obj: SerializedObject) -> None:
        """An error nobody read is gone: say so once, as Ray's "Unhandled error"."""
        if self._worker.config.ignore_unhandled_errors or self._worker.state is State.STOPPED:
            return  # (while this process shuts down: what its teardown failed)
        try:
            error: BaseException = serialization.error_of(obj)
        except Exception as e:  # its class does not import here
            error = exceptions.RaySystemError(f"an error that could not be read here: {e!r}")
        if isinstance(error, exceptions.TaskCancelledError) or getattr(error, "intended", False):
            return  # asked for (a cancellation, the call that ended its actor)
        logger.error(
            "Unhandled error (suppress with RUNTIME_IGNORE_UNHANDLED_ERRORS=1), object %s: %s",
            object_id.hex(),
            error,
        )

    # -- freeing -------------------------------------------------------------------
    def free_owned(self, object_ids: list[bytes]) -> None:
        """Owned objects nobody uses any more: out of memory, and out of the store."""
        worker = self._worker
        ownership, lineage, store = worker.ownership, worker.lineage, worker.store
        for object_id in object_ids:
            if self.on_free:
                hook = self.on_free.pop(object_id, None)
                if hook is not None:
                    hook()
            if ownership.contained:
                ownership.release_contained(object_id)
            lineage.result_freed(object_id)
            self.call_sites.pop(object_id, None)
            obj = store.take(object_id)
            if obj is None:
                continue
            metadata = obj.metadata
            if metadata == serialization.METADATA_ERROR:
                if object_id not in self.errors_read:
                    self.report_unhandled(object_id, obj)
                self.errors_read.discard(object_id)
            elif metadata == serialization.METADATA_IN_STORE:
                node_id = serialization.store_location(obj)[1]
                self._store_deletes.setdefault(node_id, []).append(object_id)
        self._schedule_deletes()

    def free_copy(self, object_id: bytes, marker: serialization.SerializedObject) -> None:
        """Deletes the copy an IN_STORE marker names (one of an owned object's,
        replaced by a newer copy elsewhere, or made for nobody)."""
        node_id = serialization.store_location(marker)[1]
        self._store_deletes.setdefault(node_id, []).append(object_id)
        self._schedule_deletes()

    def _schedule_deletes(self) -> None:
        if self._store_deletes and not self._delete_scheduled:
            self._delete_scheduled = True
            assert self._worker.loop is not None
            self._worker.loop.call_soon(self.flush_deletes)

    def flush_deletes(self) -> None:
        """This node's store directly; other nodes' through this node's raylet."""
        self._delete_scheduled = False
        worker = self._worker
        deletes, self._store_deletes = self._store_deletes, {}
        for node_id, ids in deletes.items():
            if node_id != worker.node_id:
                worker.background.spawn(worker.recovery.free_remote(node_id, ids))
            elif worker.store_client is not None:
                with contextlib.suppress(exceptions.RayError, OSError):
                    worker.store_client.delete(ids)

    # -- serving borrowers -----------------------------------------------------------
    def knows_object(self, object_id: bytes) -> bool:
        return object_id in self._worker.refs or object_id in self._worker.store

    async def serve_object(self, object_id: bytes, timeout: float) -> SerializedObject | None:
        """An owned object for a borrower, once ready; None on timeout or if unknown."""
        store = self._worker.store
        obj = store.get_nowait(object_id)
        if obj is not None:
            return obj
        if not self.knows_object(object_id):
            return None
        try:
            return await asyncio.wait_for(
                store.wait_for(object_id), None if timeout < 0 else timeout
            )
        except TimeoutError:
            return None


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_call_site(what: str) -> str:
    """``what`` at the first frame outside this package (file:line)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return what
    return f"{what} at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def pickle_for_put(value: Any) -> serialization.Pickled:
    """``put``'s value pickled; a TypeError for a ref itself or what cannot be pickled."""
    if isinstance(value, Reference):
        raise TypeError(
            "put() of an ObjectRef is not allowed: pass the ref itself, or put a "
            "container that holds it"
        )
    try:
        return serialization.pickle_value(value)
    except Exception as e:
        raise TypeError(
            f"put() could not serialize a value of type {type(value).__name__}: {e}"
        ) from e
