"""The process's current core worker.

A process has at most one core worker (the driver's or the worker's). It is
set once at the entry point (``init()`` or the worker's main) and read where
no context object can be passed: when an ``ObjectRef`` is unpickled, and by
the module-level API functions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from .._private.task_wire import Placement
from ..core_worker import CoreWorker, current_task_id
from ..exceptions import RuntimeNotInitializedError

logger = logging.getLogger("runtime")

_current: CoreWorker | None = None
# The session folder of the cluster this driver started (None: joined one, or a worker).
_session_dir: str | None = None
# In a process forked from one whose runtime was up: that process's pid. Its core
# worker's threads and connections did not come along; until init() runs here
# the API refuses, rather than hang on them or start a cluster per forked child.
_forked_from: int | None = None


def set_current(worker: CoreWorker | None, session_dir: str | None = None) -> None:
    global _current, _session_dir, _forked_from
    _current = worker
    _session_dir = session_dir
    if worker is not None:
        _forked_from = None


def forget_after_fork(parent_pid: int) -> None:
    """In a forked child: the parent's runtime is not this process's."""
    global _current, _session_dir, _forked_from
    if _current is not None:
        _current, _session_dir, _forked_from = None, None, parent_pid


def current_or_none() -> CoreWorker | None:
    return _current


# What starts a local cluster when the API is used before init() (the driver's
# module sets it; this layer cannot import it), and the lock that makes one
# start however many threads get there at once.
_auto_init: Callable[[], None] | None = None
_auto_init_lock = threading.Lock()


def set_auto_init(start: Callable[[], None]) -> None:
    global _auto_init
    _auto_init = start


def current_or_init() -> CoreWorker:
    """The current core worker; as in Ray, the first ``put``, ``get``, ``wait``
    or ``.remote()`` without ``init()`` starts a local cluster."""
    worker = _current
    if worker is None and _auto_init is not None and _forked_from is None:
        with _auto_init_lock:
            if _current is None:
                _auto_init()
        worker = _current
    return worker if worker is not None else current()


def runtime_loop() -> asyncio.AbstractEventLoop | None:
    """The loop that runs this process's runtime (None: not initialized)."""
    worker = _current
    return None if worker is None else worker.loop


def current() -> CoreWorker:
    worker = _current
    if worker is None and _forked_from is not None:
        raise RuntimeNotInitializedError(
            f"this process was forked from process {_forked_from} after its runtime.init(); "
            "the runtime does not carry over a fork: call runtime.init() here, or start "
            "processes with the 'spawn' (or 'forkserver') method"
        )
    if worker is None:
        raise RuntimeNotInitializedError(
            "the runtime is not initialized: call runtime.init() "
            "(or await runtime.init_async()) first"
        )
    return worker


def session_dir() -> str | None:
    return _session_dir


def log_failure(what: str, task: asyncio.Task[Any]) -> None:
    """A done callback for background requests nobody awaits: logs their error."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s: %s", what, task.exception())


def placement_here() -> Placement | None:
    """``current_placement`` of this process's worker, if it has one."""
    worker = current_or_none()
    return current_placement(worker) if worker is not None else None


def current_placement(worker: CoreWorker) -> Placement | None:
    """The placement group of the task or actor running on this thread, if any."""
    executor = worker.executor
    if executor is None or current_task_id.get() is None:
        return None
    return executor.placement
