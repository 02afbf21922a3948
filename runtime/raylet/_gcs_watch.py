"""The raylet's subscription to the gcs: what other nodes, jobs and owners do.

A mixin of :class:`~._server.Raylet`. The stream is also this node's
liveness at the gcs: when it ends, the gcs marks the node dead. When the gcs
goes, the raylet keeps running what it runs and, if the gcs's storage
outlives it, waits for it to come back (``gcs_reconnect_timeout_s``): then it
registers again with the same node id and resubscribes; its reports, held
meanwhile, follow. Otherwise (or past the timeout) it stops (``gcs_lost``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections.abc import Iterable

from .._private import rpc
from .._private.gcs_client import GcsClient
from .._private.ids import NODE_PREFIX, node_prefix
from ..protocol.rt import (
    Channel,
    NodeInfo,
    PubMessage,
    RegisterNodeRequest,
    SubscribeRequest,
    WorkerInfo,
)
from ._cluster_view import ClusterView
from ._metrics import UserMetricTable
from ._object_manager import ObjectManager
from ._reports import GcsReports
from ._scheduler import Action, LeaseScheduler
from .store import StoreServer

logger = logging.getLogger(__name__)

CHANNELS = [
    Channel.JOBS,
    Channel.NODES,
    Channel.RESOURCES,
    Channel.WORKERS,
    Channel.PLACEMENT_GROUPS,
]


class GcsWatch:
    _gcs: GcsClient | None
    node_id: bytes
    view: ClusterView
    scheduler: LeaseScheduler
    object_store: StoreServer
    object_manager: ObjectManager
    reports: GcsReports
    gcs_lost: asyncio.Event
    _drivers: dict[int, bytes]
    _driver_info: dict[int, WorkerInfo]
    user_metrics: UserMetricTable

    @abstractmethod
    def _apply(self, actions: Iterable[Action]) -> None: ...

    @abstractmethod
    def _reconsider(self) -> None: ...

    @abstractmethod
    def _totals_changed(self, actions: list[Action]) -> None: ...

    @abstractmethod
    def _node_info(self) -> NodeInfo: ...

    @abstractmethod
    async def _refresh_nodes(self) -> None: ...

    async def _watch_gcs(self) -> None:
        """Follows the cluster's events until the gcs is gone for good (or marks
        this node dead)."""
        gcs = self._gcs
        assert gcs is not None
        request = SubscribeRequest(channels=CHANNELS, owns_node=self.node_id)
        while True:
            try:
                async for message in gcs.subscribe(request):
                    if not self._on_event(message):
                        logger.error("the gcs marked this node dead; stopping")
                        self.gcs_lost.set()
                        return
                cause: BaseException = ConnectionError("the gcs ended the subscription")
            except rpc.CONNECTION_ERRORS as e:
                cause = e
            if not await self._reconnect(gcs, cause):
                logger.error("lost the gcs (%s); stopping", cause)
                self.gcs_lost.set()
                return

    async def _reconnect(self, gcs: GcsClient, cause: BaseException) -> bool:
        """Registers this node again with a restarted gcs; False if none came back."""
        if gcs.reconnect_s <= 0:
            return False
        logger.warning(
            "lost the gcs (%s); waiting up to %.0f s for it to come back", cause, gcs.reconnect_s
        )
        try:
            await gcs.register_node(RegisterNodeRequest(node=self._node_info()))
            await self._refresh_nodes()
        except rpc.CONNECTION_ERRORS:
            return False
        logger.info("the gcs is back; node %s registered again", self.node_id.hex()[:8])
        self.reports.resources_changed()
        self._reconsider()
        return True

    def _on_event(self, message: PubMessage) -> bool:
        """Applies one event; False when it says this node is dead."""
        if message.channel is Channel.NODES and message.node is not None:
            if message.node.node_id == self.node_id and not message.node.alive:
                return False
            if self.view.update_node(message.node):
                self._reconsider()
                if not message.node.alive:
                    self._node_died(message.node.node_id)
        elif message.channel is Channel.WORKERS and message.workers is not None:
            if message.workers.node_id != self.node_id:
                for worker_id in message.workers.worker_ids:
                    self.object_store.owner_died(worker_id)
                    # Leases it held here end too.
                    self._apply(self.scheduler.owner_died(worker_id, time.monotonic()))
        elif message.channel is Channel.RESOURCES and message.resources is not None:
            for view in message.resources.views:
                if view.node_id != self.node_id:
                    self.view.update_resources(view)
            if self.scheduler.queue:
                self._reconsider()
        elif message.channel is Channel.PLACEMENT_GROUPS and message.placement_group:
            pg = message.placement_group.placement_group_id.hex()
            self._totals_changed(self.scheduler.group_removed(pg))
        elif message.channel is Channel.JOBS and message.job and message.job.finished:
            self._job_finished(message.job.job_id)
        return True

    def _job_finished(self, job_id: int) -> None:
        self._apply(self.scheduler.job_finished(job_id))
        self._driver_info.pop(job_id, None)
        driver = self._drivers.pop(job_id, None)
        if driver is not None:
            self.user_metrics.worker_died(driver)
            self.object_store.owner_died(driver)
            self.reports.worker_died(driver)
            self._apply(self.scheduler.owner_died(driver, time.monotonic()))

    def _node_died(self, node_id: bytes) -> None:
        """Objects owned by the dead node's workers and drivers die with them."""
        prefix = node_id[:NODE_PREFIX]
        self.object_store.owners_died(lambda owner: node_prefix(owner) == prefix)
        self.object_manager.node_died(node_id)
        self._apply(
            self.scheduler.owners_died(lambda o: node_prefix(o) == prefix, time.monotonic())
        )
