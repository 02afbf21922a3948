"""Reading objects: ``get`` and ``wait`` in their blocking and asyncio forms.

:class:`ObjectReader` turns refs into values. An owned object is awaited in
the memory store; a borrowed one is fetched from its owner (``GetObject``,
long-polled, one fetch per object however many readers); an object held in
another node's store is pulled here first (``recovery.localize_until``); one
lost from a store is rebuilt (``recovery.recover``) and read again.

The blocking forms run on user threads: ready objects are read there (dict
reads); the rest is handed to the loop. A sync task that blocks lends its
CPU back to the raylet while it waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import operator
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from .. import exceptions
from .._private import rpc, serialization
from .._private.serialization import SerializedObject
from ..protocol.rt import CoreWorkerStub, GetObjectRequest, ObjectStatus, WorkerBlockedRequest
from ._loop import WAIT_SLICE_S, LoopSafeFuture
from ._reference import NO_OWNER, Reference
from ._running import current_task_id, thread_state
from ._states import WorkerMode
from ._store_client import LostInStore

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

#: How long one GetObject request waits at the owner before it is renewed.
OWNER_POLL_S = 30.0


class ObjectReader:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        # Fetches of borrowed objects under way, one per object.
        self._fetches: dict[bytes, asyncio.Future[SerializedObject]] = {}

    # -- on the loop: serialized values --------------------------------------------
    def _object_future(self, ref: Reference) -> asyncio.Future[SerializedObject]:
        """A future for the object's serialized value (on the loop)."""
        worker = self._worker
        if worker.objects.owned(ref):
            return worker.store.wait_for(ref._id)
        obj = worker.store.get_nowait(ref._id)
        if obj is not None:
            fut: asyncio.Future[SerializedObject] = asyncio.get_running_loop().create_future()
            fut.set_result(obj)
            return fut
        fetch = self._fetches.get(ref._id)
        if fetch is None:
            fetch = worker.background.spawn(self.fetch_from_owner(ref))
            self._fetches[ref._id] = fetch
        return asyncio.shield(fetch)

    async def fetch_from_owner(self, ref: Reference) -> SerializedObject:
        """Gets a borrowed object's value from its owner."""
        worker = self._worker
        try:
            if ref._owner == NO_OWNER:
                obj = serialization.serialize_error(
                    exceptions.OwnerDiedError(
                        ref.hex(),
                        "its owner is unknown: a ref made from an id alone (ObjectRef."
                        "from_binary, from_random or nil) names no object this process "
                        "owns or was handed",
                    )
                )
            else:
                obj = await self._ask_owner(ref)
        finally:
            self._fetches.pop(ref._id, None)
        if ref._id in worker.refs:
            worker.store.put(ref._id, obj)
        return obj

    async def _ask_owner(self, ref: Reference) -> SerializedObject:
        host, port, _ = ref._owner
        stub = CoreWorkerStub(self._worker.channels.get(host, port))
        while True:
            try:
                reply = await stub.get_object(
                    GetObjectRequest(object_id=ref._id, timeout=OWNER_POLL_S)
                )
            except rpc.CONNECTION_ERRORS as e:
                return serialization.serialize_error(
                    exceptions.OwnerDiedError(
                        ref.hex(), f"its owner at {host}:{port} is unreachable ({e})"
                    )
                )
            if reply.status is ObjectStatus.READY:
                return SerializedObject(reply.metadata, reply.data)
            if reply.status is ObjectStatus.FREED:
                return serialization.serialize_error(
                    exceptions.ObjectFreedError(ref.hex(), "its owner no longer has it")
                )

    def arguments_here(self, refs: Sequence[Reference]) -> list[SerializedObject] | None:
        """A task's ref arguments' serialized values when every one is here now
        and none is an error (the task needs no wait to resolve them); else None.
        What ``get_serialized(refs, None, fetch_local=False)`` would return."""
        get = self._worker.store.get_nowait
        objs = [get(r._id) for r in refs]
        if None in objs or serialization.first_error(objs) is not None:
            return None
        return objs  # type: ignore[return-value]

    async def get_serialized(
        self,
        refs: Sequence[Reference],
        deadline: float | None,
        lend_cpu: bool = False,
        fetch_local: bool = True,
    ) -> list[SerializedObject]:
        """The objects' serialized values, in order; waits for those not ready.

        ``fetch_local``: objects other nodes hold are pulled here too (to be
        read); a task's arguments are not (they go to wherever it runs).

        Fails fast, as Ray's ``get`` does: once any object is an error, it
        returns at once; the list then holds that error, and None for the
        objects not waited for (see :func:`first_error`).
        """
        worker = self._worker
        objs: list[SerializedObject | None] = [worker.store.get_nowait(r._id) for r in refs]
        missing = [i for i, obj in enumerate(objs) if obj is None]
        if missing and serialization.first_error(objs) is not None:
            return objs  # type: ignore[return-value]
        if not missing:
            if fetch_local:
                await worker.recovery.localize_until(objs, deadline)
            return objs  # type: ignore[return-value]
        await worker.wait_started()
        async with self.task_blocked(lend_cpu):
            futures = [self._object_future(refs[i]) for i in missing]
            try:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                gate = _all_or_first_error(futures)
                await asyncio.wait([gate], timeout=timeout)
                for i, fut in zip(missing, futures, strict=True):
                    if fut.done():
                        objs[i] = fut.result()
                if serialization.first_error(objs) is not None:
                    return objs  # type: ignore[return-value]
                if not gate.done():
                    left = sum(1 for fut in futures if not fut.done())
                    raise exceptions.GetTimeoutError(
                        f"get() timed out: {left} of {len(refs)} objects were not ready"
                    )
            finally:
                for fut in futures:
                    if not fut.done():
                        fut.cancel()
        if fetch_local:
            await worker.recovery.localize_until(objs, deadline)
        return objs  # type: ignore[return-value]

    @contextlib.asynccontextmanager
    async def task_blocked(self, lend_cpu: bool) -> AsyncIterator[None]:
        """A task of this worker waits for objects (a sync one on its thread:
        ``lend_cpu``; an async one: in its context): it hands back the tasks
        queued behind it, and those that arrive meanwhile; a sync one lends its
        CPU to the node while it waits (Ray's blocked worker), for ``get``,
        ``wait`` and a generator's next item alike, so that what it waits for
        can run."""
        executor = self._worker.executor
        task_waits = executor is not None and (lend_cpu or current_task_id.get() is not None)
        if task_waits:
            assert executor is not None
            executor.waiting += 1
            executor.release_queued()
        if lend_cpu:
            await self._notify_blocked(True)
        try:
            yield
        finally:
            if task_waits:
                assert executor is not None
                executor.waiting -= 1
            if lend_cpu:
                await self._notify_blocked(False)

    async def _notify_blocked(self, blocked: bool) -> None:
        worker = self._worker
        if worker.mode is not WorkerMode.WORKER:
            return
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await worker.raylet.notify_worker_blocked(
                WorkerBlockedRequest(worker_id=worker.worker_id, blocked=blocked)
            )

    # -- get ---------------------------------------------------------------------
    def get(self, refs: Sequence[Reference], timeout: float | None) -> list[Any]:
        """Blocking get, for threads that run no event loop."""
        worker = self._worker
        deadline = None if timeout is None else time.monotonic() + timeout
        ready = [worker.store.get_nowait(r._id) for r in refs]
        lend_cpu = thread_state.in_sync_task
        if None in ready and not lend_cpu and all(r._owner[2] == worker.worker_id for r in refs):
            # Owned objects, nothing to lend: wait for them directly, with no
            # coroutine on the loop (a sync get loop's hot path).
            if self._wait_owned(refs, timeout):
                missing = sum(1 for r in refs if r._id not in worker.store)
                raise exceptions.GetTimeoutError(
                    f"get() timed out after {timeout}s: {missing} of {len(refs)} objects not ready"
                )
            ready = [worker.store.get_nowait(r._id) for r in refs]
        objs: list[SerializedObject]
        run_blocking = worker.bridge.run_blocking
        if None in ready:
            objs = run_blocking(self.get_serialized(refs, deadline, lend_cpu))
            self._raise_first_error(refs, objs)  # it failed fast: some may be missing
        else:
            objs = ready  # type: ignore[assignment]
            if worker.recovery.remote_markers(objs):
                run_blocking(worker.recovery.localize_until(objs, deadline))
        values = []
        for ref, obj in zip(refs, objs, strict=True):
            while True:
                try:
                    values.append(worker.objects.deserialize(obj))
                    break
                except LostInStore:
                    # Rebuilt from lineage, or the owner says why it cannot be.
                    obj = run_blocking(worker.recovery.recover_until(ref, deadline, obj))
                except BaseException:
                    if serialization.is_error(obj):
                        worker.objects.error_read(ref)
                    raise
        return values

    def _raise_first_error(
        self, refs: Sequence[Reference], objs: Sequence[SerializedObject | None]
    ) -> None:
        """Raises the first error among the objects read, if any (marked read)."""
        for ref, obj in zip(refs, objs, strict=True):
            if obj is not None and serialization.is_error(obj):
                self._worker.objects.error_read(ref)
                self._worker.objects.deserialize(obj)  # raises it

    def _wait_owned(
        self, refs: Sequence[Reference], timeout: float | None, needed: int | None = None
    ) -> int:
        """Blocks this (non-loop) thread until ``needed`` of these owned objects
        are ready; with ``needed`` None (a get's wait: all of them), also as soon
        as one is an error, for a get fails at the first. Returns how many are
        still missing (more than 0 only on timeout). A memory-store
        callback per object and one raw lock as the gate (an ``Event`` is a
        ``Condition`` in Python: about 10 us more per wait on each side): no
        future, no coroutine."""
        store = self._worker.store
        lock = threading.Lock()  # callbacks run on the loop, or here
        # Held until the wait is over; released once, by whoever ends it.
        gate = threading.Lock()
        gate.acquire()
        opened = [False]
        fail_fast = needed is None  # (a wait counts errors as ready, as any object)
        needed = len(refs) if needed is None else needed
        left = [needed]

        def open_gate() -> None:
            with lock:
                if opened[0]:
                    return
                opened[0] = True
            gate.release()

        def one_ready(object_id: bytes, obj: SerializedObject) -> None:
            with lock:
                left[0] -= 1
            if left[0] <= 0:
                open_gate()
            elif fail_fast and obj.metadata == serialization.METADATA_ERROR:
                open_gate()  # one failed: get fails fast

        # Registered from this thread: the store's lock makes it safe, and the
        # loop is not woken for it (a sync get's hot path).
        ids = list(map(_ID, refs))
        here = store.on_ready(ids, one_ready)
        if here:
            with lock:
                left[0] -= len(here)
            if left[0] <= 0 or (fail_fast and any(_is_error(store.get_nowait(i)) for i in here)):
                open_gate()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not opened[0]:
            # In slices, so that a cancelled task's interrupt gets in.
            wait_s = WAIT_SLICE_S if deadline is None else deadline - time.monotonic()
            if wait_s <= 0:
                break
            gate.acquire(timeout=min(wait_s, WAIT_SLICE_S))
        if left[0] > 0 or needed < len(ids):
            # Callbacks not called yet would pile up (a timeout, a failure, or
            # a wait for only some).
            store.drop_callbacks(ids, one_ready)
        return max(left[0], 0) if not opened[0] else 0

    async def get_async(self, refs: Sequence[Reference], timeout: float | None) -> list[Any]:
        worker = self._worker
        on_own_loop = worker.bridge.on_own_loop
        deadline = None if timeout is None else time.monotonic() + timeout
        objs = await on_own_loop(self.get_serialized(refs, deadline))
        self._raise_first_error(refs, objs)
        values = []
        for ref, obj in zip(refs, objs, strict=True):
            while True:
                try:
                    values.append(worker.objects.deserialize(obj))
                    break
                except LostInStore:
                    obj = await on_own_loop(worker.recovery.recover_until(ref, deadline, obj))
        return values

    # -- wait --------------------------------------------------------------------
    async def wait_async(
        self,
        refs: Sequence[Reference],
        num_returns: int,
        timeout: float | None,
        fetch_local: bool = True,
    ) -> tuple[list[Reference], list[Reference]]:
        on_own_loop = self._worker.bridge.on_own_loop
        deadline = None if timeout is None else time.monotonic() + timeout
        result = await on_own_loop(self._wait(refs, num_returns, timeout))
        if fetch_local:
            await on_own_loop(self._fetch_ready(result[0], deadline))
        return result

    def wait(
        self,
        refs: Sequence[Reference],
        num_returns: int,
        timeout: float | None,
        fetch_local: bool = True,
    ) -> tuple[list[Reference], list[Reference]]:
        worker = self._worker
        deadline = None if timeout is None else time.monotonic() + timeout
        # Fast path on the caller's thread (dict reads): enough refs are ready.
        # Per-ref work is C-level passes (map, compress): this runs once per
        # call on lists of thousands.
        objects = worker.store
        ids = list(map(_ID, refs))
        here = objects.present(ids)
        result: tuple[list[Reference], list[Reference]] | None = None
        if here.count(True) < num_returns:
            me = worker.worker_id
            # Owned objects and no CPU to lend: wait with a callback each, no futures.
            if not thread_state.in_sync_task and all(r._owner[2] == me for r in refs):
                self._wait_owned(refs, timeout, num_returns)
                here = objects.present(ids)
            else:
                lend_cpu = thread_state.in_sync_task
                result = worker.bridge.run_blocking(
                    self._wait(refs, num_returns, timeout, lend_cpu)
                )
        if result is None:
            result = _split(refs, here, num_returns)
        if fetch_local and worker.recovery.remote_markers(
            [objects.get_nowait(r._id) for r in result[0]]
        ):
            worker.bridge.run_blocking(self._fetch_ready(result[0], deadline))
        return result

    async def _fetch_ready(self, ready: Sequence[Reference], deadline: float | None) -> None:
        """``wait(fetch_local=True)``: copies the ready objects other nodes hold
        here, within the time left (Ray's meaning of the flag, best effort)."""
        objs = [self._worker.store.get_nowait(r._id) for r in ready]
        with contextlib.suppress(exceptions.GetTimeoutError, exceptions.ObjectStoreFullError):
            await self._worker.recovery.localize_until(objs, deadline)

    async def _wait(
        self,
        refs: Sequence[Reference],
        num_returns: int,
        timeout: float | None,
        lend_cpu: bool = False,
    ) -> tuple[list[Reference], list[Reference]]:
        store = self._worker.store
        ready = {r._id for r in refs if store.get_nowait(r._id) is not None}
        if len(ready) < num_returns and timeout != 0:
            await self._worker.wait_started()
            deadline = None if timeout is None else time.monotonic() + timeout
            async with self.task_blocked(lend_cpu):
                futures = {self._object_future(r): r._id for r in refs if r._id not in ready}
                pending = set(futures)
                try:
                    while len(ready) < num_returns and pending:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            break
                        done, pending = await asyncio.wait(
                            pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                        )
                        if not done:
                            break
                        ready.update(futures[f] for f in done)
                finally:
                    for fut in pending:
                        fut.cancel()
        ready_refs: list[Reference] = []
        not_ready: list[Reference] = []
        for ref in refs:
            if ref._id in ready and len(ready_refs) < num_returns:
                ready_refs.append(ref)
            else:
                not_ready.append(ref)
        return ready_refs, not_ready

    # -- an ObjectRef's future -----------------------------------------------------
    def waiter(self, ref: Reference, loop: asyncio.AbstractEventLoop | None) -> asyncio.Future[Any]:
        """The future behind ``await ref`` on ``loop`` (None: not on a loop)."""
        worker = self._worker
        own = worker.loop
        assert own is not None
        if loop is not None and loop is not own:
            return asyncio.wrap_future(self.concurrent_future(ref), loop=loop)
        if not worker.bridge.on_loop_thread():
            return asyncio.wrap_future(self.concurrent_future(ref), loop=own)
        obj = worker.store.get_nowait(ref._id)
        if obj is not None and not worker.recovery.remote_markers([obj]):
            if serialization.is_error(obj):
                worker.objects.error_read(ref)
            fut: asyncio.Future[Any] = own.create_future()
            try:
                fut.set_result(worker.objects.deserialize(obj))
            except LostInStore:
                pass  # the slow path rebuilds it
            except BaseException as e:
                fut.set_exception(e)
            if fut.done():
                return fut
        task = own.create_task(self._value(ref))
        # A waiter nobody looks at again (a ref abandoned at shutdown) must not
        # log "exception was never retrieved": its error belongs to the ref.
        task.add_done_callback(_retrieve)
        return task

    async def _value(self, ref: Reference) -> Any:
        worker = self._worker
        (obj,) = await self.get_serialized([ref], None)
        if serialization.is_error(obj):
            worker.objects.error_read(ref)
        while True:
            try:
                return worker.objects.deserialize(obj)
            except LostInStore:
                obj = await worker.recovery.recover(ref, obj)

    def concurrent_future(self, ref: Reference) -> concurrent.futures.Future[Any]:
        loop = self._worker.loop
        assert loop is not None
        future: LoopSafeFuture[Any] = LoopSafeFuture(loop)

        def settle(task: asyncio.Task[Any]) -> None:
            if future.cancelled():
                return
            if task.cancelled():
                future.cancel()
            elif task.exception() is not None:
                future.set_exception(task.exception())
            else:
                future.set_result(task.result())

        def start() -> None:
            if future.set_running_or_notify_cancel():
                loop.create_task(self._value(ref)).add_done_callback(settle)

        loop.call_soon_threadsafe(start)
        return future


