"""Background tasks with an owner.

Every long-lived coroutine the runtime starts belongs to a :class:`TaskSet`
whose owner closes it on shutdown: nothing runs on unowned, and nothing
is left pending when a component stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class TaskSet:
    """Invariant: once ``close`` has begun, nothing new joins the set: a task
    spawned then is cancelled at once (a task whose cancellation spawns
    another would otherwise keep ``close`` going round forever)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        if self._closing:
            task.cancel()
            return task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def close(self) -> None:
        """Cancels every task and waits until all have finished."""
        self._closing = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Their done callbacks (which discard them) run on a later loop
            # iteration, and awaiting a gather of finished tasks need not
            # yield to the loop (it does not on Python 3.12+): drop them here,
            # or this loop would spin without end.
            self._tasks.difference_update(t for t in tasks if t.done())
