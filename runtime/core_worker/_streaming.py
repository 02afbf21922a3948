"""Running streaming generator tasks in a worker (tasks and actor methods).

The function returns a generator (or any iterable); each item is
serialized as soon as it is yielded (inline, or into this node's store
under its item id) and reported to the owner on the task stream
(:class:`GeneratorItem`); the task's reply, after the last item, carries the
number of items. An exception after ``k`` items is the task's error reply:
the owner makes it item ``k``.

Backpressure: with ``N`` set, the generator is not resumed while ``N``
reported items are unconsumed; the owner's acks (:class:`GeneratorAck`)
move the mark. Cancellation stops it between items (GeneratorExit inside
it), or inside it: KeyboardInterrupt in a sync one, CancelledError in an
async one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .._private.ids import return_id
from .._private.task_wire import GeneratorItem, WireReply, WireTask
from ._loop import WAIT_SLICE_S
from ._running import ENDS_ASYNC, ENDS_WORKER, Reply, cancelled_reply, error_reply, load_args

if TYPE_CHECKING:
    from ._core_worker import CoreWorker


class GeneratorRun:
    """A streaming task running here: how far its owner has read, and whether
    it was cancelled. Acks and cancels arrive on the loop; a sync generator
    waits for them on its thread."""

    def __init__(self, reply: Reply, backpressure: int) -> None:
        self.reply = reply
        self.backpressure = backpressure
        self.acked = 0
        self.cancelled = False
        self._changed = threading.Condition()
        self._event = asyncio.Event()

    def ack(self, consumed: int) -> None:
        with self._changed:
            self.acked = max(self.acked, consumed)
            self._changed.notify_all()
        self._event.set()

    def cancel(self) -> None:
        with self._changed:
            self.cancelled = True
            self._changed.notify_all()
        self._event.set()

    def _full(self, reported: int) -> bool:
        return bool(self.backpressure) and reported - self.acked >= self.backpressure

    def wait_room_blocking(self, reported: int) -> None:
        """On the task's thread; in slices, so that a cancel's interrupt lands."""
        with self._changed:
            while self._full(reported) and not self.cancelled:
                self._changed.wait(WAIT_SLICE_S)

    async def wait_room(self, reported: int) -> None:
        while self._full(reported) and not self.cancelled:
            self._event.clear()
            await self._event.wait()


def _item(worker: CoreWorker, task: WireTask, index: int, value: Any) -> GeneratorItem:
    task_id = task[0]
    obj, refs = worker.objects.serialize_value(value, return_id(task_id, index + 1), task[8])
    if refs:
        # Held until the owner has taken the refs over (ReleasePins, at the end).
        worker.post(worker.ownership.pin, task_id, refs)
    return GeneratorItem(task_id, index, obj, [(r.binary(), r.owner_address) for r in refs])


def _end(worker: CoreWorker, task: WireTask, count: int) -> WireReply:
    obj, _ = worker.objects.serialize_value(count, return_id(task[0], 0), task[8])
    return (task[0], True, [obj], False, [[]], None)


def _not_iterable(task: WireTask, value: Any) -> WireReply:
    error = TypeError(
        f"{task[2]}() is a streaming generator task but returned "
        f"{type(value).__name__}, which is not iterable"
    )
    return error_reply(task[0], task[2], error)


def _start(worker: CoreWorker, fn: Any, task: WireTask) -> tuple[Any, WireReply | None]:
    """Calls the generator function: (what it returned, None), or (None, the
    reply that ends the task at once)."""
    try:
        args, kwargs = load_args(worker, task)
        return fn(*args, **kwargs), None
    except KeyboardInterrupt:
        return None, cancelled_reply(task[0], task[2])
    except ENDS_WORKER:
        raise
    except BaseException as e:
        return None, error_reply(task[0], task[2], e)


def run_sync_stream(worker: CoreWorker, fn: Any, task: WireTask, run: GeneratorRun) -> WireReply:
    """On the task's thread: drives a sync generator to its end."""
    produced, failed = _start(worker, fn, task)
    if failed is not None:
        return failed
    try:
        items: Iterator[Any] = iter(produced)
    except TypeError:
        return _not_iterable(task, produced)
    count = 0
    try:
        while not run.cancelled:
            try:
                value = next(items)
            except StopIteration:
                return _end(worker, task, count)
            worker.post(run.reply, _item(worker, task, count, value))
            count += 1
            run.wait_room_blocking(count)
        _close(items)
        return cancelled_reply(task[0], task[2])
    except KeyboardInterrupt:  # how a running sync task is cancelled
        _close(items)
        return cancelled_reply(task[0], task[2])
    except ENDS_WORKER:
        raise
    except BaseException as e:
        return error_reply(task[0], task[2], e)


async def run_async_stream(
    worker: CoreWorker, fn: Any, task: WireTask, run: GeneratorRun
) -> WireReply:
    """On the loop: drives an async generator (or a sync iterable, without
    blocking the loop on backpressure) to its end. Cancellation raises
    CancelledError out of here, as for any async task."""
    produced, failed = _start(worker, fn, task)
    if failed is not None:
        return failed
    agen: AsyncIterator[Any] | None = None
    items: Iterator[Any] | None = None
    if inspect.isasyncgen(produced) or hasattr(produced, "__anext__"):
        agen = produced
    else:
        try:
            items = iter(produced)
        except TypeError:
            return _not_iterable(task, produced)
    count = 0
    try:
        while not run.cancelled:
            try:
                if agen is not None:
                    value = await agen.__anext__()
                else:
                    assert items is not None
                    value = next(items)
            except (StopAsyncIteration, StopIteration):
                return _end(worker, task, count)
            run.reply(_item(worker, task, count, value))
            count += 1
            await run.wait_room(count)
        raise asyncio.CancelledError  # not caught below
    except ENDS_ASYNC:
        raise
    except BaseException as e:
        return error_reply(task[0], task[2], e)
    finally:
        if agen is not None and hasattr(agen, "aclose"):
            with contextlib.suppress(Exception):
                await agen.aclose()  # GeneratorExit inside it, if it is suspended
        elif items is not None:
            _close(items)


def _close(items: Iterator[Any]) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()
