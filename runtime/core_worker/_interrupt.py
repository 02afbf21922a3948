"""Interrupting a running sync task, as Ray does to cancel one: a
``KeyboardInterrupt`` raised in it.

A worker's tasks run on its main thread (see ``LaneHost``), so a signal
reaches them: its handler runs there at once, even inside a blocking call
such as ``time.sleep`` or a lock's wait, and checks there, on the task's own
thread, that the task it was aimed at still runs (a task that ended
meanwhile is not hit, nor the code after it). Other threads (a threaded
actor's) are interrupted at their next bytecode, which a blocking call
delays until it returns.
"""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Callable
from types import FrameType

#: The signal that interrupts the main thread's task.
INTERRUPT_SIGNAL = signal.SIGUSR1

_MAIN = threading.main_thread().ident


class _Aim:
    # Whether the handler is installed, and the predicate it checks ("the task
    # it was aimed at still runs"); None once delivered or withdrawn.
    installed = False
    still_running: Callable[[], bool] | None = None


def install() -> None:
    """On a worker's main thread, before it runs tasks."""
    signal.signal(INTERRUPT_SIGNAL, _on_signal)
    _Aim.installed = True


def _on_signal(signum: int, frame: FrameType | None) -> None:
    still_running, _Aim.still_running = _Aim.still_running, None
    if still_running is not None and still_running():
        raise KeyboardInterrupt


def interrupt(thread_id: int, still_running: Callable[[], bool]) -> None:
    """Raises KeyboardInterrupt in the thread running a sync task, unless
    ``still_running()`` is false by then."""
    if _Aim.installed and thread_id == _MAIN:
        _Aim.still_running = still_running
        signal.pthread_kill(thread_id, INTERRUPT_SIGNAL)
        return
    interrupt_thread(thread_id)
    if not still_running():
        interrupt_thread(thread_id, None)  # it ended meanwhile: take it back


def withdraw() -> None:
    """On the thread whose task just ended: an interrupt not delivered yet is
    dropped (so it cannot land in the code that runs next)."""
    if _Aim.installed and threading.get_ident() == _MAIN:
        _Aim.still_running = None
    else:
        interrupt_thread(threading.get_ident(), None)


def interrupt_thread(thread_id: int, error: type[BaseException] | None = KeyboardInterrupt) -> None:
    """Raises ``error`` in a thread at its next bytecode; ``None`` withdraws an
    interrupt not delivered yet.

    Known limit: an interrupt sent just as the task ends may land in the code
    that runs right after it; both sides withdraw it, which narrows that
    window to a few bytecodes without closing it.
    """
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(error) if error is not None else None
    )
