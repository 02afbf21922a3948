"""The gcs's placement groups: gang reservations of bundles across nodes.

A group moves through ``PENDING -> CREATED (-> RESCHEDULING -> CREATED)* ->
REMOVED``. One placing coroutine takes the groups that wait, in the order
they came, and starts an attempt for each (at most one per group at a time):
it chooses nodes (``_bundle_policy``) on the gcs's view, debited at once so
that the next group's choice counts this one, asks each chosen raylet to
*prepare* its bundles (set the resources aside), and *commits* them all only
when every prepare succeeded; on any failure it returns what was prepared,
credits the view back, and tries again when resources change. So a group is
reserved wholly or not at all, and nothing stays reserved for a group that
failed. The prepares (and returns) bound for one node at once share a call.

Invariants:
- a bundle's ``node_id`` is set iff its node holds it (prepared or committed;
  one whose commit failed is returned and placed again);
- ``state is CREATED`` iff every bundle has a live node and is committed;
- a group is in ``_unplaced`` iff it is PENDING or RESCHEDULING, and in
  ``_placing`` iff an attempt for it is in flight;
- a REMOVED group holds nothing on any node: its bundles are returned, and
  every raylet refuses leases and prepares for it from then on.

Each change of a group is written through the gcs's storage (``save``). A
gcs started again ``recover``s the groups: created and removed ones as they
were; one that was being placed first has every node give back what it may
have prepared for it, then is placed again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._private import labels as node_labels
from .._private import placement, rpc
from .._private import resources as res
from .._private.batching import Batcher
from .._private.tasks import TaskSet
from ..protocol.rt import (
    Bundle,
    BundlesBatch,
    BundlesRequest,
    Channel,
    CreatePlacementGroupReply,
    NodeInfo,
    PlacementGroupInfo,
    PlacementGroupReply,
    PlacementGroupState,
    PrepareBundlesBatch,
    PrepareBundlesReply,
    PrepareBundlesRequest,
    PubMessage,
    RayletStub,
)
from ._bundle_policy import NodeRoom, Outcome, place

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: A placement group id's length.
ID_BYTES = 16
#: How long one prepare or commit may take before the node counts as failed.
_RPC_TIMEOUT_S = 10.0
#: How long a wait or removal of an unknown group waits for it to be created.
_REGISTRATION_WAIT_S = 10.0
#: How long a node's returns gather before they are sent.
_RETURN_LINGER_S = 0.005
#: Removed groups kept for ``placement_group_table`` (the oldest go first, from
#: the storage too).
_REMOVED_KEPT = 10_000
#: Retry delays after a prepare failed (the view was stale): doubling, capped.
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0


@dataclass(eq=False)
class GroupRecord:
    info: PlacementGroupInfo
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    warned: bool = False  # told the log it is infeasible

    @property
    def removed(self) -> bool:
        return self.info.state is PlacementGroupState.REMOVED

    def wake_waiters(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class PlacementGroupManager:
    def __init__(
        self,
        *,
        channels: rpc.ChannelPool,
        nodes: Callable[[], list[NodeInfo]],
        publish: Callable[[PubMessage, Collection[bytes]], None],
        group_removed: Callable[[bytes], Awaitable[None]],
        save: Callable[[bytes, bytes], Coroutine[Any, Any, None]] | None = None,
        forget: Callable[[bytes], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self._save = save
        self._forget = forget
        self._channels = channels
        self._nodes = nodes
        self._publish = publish
        self._group_removed = group_removed
        self.groups: dict[bytes, GroupRecord] = {}
        self._names: dict[tuple[str, str], bytes] = {}
        self._removed: collections.deque[bytes] = collections.deque()
        # The groups waiting to be placed (PENDING or RESCHEDULING), in order.
        self._unplaced: dict[bytes, None] = {}
        # Waits (and removals) for groups whose creation has not arrived yet.
        self._registering: dict[bytes, list[asyncio.Future[None]]] = {}
        self._wake = asyncio.Event()
        self._retry_delay = _RETRY_FIRST_S
        self._tasks = TaskSet()
        self._placer: asyncio.Task[None] | None = None
        # Groups with a placing attempt in flight (their prepares sent).
        self._placing: set[bytes] = set()
        # Per node: what is asked of it at once goes in one call.
        self._prepares: dict[bytes, Batcher[PrepareBundlesRequest, PrepareBundlesReply]] = {}
        self._returns: dict[bytes, Batcher[BundlesRequest, None]] = {}

    def start(self) -> None:
        self._placer = self._tasks.spawn(self._place_forever())

    async def close(self) -> None:
        await self._tasks.close()

    # -- durability -------------------------------------------------------------------
    def _persist(self, record: GroupRecord) -> None:
        """Writes the group as it is now (after the writes asked before it)."""
        if self._save is not None:
            info = record.info
            self._tasks.spawn(self._save(info.placement_group_id, bytes(info)))

    async def saved(self, pg_id: bytes) -> None:
        record = self.groups.get(pg_id)
        if record is not None and self._save is not None:
            await self._save(pg_id, bytes(record.info))

    async def recover(self, infos: list[PlacementGroupInfo]) -> None:
        """The groups a previous gcs kept (before ``start``): a group caught being
        placed has what its nodes may hold for it given back, then waits again."""
        returns = []
        for info in infos:
            pg_id = info.placement_group_id
            record = self.groups[pg_id] = GroupRecord(info)
            if record.removed:
                self._removed.append(pg_id)
                continue
            if info.name:
                self._names[(info.namespace, info.name)] = pg_id
            if info.state is PlacementGroupState.CREATED:
                continue
            unplaced = [b.index for b in info.bundles if not b.node_id]
            everything = len(unplaced) == len(info.bundles)
            indexes = [] if everything else unplaced
            returns += [self._return(n.node_id, pg_id, indexes) for n in self._nodes() if n.alive]
            self._unplaced[pg_id] = None
        await asyncio.gather(*returns)
        self._wake.set()
        logger.info("recovered %d placement group(s)", len(infos))

    def _announce(self, info: PlacementGroupInfo) -> None:
        """Tells the group's job's driver its new state (its waits read it)."""
        state = PlacementGroupInfo(
            placement_group_id=info.placement_group_id, state=info.state, job_id=info.job_id
        )
        self._publish(PubMessage(channel=Channel.GROUP_STATES, placement_group=state), ())

    # -- requests -----------------------------------------------------------------
    def create(self, info: PlacementGroupInfo) -> CreatePlacementGroupReply:
        if info.placement_group_id in self.groups:
            return CreatePlacementGroupReply(ok=True)  # a retried request
        error = _invalid(info)
        if error:
            return CreatePlacementGroupReply(ok=False, error=error)
        if info.name:
            key = (info.namespace, info.name)
            taken = self.groups.get(self._names.get(key, b""))
            if taken is not None and not taken.removed:
                return CreatePlacementGroupReply(
                    ok=False,
                    error=f"a placement group named {info.name!r} already exists in "
                    f"namespace {info.namespace!r}",
                )
            self._names[key] = info.placement_group_id
        info.state = PlacementGroupState.PENDING
        self._unplaced[info.placement_group_id] = None
        info.create_time = time.time()
        for bundle in info.bundles:
            bundle.node_id = b""
        record = self.groups[info.placement_group_id] = GroupRecord(info)
        for arrived in self._registering.pop(info.placement_group_id, []):
            if not arrived.done():
                arrived.set_result(None)
        self._wake.set()
        outcome = self._outcome(info)
        if outcome.infeasible:
            record.warned = True
            info.pending_reason = f"infeasible: {outcome.reason}"
            logger.warning("placement group %s cannot be placed: %s", _label(info), outcome.reason)
            return CreatePlacementGroupReply(ok=True, warning=outcome.reason)
        return CreatePlacementGroupReply(ok=True)

    async def remove(self, pg_id: bytes) -> None:
        """Removes the group; returns once its actors are killed (its nodes give
        its bundles back meanwhile)."""
        record = self.groups.get(pg_id) or await self._registered(pg_id)
        if record is None or record.removed:
            return
        info = record.info
        info.state = PlacementGroupState.REMOVED
        self._unplaced.pop(pg_id, None)
        holders = {b.node_id for b in info.bundles if b.node_id}
        for bundle in info.bundles:
            bundle.node_id = b""
        if info.name and self._names.get((info.namespace, info.name)) == pg_id:
            del self._names[(info.namespace, info.name)]
        self._persist(record)
        # Every raylet: requests waiting for the group fail, later ones too
        # (its id and state say it all; the bundles would only cost encoding).
        # Those holding its bundles learn it from their return, below.
        removed = PlacementGroupInfo(placement_group_id=pg_id, state=info.state)
        message = PubMessage(channel=Channel.PLACEMENT_GROUPS, placement_group=removed)
        self._publish(message, holders)
        self._announce(info)
        record.wake_waiters()
        logger.debug("placement group %s removed", _label(info))
        self._removed.append(pg_id)
        while len(self._removed) > _REMOVED_KEPT:
            forgotten = self._removed.popleft()
            self.groups.pop(forgotten, None)
            if self._forget is not None:
                self._tasks.spawn(self._forget(forgotten))
        for node_id in holders:  # (which ends the leases of its tasks)
            self._tasks.spawn(self._return(node_id, pg_id, []))
        # Answered once its actors are dead for good, with the cause.
        await self._group_removed(pg_id)

    async def wait(self, pg_id: bytes, timeout_s: float) -> PlacementGroupReply:
        record = self.groups.get(pg_id) or await self._registered(pg_id)
        if record is None:
            return PlacementGroupReply(found=False)
        if record.info.state not in (PlacementGroupState.CREATED, PlacementGroupState.REMOVED):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            record.waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, None if timeout_s < 0 else timeout_s)
            except TimeoutError:
                pass
        # Its state is the answer (its info would only cost encoding).
        return PlacementGroupReply(found=True, state=record.info.state)

    async def _registered(self, pg_id: bytes) -> GroupRecord | None:
        """A group not known yet may be on its way: an unnamed group's creator
        does not wait for CreatePlacementGroup's answer. Waits for it a little."""
        if len(pg_id) != ID_BYTES:
            return None  # not an id: nothing will come
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._registering.setdefault(pg_id, []).append(arrived)
        try:
            await asyncio.wait_for(arrived, _REGISTRATION_WAIT_S)
        except TimeoutError:
            return None
        finally:
            waiters = self._registering.get(pg_id, [])
            if arrived in waiters:
                waiters.remove(arrived)
            if not waiters:
                self._registering.pop(pg_id, None)
        return self.groups.get(pg_id)

    def get(self, pg_id: bytes, name: str, namespace: str) -> PlacementGroupReply:
        if not pg_id:
            pg_id = self._names.get((namespace, name), b"")
        record = self.groups.get(pg_id)
        if record is None:
            return PlacementGroupReply(found=False)
        return PlacementGroupReply(found=True, placement_group=record.info, state=record.info.state)

    def state_of(self, pg_id: bytes) -> PlacementGroupState | None:
        record = self.groups.get(pg_id)
        return record.info.state if record is not None else None

    # -- cluster events -------------------------------------------------------------
    def resources_changed(self) -> None:
        """A node joined, reported or freed resources: waiting groups may fit now."""
        if self._unplaced:
            self._wake.set()

    def node_died(self, node_id: bytes) -> None:
        """Bundles on a dead node are placed again (elsewhere, by the strategy)."""
        # (A call in flight to it fails on its own.)
        self._prepares.pop(node_id, None)
        self._returns.pop(node_id, None)
        for record in self.groups.values():
            info = record.info
            lost = [b for b in info.bundles if b.node_id == node_id]
            if not lost or record.removed:
                continue
            for bundle in lost:
                bundle.node_id = b""
            if info.state is PlacementGroupState.CREATED:
                info.state = PlacementGroupState.RESCHEDULING
                self._announce(info)
            self._unplaced[info.placement_group_id] = None
            self._persist(record)
            logger.warning(
                "placement group %s lost %d bundle(s) with node %s; rescheduling them",
                _label(info),
                len(lost),
                node_id.hex()[:8],
            )
        self._wake.set()

    def job_finished(self, job_id: int) -> None:
        """A group that is not detached ends with the job that made it."""
        for record in list(self.groups.values()):
            if record.info.job_id == job_id and not record.info.detached:
                self._tasks.spawn(self.remove(record.info.placement_group_id))

    # -- placing --------------------------------------------------------------------
    def _waiting(self) -> list[GroupRecord]:
        return [self.groups[pg_id] for pg_id in self._unplaced]

    async def _place_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # In the order they came, each decided on the view its elders
            # left (debited as they are decided), their prepares in flight
            # together; one that must wait does not hold back the others (a
            # small group may fit where a big one does not).
            for record in self._waiting():
                pg_id = record.info.placement_group_id
                if not record.removed and pg_id not in self._placing:
                    self._placing.add(pg_id)
                    self._tasks.spawn(self._attempt(record))

    async def _attempt(self, record: GroupRecord) -> None:
        try:
            await self._place(record)
        finally:
            self._placing.discard(record.info.placement_group_id)

    async def _place(self, record: GroupRecord) -> bool:
        """One attempt at the group's unplaced bundles; False if it must wait."""
        info = record.info
        live = [n for n in self._nodes() if n.alive]
        outcome = self._outcome(info)
        if not outcome.placed:
            info.pending_reason = ("infeasible: " if outcome.infeasible else "") + outcome.reason
            if outcome.infeasible and not record.warned:
                record.warned = True
                logger.warning(
                    "placement group %s cannot be placed: %s; it waits for nodes that fit",
                    _label(info),
                    outcome.reason,
                )
            return False
        by_node: dict[bytes, list[int]] = {}
        for index, node_id in outcome.assignment.items():
            by_node.setdefault(node_id, []).append(index)
        nodes = {n.node_id: n for n in live}
        bundles = {b.index: b for b in info.bundles}
        # Each node's view as it stands, debited now so that the groups decided
        # next see it taken; a report replaces it (see ``_debit``).
        views = {node_id: nodes[node_id].resources_available for node_id in by_node}
        for node_id, indexes in by_node.items():
            _debit(nodes[node_id], [bundles[i] for i in indexes])
        # One node: nothing to agree on; it prepares and commits in one call.
        single = len(by_node) == 1
        results = await asyncio.gather(
            *(
                self._prepare(nodes[n], info, [bundles[i] for i in ix], commit=single)
                for n, ix in by_node.items()
            )
        )
        prepared = [n for n, ok in zip(by_node, results, strict=True) if ok]
        if record.removed or len(prepared) < len(by_node):
            # All or nothing: give back what was set aside, try again later.
            for node_id, indexes in by_node.items():
                if nodes[node_id].resources_available is views[node_id]:
                    _debit(nodes[node_id], [bundles[i] for i in indexes], credit=True)
            for node_id in prepared:
                indexes = [] if record.removed else by_node[node_id]
                self._tasks.spawn(self._return(node_id, info.placement_group_id, indexes))
            if not record.removed:
                info.pending_reason = "a node could not reserve its bundles; retrying"
                self._retry_later()
            return record.removed
        for node_id, indexes in by_node.items():
            for index in indexes:
                bundles[index].node_id = node_id
        self._persist(record)  # prepared: a restarted gcs knows where
        committed = (
            [True]
            if single
            else await asyncio.gather(
                *(self._commit(nodes[n], info.placement_group_id, ix) for n, ix in by_node.items())
            )
        )
        if record.removed:
            return True
        for (node_id, indexes), ok in zip(by_node.items(), committed, strict=True):
            if not ok:
                # Not committed there (hung, or died): given back, placed again.
                self._tasks.spawn(self._return(node_id, info.placement_group_id, indexes))
                for index in indexes:
                    bundles[index].node_id = b""
        alive = {n.node_id for n in self._nodes() if n.alive}
        for bundle in info.bundles:
            if bundle.node_id and bundle.node_id not in alive:
                bundle.node_id = b""  # died after committing: place it again
        if all(b.node_id for b in info.bundles):
            info.state = PlacementGroupState.CREATED
            self._unplaced.pop(info.placement_group_id, None)
            info.pending_reason = ""
            self._persist(record)
            self._retry_delay = _RETRY_FIRST_S
            self._announce(info)
            record.wake_waiters()
        else:
            self._wake.set()
        return True

    def _outcome(self, info: PlacementGroupInfo) -> Outcome:
        """Where the group's unplaced bundles would go now, or why they cannot."""
        # Only the names the bundles ask for (and those placing ranks nodes by)
        # matter: a node's full view also holds every group's bundles (4 names
        # per resource each), which would make every placement cost O(groups).
        names = {"CPU", "GPU"}.union(*(b.resources for b in info.bundles))
        return place(
            {b.index: res.to_fixed(b.resources) for b in info.bundles},
            {b.index: b.node_id for b in info.bundles if b.node_id},
            info.strategy,
            [
                NodeRoom(
                    n.node_id,
                    res.fixed_of(n.resources_available, names),
                    res.fixed_of(n.resources_total, names),
                    dict(n.labels),
                )
                for n in self._nodes()
                if n.alive
            ],
            {b.index: dict(b.label_selector) for b in info.bundles if b.label_selector},
        )

    def _retry_later(self) -> None:
        delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, _RETRY_MAX_S)
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _prepare(
        self, node: NodeInfo, info: PlacementGroupInfo, bundles: list[Bundle], *, commit: bool
    ) -> bool:
        batcher = self._batcher(self._prepares, node, _send_prepares)
        request = PrepareBundlesRequest(
            placement_group_id=info.placement_group_id, bundles=bundles, commit=commit
        )
        try:
            reply = await batcher.call(request)
        except rpc.CONNECTION_ERRORS as e:
            logger.info("preparing bundles on node %s failed: %s", node.node_id.hex()[:8], e)
            return False
        return reply.ok

    async def _commit(self, node: NodeInfo, pg_id: bytes, indexes: list[int]) -> bool:
        stub = RayletStub(self._channels.get(node.host, node.raylet_port))
        request = BundlesRequest(placement_group_id=pg_id, indexes=indexes)
        try:
            await asyncio.wait_for(stub.commit_bundles(request), _RPC_TIMEOUT_S)
        except rpc.CONNECTION_ERRORS as e:
            logger.info("committing bundles on node %s failed: %s", node.node_id.hex()[:8], e)
            return False
        return True

    async def _return(self, node_id: bytes, pg_id: bytes, indexes: list[int]) -> None:
        node = next((n for n in self._nodes() if n.node_id == node_id and n.alive), None)
        if node is None:
            return  # a dead node holds nothing
        # Removals come one by one (each caller waits for its own); their
        # returns, which no one waits for, may as well travel together.
        batcher = self._batcher(self._returns, node, _send_returns, _RETURN_LINGER_S)
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await batcher.call(BundlesRequest(placement_group_id=pg_id, indexes=indexes))

    def _batcher(
        self,
        table: dict[bytes, Batcher[T, R]],
        node: NodeInfo,
        send: Callable[[RayletStub, list[T]], Awaitable[list[R]]],
        linger_s: float = 0.0,
    ) -> Batcher[T, R]:
        """The node's batcher of one kind of call (made on first use)."""
        batcher = table.get(node.node_id)
        if batcher is None:
            stub = RayletStub(self._channels.get(node.host, node.raylet_port))
            batcher = table[node.node_id] = Batcher(
                functools.partial(send, stub), linger_s=linger_s
            )
        return batcher


