"""The gcs's publish/subscribe buffers and who hears what (no processes)."""

from __future__ import annotations

import asyncio

from runtime.gcs._pubsub import MAX_BUFFERED, PubSub, Subscriber
from runtime.protocol.rt import (
    Channel,
    PlacementGroupInfo,
    PlacementGroupState,
    PubMessage,
)


def _group(job_id: int) -> PubMessage:
    info = PlacementGroupInfo(
        placement_group_id=bytes(16), state=PlacementGroupState.CREATED, job_id=job_id
    )
    return PubMessage(channel=Channel.GROUP_STATES, placement_group=info)


async def _buffered(sub: Subscriber, count: int) -> list[PubMessage]:
    out: list[PubMessage] = []
    stream = sub.messages()
    while len(out) < count:
        out.append(await asyncio.wait_for(anext(stream), 5))
    return out


async def test_group_states_reach_their_jobs_driver_only() -> None:
    pubsub = PubSub()
    mine = pubsub.subscribe({Channel.GROUP_STATES}, job_id=1)
    other = pubsub.subscribe({Channel.GROUP_STATES}, job_id=2)
    raylet = pubsub.subscribe({Channel.PLACEMENT_GROUPS}, job_id=0, node_id=b"n" * 16)
    pubsub.publish(_group(1))
    [heard] = await _buffered(mine, 1)
    assert heard.placement_group is not None and heard.placement_group.job_id == 1
    assert not other._buffer and not raylet._buffer


async def test_a_slow_subscriber_is_told_how_many_messages_it_lost() -> None:
    pubsub = PubSub()
    sub = pubsub.subscribe({Channel.GROUP_STATES}, job_id=1)
    for _ in range(MAX_BUFFERED + 3):
        pubsub.publish(_group(1))
    notice, first = await _buffered(sub, 2)
    assert notice.dropped == 3 and notice.channel is Channel.LOGS
    assert first.channel is Channel.GROUP_STATES
