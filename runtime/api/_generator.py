"""``ObjectRefGenerator``: the refs a streaming generator task yields, as they come.

``for ref in gen`` (or ``next(gen)``) waits for the next item; ``async for
ref in gen`` (or ``await anext(gen)``) waits on the caller's loop with no
thread. Each ref is the caller's own, freed when dropped. An error raised
by the generator is the next ref's value (it raises at ``get``), then the
iteration ends. Dropping the generator frees the items it did not hand out.
"""

from __future__ import annotations

import asyncio
import collections.abc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .._private.ids import task_of
from ..core_worker import check_blocking_allowed, thread_state
from ._object_ref import ObjectRef

if TYPE_CHECKING:
    from ..core_worker import CoreWorker


async def wait_ready(
    worker: CoreWorker,
    items: list[Any],
    num_returns: int,
    timeout: float | None,
    lend_cpu: bool = False,
) -> tuple[list[Any], list[Any]]:
    """On the core worker's loop: ``wait`` over refs and generators (a generator
    is ready when its next item is, or it has ended). ``lend_cpu``: the caller
    is a sync task, which lends its CPU while it waits."""
    if lend_cpu and timeout != 0 and _ready_now(worker, items) < num_returns:
        async with worker.reader.task_blocked(True):
            return await wait_ready(worker, items, num_returns, timeout)

    async def ready(item: Any) -> None:
        if isinstance(item, ObjectRefGenerator):
            await worker.generators.wait_ready(item._task_id)
        else:
            await worker.reader.wait_async([item], 1, None, fetch_local=False)

    waits = [asyncio.ensure_future(ready(item)) for item in items]
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        pending = set(waits)
        while sum(w.done() for w in waits) < num_returns and pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
    finally:
        for w in waits:
            w.cancel()
    chosen = [item for item, w in zip(items, waits, strict=True) if w.done() and not w.cancelled()]
    chosen = chosen[:num_returns]
    ids = {id(item) for item in chosen}
    return chosen, [item for item in items if id(item) not in ids]


def _ready_now(worker: CoreWorker, items: list[Any]) -> int:
    generators, store = worker.generators, worker.store
    return sum(
        generators.ready(item._task_id)
        if isinstance(item, ObjectRefGenerator)
        else store.get_nowait(item._id) is not None
        for item in items
    )


Y = TypeVar("Y")


class ObjectRefGenerator(Iterator[ObjectRef[Y]], AsyncIterator[ObjectRef[Y]]):
    """Also a duck-typed asyncio future that is done when the next item is ready
    (or the stream ended), so ``asyncio.wait`` takes generators; the wait is
    made afresh after each item is taken."""

    _asyncio_future_blocking = False

    def __init__(self, completed: ObjectRef, worker: CoreWorker) -> None:
        self._completed = completed
        self._task_id = task_of(completed.binary())
        self._worker = worker
        self._waiter: asyncio.Future[None] | None = None

    # -- iterating ----------------------------------------------------------------------
    def __iter__(self) -> ObjectRefGenerator[Y]:
        return self

    def __next__(self) -> ObjectRef[Y]:
        check_blocking_allowed("ObjectRefGenerator.__next__", "await anext(gen)", self._worker.loop)
        worker = self._worker
        lend_cpu = thread_state.in_sync_task  # (this thread's: read here)
        object_id = worker.bridge.run_blocking(worker.generators.next_item(self._task_id, lend_cpu))
        if object_id is None:
            raise StopIteration
        return self._ref(object_id)

    def __aiter__(self) -> ObjectRefGenerator[Y]:
        return self

    async def __anext__(self) -> ObjectRef[Y]:
        worker = self._worker
        object_id = await worker.bridge.on_own_loop(worker.generators.next_item(self._task_id))
        if object_id is None:
            raise StopAsyncIteration
        return self._ref(object_id)

    # Ray's generator interface, in name: a stream takes no values back.
    def send(self, value: Any) -> ObjectRef[Y]:
        raise NotImplementedError("`gen.send` is not supported: iterate with next(gen)")

    def throw(self, *args: Any) -> ObjectRef[Y]:
        raise NotImplementedError("`gen.throw` is not supported: cancel its task instead")

    def close(self) -> None:
        raise NotImplementedError("`gen.close` is not supported: drop the generator instead")

    async def asend(self, value: Any) -> ObjectRef[Y]:
        raise NotImplementedError("`gen.asend` is not supported: iterate with anext(gen)")

    async def athrow(self, *args: Any) -> ObjectRef[Y]:
        raise NotImplementedError("`gen.athrow` is not supported: cancel its task instead")

    async def aclose(self) -> None:
        raise NotImplementedError("`gen.aclose` is not supported: drop the generator instead")

    def _ref(self, object_id: bytes) -> ObjectRef[Y]:
        self._waiter = None  # readiness is about the next item now
        worker = self._worker
        ref = worker.make_ref(object_id, worker.address, worker, counted=True)
        assert isinstance(ref, ObjectRef)
        return ref

    # -- the asyncio future protocol (ready: the next item is) ----------------------------
    def _current_waiter(self) -> asyncio.Future[None]:
        waiter = self._waiter
        if waiter is None or waiter.cancelled():
            worker = self._worker
            wait = worker.generators.wait_ready(self._task_id)
            waiter = self._waiter = asyncio.ensure_future(worker.bridge.on_own_loop(wait))
        return waiter

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._current_waiter().get_loop()

    def add_done_callback(self, fn: Callable[[Any], object], *, context: Any = None) -> None:
        self._current_waiter().add_done_callback(lambda _: fn(self), context=context)

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        return 0  # the waiter's callbacks only report readiness; a stale one is harmless

    def done(self) -> bool:
        return self._waiter is not None and self._waiter.done()

    def cancelled(self) -> bool:
        return False

    def cancel(self, msg: Any = None) -> bool:
        """Cancels the local wait for the next item; the generator goes on."""
        waiter, self._waiter = self._waiter, None
        return waiter is not None and waiter.cancel(msg)

    def result(self) -> None:
        if not self.done():
            raise asyncio.InvalidStateError("the next item is not ready")

    def exception(self) -> BaseException | None:
        self.result()
        return None

    # -- state --------------------------------------------------------------------------
    def completed(self) -> ObjectRef[int]:
        """A ref that resolves when the task ends (to its item count), or raises its error."""
        return self._completed

    def next_ready(self) -> bool:
        """Whether ``next()`` would return an item without waiting (False once
        it would stop: see :meth:`is_finished`), as in Ray."""
        generators = self._worker.generators
        return generators.ready(self._task_id) and not generators.finished(self._task_id)

    def is_finished(self) -> bool:
        """Whether every item was handed out and the task has ended."""
        return self._worker.generators.finished(self._task_id)

    def task_id(self) -> str:
        return self._task_id.hex()

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(
            "an ObjectRefGenerator cannot be passed to another task or stored, as in Ray: "
            "pass the refs it yields instead (for example list(gen))"
        )

    def __del__(self) -> None:
        worker = self.__dict__.get("_worker")
        if worker is None:
            return
        try:
            worker.post(worker.generators.drop, self._task_id)
        except Exception:  # interpreter shutdown
            pass


# As Ray's: a generator and an async generator by interface.
collections.abc.Generator.register(ObjectRefGenerator)
collections.abc.AsyncGenerator.register(ObjectRefGenerator)
