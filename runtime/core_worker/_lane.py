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


class LaneHost:
    """A thread the process already has (a worker's main thread) that serves
    the lanes handed to it, one at a time, until told to stop. Sync tasks run
    there as in Ray: a signal reaches them (``ray.cancel`` interrupts a
    ``time.sleep``), and their code may install signal handlers."""

    def __init__(self) -> None:
        self._lanes: queue.SimpleQueue[Lane | None] = queue.SimpleQueue()
        self._serving: Lane | None = None
        self._stopping = False
        self.busy = False  # it runs a call now (read by the loop thread at exit)
        self.done = threading.Event()  # ``serve`` returned

    def hand(self, lane: Lane) -> None:
        self._lanes.put(lane)

    def stop(self) -> None:
        """The serving thread returns after the call it runs now, if any (the
        lane it serves is closed, if its owner has not closed it yet)."""
        self._stopping = True
        self._lanes.put(None)
        serving = self._serving
        if serving is not None:
            serving.close()

    def serve(self) -> None:
        """Serves lanes on the calling thread until ``stop``."""
        while True:
            lane = _take(self._lanes)
            if lane is None:
                self.done.set()
                return
            self._serving = lane
            if self._stopping:
                lane.close()
            lane.work(self)
            self._serving = None


class Lane:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        name: str,
        threads: int = 1,
        host: LaneHost | None = None,
    ) -> None:
        """``threads`` threads of its own, or (with ``host``) that host's thread."""
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._results: list[tuple[Done, Any, BaseException | None]] = []
        self._lock = threading.Lock()
        self._wake_pending = False
        self._closed = False
        self._threads = (
            []
            if host is not None
            else [
                threading.Thread(target=self.work, name=f"{name}-{i}", daemon=True)
                for i in range(threads)
            ]
        )
        self._stops = 1 if host is not None else threads
        for thread in self._threads:
            thread.start()
        if host is not None:
            host.hand(self)

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
        """Stops the threads once the call each runs now is done; calls still
        queued are not run, and no result is delivered any more."""
        self._closed = True
        for _ in range(self._stops):
            self._queue.put(_STOP)

    def work(self, host: LaneHost | None = None) -> None:
        """A serving thread's loop: calls, in order, until the lane closes."""
        while True:
            item = _take(self._queue)
            if item is _STOP:
                return
            if self._closed:
                continue  # nobody waits for it any more
            ctx, fn, done = item
            if host is not None:
                host.busy = True
            try:
                result, error = ctx.run(fn), None
            except BaseException as e:  # handed to done, as a future would
                result, error = None, e
            if host is not None:
                host.busy = False
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


def _take(source: queue.SimpleQueue[T]) -> T:
    """The next item; a stray interrupt (meant for a call that ended) is let go."""
    while True:
        try:
            return source.get()
        except BaseException:
            continue