_ID = operator.attrgetter("_id")


def _is_error(obj: SerializedObject | None) -> bool:
    return obj is not None and serialization.is_error(obj)


def _split(
    refs: Sequence[Reference], here: list[bool], num_returns: int
) -> tuple[list[Reference], list[Reference]]:
    """``wait``'s answer: the first ``num_returns`` refs that are here (fewer if
    fewer are), then all the others, each list in the given order."""
    if here.count(True) > num_returns:
        # Where the num_returns-th ready ref is: the running count reaches it.
        counts = cast(list[int], list(itertools.accumulate(here)))
        cut = counts.index(num_returns) + 1
        here = here[:cut] + [False] * (len(here) - cut)
    return (
        list(itertools.compress(refs, here)),
        list(itertools.compress(refs, map(operator.not_, here))),
    )


def _all_or_first_error(
    futures: list[asyncio.Future[SerializedObject]],
) -> asyncio.Future[None]:
    """Done once every future is, or as soon as one holds an error (get fails
    fast). One callback per future: a long list costs O(n), not a wait per item."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    left = len(futures)

    def one_done(fut: asyncio.Future[SerializedObject]) -> None:
        nonlocal left
        left -= 1
        if gate.done():
            return
        failed = not fut.cancelled() and (
            fut.exception() is not None or serialization.is_error(fut.result())
        )
        if left == 0 or failed:
            gate.set_result(None)

    for fut in futures:
        fut.add_done_callback(one_done)
    if not futures:
        gate.set_result(None)
    return gate


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
