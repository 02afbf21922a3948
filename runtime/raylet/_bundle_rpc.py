"""The raylet's side of placement groups' two-phase commit, as RPC handlers.

A mixin of :class:`~._server.Raylet`: the bundle accounting itself is the
scheduler's (``prepare_bundles``, ``commit_bundles``, ``return_bundles``,
``group_removed``); these handlers check what they are sent, call it, and
make the changed totals known (the local view, the gcs, queued requests).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable

from .._private import resources as res
from ..protocol.rt import BundlesRequest, Empty, PrepareBundlesReply, PrepareBundlesRequest
from ._cluster_view import ClusterView
from ._reports import GcsReports
from ._scheduler import Action, LeaseScheduler


class BundleHandlers:
    scheduler: LeaseScheduler
    reports: GcsReports
    view: ClusterView
    node_id: bytes

    @abstractmethod
    def _apply(self, actions: Iterable[Action]) -> None: ...

    @abstractmethod
    def _reconsider(self) -> None: ...

    async def prepare_bundles(self, message: PrepareBundlesRequest) -> PrepareBundlesReply:
        pg = message.placement_group_id.hex()
        bad = next(filter(None, (res.invalid(b.resources) for b in message.bundles)), "")
        if bad:
            return PrepareBundlesReply(ok=False, error=f"invalid bundle: {bad}")
        bundles = [(b.index, res.to_fixed(b.resources)) for b in message.bundles]
        error = self.scheduler.prepare_bundles(pg, bundles)
        if not error and message.commit:
            self._totals_changed(self.scheduler.commit_bundles(pg, [i for i, _ in bundles]))
        self.reports.resources_changed()
        return PrepareBundlesReply(ok=not error, error=error)

    async def commit_bundles(self, message: BundlesRequest) -> Empty:
        pg = message.placement_group_id.hex()
        self._totals_changed(self.scheduler.commit_bundles(pg, list(message.indexes)))
        return Empty()

    async def return_bundles(self, message: BundlesRequest) -> Empty:
        """Given indexes: a rollback; none: the group was removed."""
        pg = message.placement_group_id.hex()
        if message.indexes:
            self._totals_changed(self.scheduler.return_bundles(pg, list(message.indexes)))
        else:
            self._totals_changed(self.scheduler.group_removed(pg))
        return Empty()

    def _totals_changed(self, actions: list[Action]) -> None:
        self._apply(actions)
        local = self.view.nodes.get(self.node_id)
        if local is not None:
            local.total = dict(self.scheduler.total)
        self.reports.resources_changed()
        self._reconsider()
