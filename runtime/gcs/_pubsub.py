"""Publish/subscribe channels of the gcs.

A subscriber is a bounded buffer drained by its stream. A subscriber too
slow to keep up loses the oldest messages, and is told how many it lost:
the gcs never blocks a publisher on a slow reader, and never drops silently.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Collection

from ..protocol.rt import Channel, LogBatch, PubMessage, ResourceBatch

MAX_BUFFERED = 10_000


class Subscriber:
    def __init__(self, channels: set[Channel], job_id: int, node_id: bytes = b"") -> None:
        self.channels = channels
        self.job_id = job_id  # a driver's: its job's logs, errors and group states
        self.node_id = node_id  # a raylet's: its own resource views are not sent back
        self._buffer: deque[PubMessage] = deque()
        self._event = asyncio.Event()
        self.dropped = 0

    def offer(self, message: PubMessage) -> None:
        if len(self._buffer) >= MAX_BUFFERED:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(message)
        self._event.set()

    async def messages(self) -> AsyncIterator[PubMessage]:
        while True:
            await self._event.wait()
            self._event.clear()
            if self.dropped:
                lost, self.dropped = self.dropped, 0
                yield PubMessage(
                    channel=Channel.LOGS,
                    logs=LogBatch(lines=[f"[gcs: {lost} messages dropped for a slow subscriber]"]),
                    dropped=lost,
                )
            while self._buffer:
                yield self._buffer.popleft()


class PubSub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()

    def subscribe(self, channels: set[Channel], job_id: int, node_id: bytes = b"") -> Subscriber:
        sub = Subscriber(channels, job_id, node_id)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def publish(self, message: PubMessage, skip_nodes: Collection[bytes] = ()) -> None:
        """To every subscriber of the channel but the raylets of ``skip_nodes``
        (told another way)."""
        for sub in self._subscribers:
            if message.channel not in sub.channels:
                continue
            if sub.node_id and sub.node_id in skip_nodes:
                continue
            logs = message.logs if message.channel is Channel.LOGS else None
            if logs is not None and logs.job_id != sub.job_id:
                continue
            error = message.error if message.channel is Channel.ERRORS else None
            if error is not None and error.job_id not in (0, sub.job_id):
                continue
            group = message.placement_group if message.channel is Channel.GROUP_STATES else None
            if group is not None and group.job_id != sub.job_id:
                continue
            batch = message.resources if message.channel is Channel.RESOURCES else None
            if batch is not None and sub.node_id:
                # A raylet knows its own resources; with many groups' bundles
                # they are long, and every one of a single node's batches.
                views = [v for v in batch.views if v.node_id != sub.node_id]
                if not views:
                    continue
                if len(views) < len(batch.views):
                    sub.offer(
                        PubMessage(channel=message.channel, resources=ResourceBatch(views=views))
                    )
                    continue
            sub.offer(message)
