"""An executor lane: threads that run sync user code off the loop, in order.

A worker hands each sync task or actor call to a lane with one queue put
(no future, no condition per call), and the lane hands results back in
batches: a thread that finishes a call while earlier results still wait for
the loop adds to them, and only the first of a batch wakes the loop.

Invariants: calls start in the order they were submitted (one FIFO queue;
with several threads, they may finish in another order); every submitted
call's ``done`` runs exactly once, on the loop, unless the lane is closed
first; ``_wake_pending`` is True exactly while a delivery is scheduled and
has not taken the results yet (guarded by ``_lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Called on the loop with the call's result, or the exception it raised.
Done = Callable[[Any, BaseException | None], None]

_STOP = object()

logger = logging.getLogger(__name__)


class Lane:
    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, threads: int = 1) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._results: list[tuple[Done, Any, BaseException | None]] = []
        self._lock = threading.Lock()
        self._wake_pending = False
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], Any], done: Done) -> None:
        """Runs ``fn()`` on a lane thread (in the caller's context), then
        ``done(result, error)`` on the loop."""
        self._queue.put((contextvars.copy_context(), fn, done))

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on a lane thread, as a future of the loop."""
        future: asyncio.Future[T] = self._loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        self.submit(lambda: fn(*args), done)
        return future

    def close(self) -> None:
        """Stops the threads once the calls queued before this are done; later
        results are not delivered."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get()
            except BaseException:  # a stray interrupt meant for a call that ended
                continue
            if item is _STOP:
                return
            ctx, fn, done = item
            try:
                result, error = ctx.run(fn), None
            except BaseException as e:  # handed to done, as a future would
                result, error = None, e
            self._hand_back(done, result, error)

    def _hand_back(self, done: Done, result: Any, error: BaseException | None) -> None:
        with self._lock:
            self._results.append((done, result, error))
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            results, self._results = self._results, []
            self._wake_pending = False
        if self._closed:
            return
        for done, result, error in results:
            try:
                done(result, error)
            except Exception:
                logger.exception("handing a result back failed")
