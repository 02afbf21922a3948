"""The core worker's one loop, and the hand-offs to it from other threads and loops.

Invariant: every piece of core worker state is touched only on ``loop``'s
thread. User threads hand state changes over with :meth:`LoopBridge.post`
(ordered, one wakeup per burst) and wait for results with
:meth:`LoopBridge.run_blocking`; coroutines running on another event loop
await the core worker's with :meth:`LoopBridge.on_own_loop`. A blocking call
made on a thread that runs an event loop is refused, naming its ``await``
form, since it would stall that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from threading import get_ident
from typing import Any, TypeVar

from .. import exceptions
from ._foreign import await_future

logger = logging.getLogger("runtime")

T = TypeVar("T")

#: Blocking waits on user threads wake this often to let an interrupt in.
WAIT_SLICE_S = 0.1

#: A thread that finds this many items queued behind a drain that has not
#: started waits (at most ``HAND_OVER_WAIT_S``) for it to start. Without the
#: wait the loop thread, woken by the burst's first post, gets the GIL only
#: when the interpreter's switch interval (5 ms) takes it from the busy
#: poster: a batch of actor calls reached the actor in 5 ms lumps, and the
#: caller's ``get`` then waited for the actor to run most of them. (128: each
#: drain's calls leave in one write, and a write that wakes the peer costs
#: ~45 us here; 32 and 64 gave 35k and 42k calls per second, 128 and 256 44k.)
HAND_OVER_AT = 128
HAND_OVER_WAIT_S = 0.002


def _no_handler(item: Any) -> None:
    raise RuntimeError("no handler for the refs' counts is set")


class LoopBridge:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # Items: (fn, args) for post; for post_count, a ref (its count added)
        # or an object id (bytes: a count dropped). One queue keeps them all in order: a
        # ref's count is added before any later post can use it, and dropped
        # after (its drop can not overtake its add: the queue holds the ref).
        self._posted: deque[Any] = deque()
        # Invariant: True while a drain is scheduled and has not started yet.
        self._drain_scheduled = False
        # A poster waiting for the scheduled drain to start holds this lock
        # here (acquired); the drain releases it as it starts.
        self._drain_started: threading.Lock | None = None
        # Set by the object client: what a ref's count added or dropped does.
        self.on_ref_added: Callable[[Any], None] = _no_handler
        self.on_ref_dropped: Callable[[bytes], None] = _no_handler

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attaches to ``loop``; must run on the loop's thread."""
        self.loop = loop
        self._loop_thread = threading.get_ident()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Runs ``fn(*args)`` on the loop, after everything posted before it."""
        if get_ident() == self._loop_thread:  # (on_loop_thread, inline: the hot path)
            fn(*args)
            return
        posted = self._posted
        posted.append((fn, args))
        if not self._drain_scheduled:
            self._schedule_drain()
        elif len(posted) >= HAND_OVER_AT:
            self._hand_over()

    def post_count(self, item: Any) -> None:
        """A ref's count: added (``item`` is the ref) or dropped (``item`` is its
        object id, bytes). ``post(on_ref_added or on_ref_dropped, item)`` that
        allocates nothing: a list of 10,000 refs unpickled would otherwise queue
        30,000 new objects, for the cyclic collector to find alive and promote."""
        if get_ident() == self._loop_thread:
            (self.on_ref_dropped if type(item) is bytes else self.on_ref_added)(item)
            return
        self._posted.append(item)
        if not self._drain_scheduled:
            self._schedule_drain()

    def _schedule_drain(self) -> None:
        self._drain_scheduled = True
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self.drain)

    def _hand_over(self) -> None:
        """Waits (at most ``HAND_OVER_WAIT_S``) for the scheduled drain to start."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return  # (no drain is coming: the items wait for teardown's)
        started = threading.Lock()
        started.acquire()
        self._drain_started = started
        if self._drain_scheduled:
            started.acquire(timeout=HAND_OVER_WAIT_S)
        self._drain_started = None

    def drain(self) -> None:
        """Runs what was posted (on the loop, or at teardown)."""
        # Reset first: an item appended after this point schedules a new drain.
        self._drain_scheduled = False
        started = self._drain_started
        if started is not None:
            self._drain_started = None
            started.release()
        posted = self._posted
        added = self.on_ref_added
        dropped = self.on_ref_dropped
        while posted:
            item = posted.popleft()
            try:
                kind = type(item)
                if kind is tuple:
                    item[0](*item[1])
                elif kind is bytes:
                    dropped(item)
                else:
                    added(item)
            except Exception:
                what = item[0] if kind is tuple else item
                logger.exception("posted call %s failed", getattr(what, "__name__", what))
            # The ref goes here (its drop, if it was the last, is queued now).
            item = None

    def run_blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on the loop and blocks this (other) thread for its result."""
        assert self.loop is not None
        if self.on_loop_thread():
            coro.close()
            raise exceptions.BlockingCallOnLoopError("blocking call on the runtime's own loop")
        cf = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            while True:
                # In slices: a thread parked in one long wait never sees the
                # KeyboardInterrupt that cancels its task (see _interrupt).
                try:
                    return cf.result(WAIT_SLICE_S)
                except TimeoutError:
                    if cf.done():
                        raise  # the coroutine's own TimeoutError
        except BaseException:
            cf.cancel()
            raise

    async def on_own_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Awaits a coroutine of the core worker's from any loop (trio's too)."""
        assert self.loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio
            return await await_future(asyncio.run_coroutine_threadsafe(coro, self.loop))
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


def check_blocking_allowed(
    call: str, alternative: str, runtime_loop: asyncio.AbstractEventLoop | None
) -> None:
    """Refuses a blocking API call (``runtime.{call}``) on the thread of the loop
    that hosts the runtime (``runtime_loop``): it would wait for that very loop.
    Another loop's thread (a notebook kernel's) may block, as in Ray."""
    if runtime_loop is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return
    if running is runtime_loop:
        raise exceptions.BlockingCallOnLoopError(
            f"runtime.{call}() blocks, and was called on the event loop that runs the "
            f"runtime, which it would stall; use `{alternative}` instead"
        )


class LoopSafeFuture(concurrent.futures.Future[T]):
    """A ``concurrent.futures.Future`` of the runtime's whose ``result()`` and
    ``exception()`` refuse to wait on the runtime's own loop (a deadlock)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._runtime_loop = loop

    def result(self, timeout: float | None = None) -> T:
        if not self.done():
            check_blocking_allowed("ObjectRef.future().result", "await ref", self._runtime_loop)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            check_blocking_allowed("ObjectRef.future().exception", "await ref", self._runtime_loop)
        return super().exception(timeout)
