"""The raylet's lease RPCs: requests, cancels, returns, and workers' registrations.

A mixin of :class:`~._server.Raylet`: the decisions are the scheduler's
(:class:`~._scheduler.LeaseScheduler`) and the cluster view's; these handlers
check what they are sent, ask, and carry out the actions they get back.

Invariant: every waiting request's future is in ``_waiting`` under the
scheduler's id until it is answered, withdrawn or cancelled; an owner's id in
``_by_owner_id`` lives exactly as long as its request's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from abc import abstractmethod
from collections.abc import Iterable

from .._private import labels as node_labels
from .._private import placement, rpc, runtime_env
from .._private import resources as res
from .._private.config import Config
from .._private.gcs_client import GcsClient
from .._private.ids import NODE_PREFIX, node_prefix
from ..protocol.rt import (
    CancelLeaseRequest,
    Empty,
    LeaseReply,
    LeaseRequest,
    LeaseStatus,
    RegisterWorkerReply,
    RegisterWorkerRequest,
    ReturnWorkerRequest,
    SchedulingStrategy,
    WorkerBlockedRequest,
)
from . import _spillback as spillback
from ._cluster_view import ClusterView, Decision, Placement
from ._reports import GcsReports
from ._scheduler import Action, LeaseScheduler
from ._scheduler import LeaseRequest as PendingRequest
from ._worker_pool import WorkerPool

logger = logging.getLogger(__name__)


class LeaseHandlers:
    config: Config
    node_id: bytes
    scheduler: LeaseScheduler
    reports: GcsReports
    view: ClusterView
    store_socket: str
    labels: dict[str, str]
    _request_ids: itertools.count[int]
    _waiting: dict[int, asyncio.Future[LeaseReply]]
    _by_owner_id: dict[bytes, int]
    _register_deadlines: dict[bytes, asyncio.TimerHandle]
    _drivers: dict[int, bytes]
    _pool: WorkerPool | None

    @abstractmethod
    def _apply(self, actions: Iterable[Action]) -> None: ...

    @abstractmethod
    def _require_gcs(self) -> GcsClient: ...

    async def request_worker_lease(self, message: LeaseRequest) -> LeaseReply:
        strategy = message.strategy
        selector = strategy.label_selector if strategy is not None else {}
        bad = (
            res.invalid(message.resources)
            or runtime_env.invalid_wire(message.runtime_env)
            or node_labels.wire_error(selector, selector=True)
            or _fallback_error(strategy)
        )
        if not bad and not self._owner_known(message.owner_id):
            # A node that just joined may hear of a request before it has heard
            # of the owner's node: look the nodes up once before refusing.
            with contextlib.suppress(*rpc.CONNECTION_ERRORS):
                await self._refresh_nodes()
            if not self._owner_known(message.owner_id):
                bad = "its owner is no live worker or driver of the cluster"
        if bad:
            return LeaseReply(status=LeaseStatus.FAILED, error=f"invalid lease request: {bad}")
        fixed = res.to_fixed(message.resources)
        decision = self._decide(fixed, message)
        if decision.placement is Placement.FAIL:
            # It may name a node that joined since this view was last told
            # (one that joined while the gcs restarted): look once more.
            with contextlib.suppress(*rpc.CONNECTION_ERRORS):
                await self._refresh_nodes()
            decision = self._decide(fixed, message)
        if decision.placement in (Placement.SPILL, Placement.FAIL):
            return spillback.redirect_reply(decision)
        req = PendingRequest(
            next(self._request_ids),
            message.job_id,
            fixed,
            message.task_name,
            detached=message.detached,
            owner=message.owner_id,
            strategy=message.strategy,
            spilled=message.spilled,
            env=message.runtime_env,
            elsewhere=not self.view.local_matches(fixed, message.strategy),
        )
        fut: asyncio.Future[LeaseReply] = asyncio.get_running_loop().create_future()
        self._waiting[req.request_id] = fut
        if message.request_id:
            self._by_owner_id[message.request_id] = req.request_id
        self._apply(self.scheduler.request(req))
        self.reports.resources_changed()  # a new demand, granted or not
        if decision.placement is Placement.INFEASIBLE and selector:
            logger.warning(
                "lease for %s needs a node whose labels match %s, and %s; it waits for a "
                "node that does",
                message.task_name,
                selector,
                res.describe(message.resources),
            )
        elif decision.placement is Placement.INFEASIBLE and not placement.groups_in(fixed):
            # (One for a placement group waits for the group to be placed.)
            logger.warning(
                "lease for %s needs %s, more than any node of the cluster has; it waits "
                "for a node that fits",
                message.task_name,
                res.describe(message.resources),
            )
        try:
            return await self._lease_reply(req, fut)
        finally:
            self._by_owner_id.pop(message.request_id, None)

    async def cancel_worker_lease(self, message: CancelLeaseRequest) -> Empty:
        internal = self._by_owner_id.get(message.request_id)
        if internal is not None and self.scheduler.cancel(internal):
            fut = self._waiting.pop(internal, None)
            if fut is not None and not fut.done():
                fut.set_result(LeaseReply(status=LeaseStatus.CANCELLED))
        return Empty()

    async def _lease_reply(
        self, req: PendingRequest, fut: asyncio.Future[LeaseReply]
    ) -> LeaseReply:
        try:
            return await fut
        except asyncio.CancelledError:
            # The owner went away (or gave up) while the request waited.
            self._waiting.pop(req.request_id, None)
            if fut.done() and not fut.cancelled() and fut.result().status is LeaseStatus.GRANTED:
                self._apply(
                    self.scheduler.return_lease(fut.result().lease_id, False, time.monotonic())
                )
            else:
                self.scheduler.cancel(req.request_id)
            raise

    async def return_worker(self, message: ReturnWorkerRequest) -> Empty:
        self._apply(
            self.scheduler.return_lease(
                message.lease_id, message.disconnect, time.monotonic(), message.worker_exiting
            )
        )
        self.reports.resources_changed()
        return Empty()

    async def register_worker(self, message: RegisterWorkerRequest) -> RegisterWorkerReply:
        handle = self._register_deadlines.pop(message.worker_id, None)
        if handle is not None:
            handle.cancel()
        if message.setup_error:
            logger.warning("a worker's setup hook failed: %s", message.setup_error[:2000])
            self._apply(self.scheduler.env_failed(message.worker_id, message.setup_error[:20000]))
            assert self._pool is not None
            self._pool.kill(message.worker_id)
            return RegisterWorkerReply(node_id=self.node_id)
        self._apply(
            self.scheduler.worker_registered(
                message.worker_id, message.port, message.pid, time.monotonic(), message.push_port
            )
        )
        return RegisterWorkerReply(
            node_id=self.node_id, store_socket=self.store_socket, node_labels=self.labels
        )

    async def notify_worker_blocked(self, message: WorkerBlockedRequest) -> Empty:
        self._apply(self.scheduler.set_blocked(message.worker_id, message.blocked))
        self.reports.resources_changed()
        return Empty()

    def _decide(self, fixed: res.Fixed, message: LeaseRequest) -> Decision:
        return self.view.decide(
            fixed,
            message.strategy,
            spilled=message.spilled,
            local_available=self.scheduler.uncommitted(),
        )

    async def _refresh_nodes(self) -> None:
        """The cluster view takes every node as the gcs knows it now."""
        for node in (await self._require_gcs().get_all_nodes(Empty())).nodes:
            self.view.update_node(node)

    def _owner_known(self, owner: bytes) -> bool:
        """A lease's owner is a live worker or driver: registered here if of this
        node, else of a live node. (The gcs leases for actors with no owner.)"""
        prefix = node_prefix(owner)
        if not owner or prefix != self.node_id[:NODE_PREFIX]:
            return not owner or any(n.node_id[:NODE_PREFIX] == prefix for n in self.view.alive())
        return self.scheduler.live_worker(owner) or owner in self._drivers.values()


def _fallback_error(strategy: SchedulingStrategy | None) -> str:
    """Why a request's fallback selectors are malformed ("" if they are not)."""
    if strategy is None or not strategy.fallback:
        return ""
    if len(strategy.fallback) > node_labels.MAX_ENTRIES:
        return f"more than {node_labels.MAX_ENTRIES} fallback selectors"
    for fallback in strategy.fallback:
        bad = node_labels.wire_error(fallback.conditions, selector=True)
        if bad:
            return f"a fallback selector: {bad}"
    return ""
