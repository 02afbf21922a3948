"""The common frame of the runtime's own processes (gcs, raylet, worker).

Each runs one uvloop loop. SIGTERM and SIGINT stop it gracefully; the death
of a tied parent ends it at once (see ``_process``). A worker runs its loop
on a thread of its own, its main thread being where sync tasks run (as in
Ray: signals reach them there).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

import uvloop


def configure_logging(role: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s",
    )


#: The cyclic collector's first threshold in the runtime's own processes.
#: Python's default (hundreds of allocations) suits small programs; a core
#: worker keeps thousands of calls in flight, and every collection that runs
#: meanwhile finds them alive and promotes them, which brings on full
#: collections. Measured (``n:n actor calls async``): 25k -> 28-35k calls per
#: second with this threshold and the imports frozen.
GC_THRESHOLD = 10_000


def tune_collector() -> None:
    """Freezes what is imported so far (modules are never garbage: full
    collections need not walk them again) and raises the first threshold."""
    gc.freeze()
    first, second, third = gc.get_threshold()
    gc.set_threshold(max(GC_THRESHOLD, first), second, third)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Runs ``main(stop)`` on a uvloop loop; ``stop`` is set by SIGTERM/SIGINT."""
    tune_collector()

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    uvloop.run(wrapper())


def run_beside(
    main: Callable[[asyncio.Event], Awaitable[None]],
    on_main: Callable[[], None],
    end_main: Callable[[], None],
) -> bool:
    """Runs ``main(stop)`` on a uvloop loop in a thread of its own while the
    calling (main) thread runs ``on_main()``; once ``main`` ends, ``end_main()``
    (from the loop's thread) makes ``on_main`` return. Returns whether
    ``main`` ended without an error.

    SIGTERM and SIGINT set ``stop``: their handlers run on the main thread
    only when it next runs bytecode (it may be deep in a task's C call), so
    the loop learns of them from the signal wakeup fd, written at once.
    """
    global _wakeup
    tune_collector()
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    _wakeup = (read_fd, write_fd)
    stopping = {signal.SIGTERM, signal.SIGINT}
    ended_well = False
    stop_soon: list[Callable[[], object]] = []  # set once the loop runs

    def on_main_thread(signum: int, frame: object) -> None:
        # Also on the main thread (later), should user code have taken the
        # wakeup fd for a loop of its own.
        for stop_now in stop_soon:
            with contextlib.suppress(RuntimeError):  # the loop has ended
                stop_now()

    for sig in stopping:
        signal.signal(sig, on_main_thread)

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signals() -> None:
            try:
                data = os.read(read_fd, 512)
            except BlockingIOError:
                return
            if stopping & set(data):
                stop.set()

        loop.add_reader(read_fd, on_signals)
        stop_soon.append(lambda: loop.call_soon_threadsafe(stop.set))
        await main(stop)

    def loop_thread() -> None:
        nonlocal ended_well
        try:
            uvloop.run(wrapper())
            ended_well = True
        except BaseException:
            logging.getLogger("runtime").exception("the loop ended with an error")
        finally:
            end_main()

    thread = threading.Thread(target=loop_thread, name="runtime-loop")
    thread.start()
    on_main()
    thread.join()
    return ended_well


#: The signal wakeup pipe of :func:`run_beside`, while this process has one.
_wakeup: tuple[int, int] | None = None


def _forget_signals_after_fork() -> None:
    """In a process forked from a worker (a task's multiprocessing pool): its
    signals are its own. Left as they were, a SIGTERM to the child (a pool's
    terminate()) would be written into the wakeup pipe it shares with the
    worker, and the worker's loop would stop; and the child would not end."""
    global _wakeup
    if _wakeup is None:
        return
    signal.set_wakeup_fd(-1)
    for fd in _wakeup:
        with contextlib.suppress(OSError):
            os.close(fd)
    _wakeup = None
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


os.register_at_fork(after_in_child=_forget_signals_after_fork)
