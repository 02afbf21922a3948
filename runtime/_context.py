"""The process's current core worker.

A process has at most one core worker (the driver's or the worker's). It is
set once at the entry point (``init()`` or the worker's main) and read where
no context object can be passed: when an ``ObjectRef`` is unpickled, and by
the module-level API functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .exceptions import RuntimeNotInitializedError

if TYPE_CHECKING:
    from .core_worker import CoreWorker

_current: CoreWorker | None = None


def set_current(worker: CoreWorker | None) -> None:
    global _current
    _current = worker


def current_or_none() -> CoreWorker | None:
    return _current


def current() -> CoreWorker:
    worker = _current
    if worker is None:
        raise RuntimeNotInitializedError(
            "the runtime is not initialized: call runtime.init() "
            "(or await runtime.init_async()) first"
        )
    return worker
