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
from ..protocol.rt import (
    BundlesBatch,
    BundlesRequest,
    Empty,
    PrepareBundlesBatch,
    PrepareBundlesBatchReply,
    PrepareBundlesReply,
)
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

    async def prepare_bundles(self, message: PrepareBundlesBatch) -> PrepareBundlesBatchReply:
        """Each group's prepare on its own (one failing does not fail the others)."""
        actions: list[Action] = []
        committed = False
        replies = []
        for group in message.groups:
            pg = group.placement_group_id.hex()
            bad = next(filter(None, (res.invalid(b.resources) for b in group.bundles)), "")
            if bad:
                replies.append(PrepareBundlesReply(ok=False, error=f"invalid bundle: {bad}"))
                continue
            bundles = [(b.index, res.to_fixed(b.resources)) for b in group.bundles]
            error = self.scheduler.prepare_bundles(pg, bundles)
            if not error and group.commit:
                actions += self.scheduler.commit_bundles(pg, [i for i, _ in bundles])
                committed = True
            replies.append(PrepareBundlesReply(ok=not error, error=error))
        if committed:
            self._totals_changed(actions)
        self.reports.resources_changed()
        return PrepareBundlesBatchReply(results=replies)

    async def commit_bundles(self, message: BundlesRequest) -> Empty:
        pg = message.placement_group_id.hex()
        self._totals_changed(self.scheduler.commit_bundles(pg, list(message.indexes)))
        return Empty()

    async def return_bundles(self, message: BundlesBatch) -> Empty:
        """Per group: given indexes, a rollback; none, the group was removed."""
        actions: list[Action] = []
        for group in message.groups:
            pg = group.placement_group_id.hex()
            if group.indexes:
                actions += self.scheduler.return_bundles(pg, list(group.indexes))
            else:
                actions += self.scheduler.group_removed(pg)
        self._totals_changed(actions)
        return Empty()

    def _totals_changed(self, actions: list[Action]) -> None:
        self._apply(actions)
        local = self.view.nodes.get(self.node_id)
        if local is not None:
            local.total = dict(self.scheduler.total)
        self.reports.resources_changed()
        self._reconsider()
