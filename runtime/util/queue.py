"""``Queue``: a first-in first-out queue shared by tasks and actors (Ray's
``ray.util.queue``), kept by an async actor.

A ``Queue`` pickles as its actor's handle, so every copy passed to a task or
an actor talks to the same queue, and the queue lives while any copy does.
Blocking ``put``/``get`` wait in the actor without holding a thread there;
``put_async``/``get_async`` are their forms for an event loop.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

from .. import api


class Empty(_stdlib_queue.Empty):
    """Raised by ``get`` with ``block=False`` (or after ``timeout``) on an empty queue."""


class Full(_stdlib_queue.Full):
    """Raised by ``put`` with ``block=False`` (or after ``timeout``) on a full queue."""


class _QueueState:
    """The queue itself. Answers (ok, value) rather than raising: a full or
    empty queue is an outcome, not a failure of the call."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    async def put(self, item: Any, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except TimeoutError:
            return False
        return True

    async def get(self, timeout: float | None) -> tuple[bool, Any]:
        try:
            return True, await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return False, None

    def put_nowait(self, item: Any) -> bool:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def put_nowait_batch(self, items: list[Any]) -> bool:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            return False
        for item in items:
            self.queue.put_nowait(item)
        return True

    def get_nowait(self) -> tuple[bool, Any]:
        try:
            return True, self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return False, None

    def get_nowait_batch(self, num_items: int) -> tuple[bool, list[Any]]:
        if num_items > self.queue.qsize():
            return False, []
        return True, [self.queue.get_nowait() for _ in range(num_items)]


_QueueActor: Any = api.remote(num_cpus=0)(_QueueState)


class Queue:
    """A FIFO queue for tasks and actors; ``maxsize <= 0`` means unbounded.

    ``actor_options`` are the options of the actor that keeps it (such as a
    ``name``, or a ``scheduling_strategy`` to place it).
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"Queue(maxsize=...) must be an int, got {type(maxsize).__name__}")
        self.maxsize = maxsize
        self.actor = _QueueActor.options(**(actor_options or {})).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return self.qsize()

    def qsize(self) -> int:
        """The number of items in the queue now."""
        return int(api.get(self.actor.qsize.remote()))

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return 0 < self.maxsize <= self.qsize()

    # -- putting ---------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Adds an item; waits for room (up to ``timeout`` seconds) unless
        ``block`` is False. Full if there is none."""
        if not block:
            if not api.get(self.actor.put_nowait.remote(item)):
                raise Full(f"the queue is full ({self.maxsize} items)")
            return
        if not api.get(self.actor.put.remote(item, _timeout(timeout))):
            raise Full(f"the queue stayed full for {timeout} s")

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if not block:
            if not await self.actor.put_nowait.remote(item):
                raise Full(f"the queue is full ({self.maxsize} items)")
            return
        if not await self.actor.put.remote(item, _timeout(timeout)):
            raise Full(f"the queue stayed full for {timeout} s")

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Adds all the items, or none (Full) if they do not all fit."""
        if not isinstance(items, Iterable):
            raise TypeError("put_nowait_batch() takes an iterable of items")
        batch = list(items)
        if not api.get(self.actor.put_nowait_batch.remote(batch)):
            raise Full(f"{len(batch)} items do not fit in the queue (maxsize {self.maxsize})")

    # -- getting ---------------------------------------------------------------------
    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Takes the oldest item; waits for one (up to ``timeout`` seconds)
        unless ``block`` is False. Empty if there is none."""
        if not block:
            ok, item = api.get(self.actor.get_nowait.remote())
        else:
            ok, item = api.get(self.actor.get.remote(_timeout(timeout)))
        if not ok:
            raise Empty("the queue is empty")
        return item

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block:
            ok, item = await self.actor.get_nowait.remote()
        else:
            ok, item = await self.actor.get.remote(_timeout(timeout))
        if not ok:
            raise Empty("the queue is empty")
        return item

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Takes ``num_items`` items, or none (Empty) if there are fewer."""
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError("get_nowait_batch() takes an int number of items")
        if num_items < 0:
            raise ValueError(f"get_nowait_batch(): num_items must be >= 0, got {num_items}")
        ok, items = api.get(self.actor.get_nowait_batch.remote(num_items))
        if not ok:
            raise Empty(f"the queue holds fewer than {num_items} items")
        return list(items)

    def shutdown(self, force: bool = False) -> None:
        """Ends the queue's actor (``force``: at once, dropping calls in flight)."""
        if force:
            api.kill(self.actor)
        else:
            self.actor.__ray_terminate__.remote()


def _timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or timeout < 0):
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout!r}")
    return timeout