async def _send_prepares(
    stub: RayletStub, groups: list[PrepareBundlesRequest]
) -> list[PrepareBundlesReply]:
    batch = PrepareBundlesBatch(groups=groups)
    return (await asyncio.wait_for(stub.prepare_bundles(batch), _RPC_TIMEOUT_S)).results


async def _send_returns(stub: RayletStub, groups: list[BundlesRequest]) -> list[None]:
    await asyncio.wait_for(stub.return_bundles(BundlesBatch(groups=groups)), _RPC_TIMEOUT_S)
    return [None] * len(groups)


def _invalid(info: PlacementGroupInfo) -> str:
    """Why the group cannot be made as sent, or "" (the API checks first; this
    guards the service against any other client)."""
    if len(info.placement_group_id) != ID_BYTES:
        return f"a placement group id has {ID_BYTES} bytes"
    if sorted(b.index for b in info.bundles) != list(range(len(info.bundles))):
        return "bundle indexes must be 0..n-1"
    for bundle in info.bundles:
        bad = res.invalid(bundle.resources)  # the check every resource boundary makes
        if bad:
            return f"bundle {bundle.index}: {bad}"
        amounts = bundle.resources.values()
        if not any(amounts) or any(placement.is_group_resource(k) for k in bundle.resources):
            return f"bundle {bundle.index} holds no resources it could reserve"
        bad = node_labels.wire_error(bundle.label_selector, selector=True)
        if bad:
            return f"bundle {bundle.index}'s label selector: {bad}"
    return ""


def _debit(node: NodeInfo, bundles: list[Bundle], *, credit: bool = False) -> None:
    """The gcs's view of the node, until its next report: the bundles' share
    taken as they are decided (given back if their prepare failed; a report
    since counts what the node really holds)."""
    sign = 1.0 if credit else -1.0
    for bundle in bundles:
        for name, amount in bundle.resources.items():
            node.resources_available[name] = node.resources_available.get(name, 0.0) + sign * amount


def _label(info: PlacementGroupInfo) -> str:
    short = info.placement_group_id.hex()[:12]
    return f"{info.name!r} ({short})" if info.name else short
