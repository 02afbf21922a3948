"""The gcs as raylets and core workers call it: through a gcs restart.

When the cluster's gcs keeps its tables in a durable storage, a dead gcs is
started again on the same address (``runtime start --head`` supervises it).
:class:`GcsClient` is the generated stub whose unary calls, when the gcs
cannot be reached (refused, reset, unavailable), are tried again with backoff
until ``reconnect_s`` has passed; then the last error is raised. With
``reconnect_s == 0`` (a gcs on ``memory`` storage, which cannot come back)
calls fail at once, as before. Subscriptions (streams) are not retried here:
their owners resubscribe (the raylet's ``_gcs_watch``, the core worker's
``ClusterWatch``).

Calls retried this way must be safe to repeat: the gcs may have done one just
before it died. They are (idempotent, or deduplicated by the gcs: an actor's
creation by its id), except a job's registration, which may then count a
job twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, TypeVar

import betterproto2
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ..protocol.rt import (
    CreatePlacementGroupReply,
    CreatePlacementGroupsRequest,
    Empty,
    GcsStub,
    KvGetRequest,
    ListPlacementGroupsReply,
    PlacementGroupInfo,
    PlacementGroupReply,
    PlacementGroupRequest,
    RemovePlacementGroupsRequest,
)
from .batching import Batcher

logger = logging.getLogger(__name__)

Message = TypeVar("Message", bound=betterproto2.Message)

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0
#: What the gcs answers with while it starts again, or lets a client find out.
_UNAVAILABLE = (Status.UNAVAILABLE, Status.UNKNOWN)
#: The kv entry where the gcs says what keeps its tables (``memory``: a death is final).
STORAGE_KV = ("cluster", b"storage")


def unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the gcs could not be reached (not what it answered)."""
    if isinstance(error, GRPCError):
        return error.status in _UNAVAILABLE
    if isinstance(error, TimeoutError):
        return False  # the caller's own bound
    return isinstance(error, ConnectionError | StreamTerminatedError | OSError | EOFError)


class GcsClient(GcsStub):
    """``GcsStub`` whose unary calls wait for a restarted gcs (see the module)."""

    def __init__(self, channel: Any, reconnect_s: float = 0.0) -> None:
        super().__init__(channel)
        self.reconnect_s = reconnect_s
        self._group_creations = Batcher(self._create_groups)
        self._group_removals: Batcher[bytes, None] = Batcher(self._remove_groups)
        # This process's group removals not answered yet. Removing returns at
        # once (as Ray documents it); what the process asks of groups next, and
        # its actor calls, wait for these, so that they see the removals.
        self.removals: set[asyncio.Future[None]] = set()

    async def create_placement_group(self, info: PlacementGroupInfo) -> CreatePlacementGroupReply:
        """One group's creation, sent with the others made at the same time (a
        loop creating a hundred groups makes a few calls, not a hundred)."""
        return await self._group_creations.call(info)

    async def _create_groups(
        self, infos: list[PlacementGroupInfo]
    ) -> list[CreatePlacementGroupReply]:
        await self.removals_landed()  # (a name a removed group held is free)
        request = CreatePlacementGroupsRequest(placement_groups=infos)
        return (await self.create_placement_groups(request)).results

    def remove_placement_group_soon(self, pg_id: bytes) -> None:
        """Sends the group's removal with the others made meanwhile, and returns
        (on the loop). No caller waits for it: a failure is logged."""
        removal = asyncio.ensure_future(self._group_removals.call(pg_id))
        self.removals.add(removal)
        removal.add_done_callback(functools.partial(self._removal_done, pg_id))

    def _removal_done(self, pg_id: bytes, removal: asyncio.Future[None]) -> None:
        self.removals.discard(removal)
        if not removal.cancelled() and removal.exception() is not None:
            logger.error(
                "placement group %s could not be removed: %s", pg_id.hex(), removal.exception()
            )

    async def removals_landed(self) -> None:
        """Returns once the gcs has answered every removal sent before."""
        if self.removals:
            await asyncio.wait(list(self.removals))

    async def _remove_groups(self, pg_ids: list[bytes]) -> list[None]:
        await self.remove_placement_groups(RemovePlacementGroupsRequest(placement_group_ids=pg_ids))
        return [None] * len(pg_ids)

    async def wait_placement_group(
        self, message: PlacementGroupRequest, **kwargs: Any
    ) -> PlacementGroupReply:
        await self.removals_landed()
        return await super().wait_placement_group(message, **kwargs)

    async def get_placement_group(
        self, message: PlacementGroupRequest, **kwargs: Any
    ) -> PlacementGroupReply:
        await self.removals_landed()
        return await super().get_placement_group(message, **kwargs)

    async def list_placement_groups(
        self, message: Empty | None = None, **kwargs: Any
    ) -> ListPlacementGroupsReply:
        await self.removals_landed()
        return await super().list_placement_groups(message, **kwargs)

    async def _unary_unary(
        self, route: str, request: Any, response_type: type[Message], **kwargs: Any
    ) -> Message:
        delay = RETRY_FIRST_S
        give_up: float | None = None
        while True:
            try:
                reply: Message = await super()._unary_unary(route, request, response_type, **kwargs)
                return reply
            except Exception as e:
                if self.reconnect_s <= 0 or not unreachable(e):
                    raise
                now = time.monotonic()
                if give_up is None:
                    give_up = now + self.reconnect_s
                    logger.info("the gcs is unreachable (%s); %s waits for it", e, route)
                if now >= give_up:
                    raise
                await asyncio.sleep(min(delay, give_up - now))
                delay = min(delay * 2, RETRY_MAX_S)

    async def wait_reachable(self) -> bool:
        """Waits (within ``reconnect_s``) until the gcs answers; whether it did."""
        try:
            await self.get_all_nodes(Empty())
        except Exception as e:
            if unreachable(e):
                return False
            raise
        return True

    async def learn_durability(self, reconnect_s: float) -> None:
        """Rides through gcs restarts (for ``reconnect_s``) if the gcs's storage
        outlives it, as the gcs says in its kv."""
        namespace, key = STORAGE_KV
        reply = await self.kv_get(KvGetRequest(namespace=namespace, key=key))
        durable = reply.found and reply.value not in (b"", b"memory")
        self.reconnect_s = reconnect_s if durable else 0.0
