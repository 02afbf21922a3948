"""Awaiting the runtime from an event loop that is not asyncio's (trio).

The runtime's loop is asyncio's; a coroutine of it runs there
(``run_coroutine_threadsafe``) and its ``concurrent.futures.Future`` is
awaited here. Under trio (directly, or through anyio's trio backend) the
future's completion wakes the trio task through the trio token, which is
safe from any thread; no thread waits. Other loops are refused by name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
from typing import Any, TypeVar

T = TypeVar("T")


def in_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def await_future(future: concurrent.futures.Future[T]) -> T:
    """``await`` a concurrent future on the running (non-asyncio) event loop."""
    trio: Any = sys.modules.get("trio")
    token = None
    if trio is not None:
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            token = None
    if token is None:
        raise RuntimeError(
            "awaiting the runtime needs an asyncio or trio event loop (or anyio on either)"
        )
    done = trio.Event()

    def wake(_: object) -> None:
        with contextlib.suppress(Exception):  # that trio run has ended
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()  # the local wait only, as for asyncio
        raise
    return future.result()
