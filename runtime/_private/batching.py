"""Calls coalesced into batches: one round trip carries many requests.

A :class:`Batcher` turns single calls into batched ones: the calls made in
one loop iteration go out together, and while a batch is in flight the
calls that arrive meanwhile wait for the next one. (A batcher may also
linger a little before each batch, for calls no one awaits made one by one.) An idle caller
pays nothing (its call leaves on the next iteration); a busy one pays one
round trip per batch rather than per call (creating a hundred placement
groups, or the gcs preparing their bundles on a node).

Invariants: at most one batch is in flight; every call's future is settled
(with its result, the batch's error, or cancelled when the batcher closes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: The most calls one batch carries (bounds one message's size).
MAX_BATCH = 1000


class Batcher(Generic[T, R]):
    """Sends calls through ``send`` (one request per call, one result each, in
    order) in batches of at most ``max_batch``."""

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[list[R]]],
        max_batch: int = MAX_BATCH,
        linger_s: float = 0.0,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if not linger_s >= 0:
            raise ValueError(f"linger_s must be a duration, got {linger_s!r}")
        self._send = send
        self._max = max_batch
        # How long a batch waits for company before it leaves: for calls
        # nobody waits on the answer of, made one after another.
        self._linger_s = linger_s
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def call(self, request: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._drainer is None:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self._linger_s:
                    await asyncio.sleep(self._linger_s)
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._send([request for request, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError(f"{len(batch)} requests got {len(results)} results")
                except asyncio.CancelledError:
                    self._pending = batch + self._pending
                    raise
                except Exception as e:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._drainer = None
            if self._pending:
                # Cancelled (the loop shuts down): no call is left hanging.
                for _, future in self._pending:
                    future.cancel()
                self._pending = []

    async def close(self) -> None:
        """Cancels the batch in flight and every call waiting."""
        drainer = self._drainer
        if drainer is not None:
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)
        for _, future in self._pending:
            future.cancel()
        self._pending = []
