"""A raylet's view of the cluster, and where a lease request should go.

The gcs broadcasts node membership and every node's available resources;
each raylet keeps them here and decides, for each lease request, whether to
queue it locally or to *spill it back* to another node (the owner then asks
that node). The decision is synchronous and does no I/O.

The view is a little stale (resources are reported at most once per
``resource_report_period_s``), so spilling to a node subtracts the request
from that node's available resources at once: a burst of requests spreads
over the nodes with room instead of piling onto the first one, until the
node's next report corrects the figure.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from .._private import labels as node_labels
from .._private import resources as res
from .._private.resources import Fixed
from ..protocol.rt import NodeInfo, ResourceView, SchedulingStrategy, StrategyKind

logger = logging.getLogger(__name__)

#: A request's label selector ({}: any node).
Selector = Mapping[str, str]


class Placement(enum.Enum):
    LOCAL = "LOCAL"  # queue here; granted when local resources free up
    SPILL = "SPILL"  # ask ``node`` instead
    INFEASIBLE = "INFEASIBLE"  # no node can ever fit it: wait here for one to join
    FAIL = "FAIL"  # can never be granted as asked (``error`` says why)


@dataclass(frozen=True)
class Decision:
    placement: Placement
    node: NodeView | None = None
    error: str = ""


@dataclass(eq=False)
class NodeView:
    node_id: bytes
    host: str
    port: int
    total: Fixed
    available: Fixed
    alive: bool = True
    transfer_port: int = 0  # the object manager's port
    labels: dict[str, str] = field(default_factory=dict)

    def utilization(self) -> float:
        """The busiest resource's used fraction (0: idle), CPU and GPU only."""
        worst = 0.0
        for name in ("CPU", "GPU"):
            total = self.total.get(name, 0)
            if total:
                worst = max(worst, 1.0 - self.available.get(name, 0) / total)
        return worst


class ClusterView:
    def __init__(self, local_id: bytes, local_labels: dict[str, str] | None = None) -> None:
        self.local_id = local_id
        # This node's labels, known before the gcs tells the view of this node.
        self.local_labels = dict(local_labels or {})
        self.nodes: dict[bytes, NodeView] = {}
        self._spread_next = 0

    # -- updates ----------------------------------------------------------------
    def update_node(self, info: NodeInfo) -> bool:
        """A node joined or died; True if the set of live nodes changed."""
        node = self.nodes.get(info.node_id)
        if node is None:
            if not info.alive:
                return False
            self.nodes[info.node_id] = NodeView(
                info.node_id,
                info.host,
                info.raylet_port,
                res.to_fixed(info.resources_total),
                res.to_fixed(info.resources_available),
                transfer_port=info.object_manager_port,
                labels=dict(info.labels),
            )
            return True
        changed = node.alive != info.alive
        node.alive = info.alive
        if not info.alive:
            node.available = {}
        return changed

    def update_resources(self, view: ResourceView) -> None:
        """A node's report: what is free, and its totals (placement groups'
        bundles add and remove resources)."""
        node = self.nodes.get(view.node_id)
        if node is not None and node.alive:
            try:
                available, total = res.decode_sets(view.resources)
            except ValueError as e:  # the gcs checked it: not expected
                logger.warning("ignoring node %s's resources: %s", view.node_id.hex()[:8], e)
                return
            node.available = res.to_fixed(available)
            if total:
                node.total = res.to_fixed(total)

    def alive(self) -> list[NodeView]:
        return [n for n in self.nodes.values() if n.alive]

    def local_matches(self, request: Fixed, strategy: SchedulingStrategy | None) -> bool:
        """Whether this node meets the strategy's label selector (if any)."""
        if strategy is None or not (strategy.label_selector or strategy.fallback):
            return True
        return node_labels.matches(self.local_labels, self.selector_of(request, strategy))

    def selector_of(self, request: Fixed, strategy: SchedulingStrategy | None) -> Selector:
        """The label selector a request is placed by: its own, or the first of
        its fallbacks a node that could hold it matches (Ray's fallback_strategy)."""
        if strategy is None:
            return {}
        if not strategy.fallback:
            return strategy.label_selector
        able = (n.labels for n in self.alive() if res.fits(n.total, request))
        fallbacks = [f.conditions for f in strategy.fallback]
        return node_labels.choose_selector(strategy.label_selector, fallbacks, able)

    # -- the decision -------------------------------------------------------------
    def decide(
        self,
        request: Fixed,
        strategy: SchedulingStrategy | None,
        *,
        spilled: bool,
        local_available: Fixed,
    ) -> Decision:
        kind = strategy.kind if strategy is not None else StrategyKind.DEFAULT
        selector = self.selector_of(request, strategy)
        if kind is StrategyKind.NODE_AFFINITY:
            assert strategy is not None
            return self._affinity(request, strategy, spilled, local_available, selector)
        if kind is StrategyKind.SPREAD:
            return self._spread(request, spilled, selector)
        return self._default(request, spilled, local_available, selector)

    def _local_feasible(self, request: Fixed, selector: Selector) -> bool:
        local = self.nodes.get(self.local_id)
        return local is not None and _eligible(local, selector) and res.fits(local.total, request)

    def _candidates(self, selector: Selector) -> list[NodeView]:
        return [n for n in self.alive() if _eligible(n, selector)]

    def _default(
        self, request: Fixed, spilled: bool, local_available: Fixed, selector: Selector
    ) -> Decision:
        local_feasible = self._local_feasible(request, selector)
        if local_feasible and (spilled or res.fits(local_available, request)):
            return Decision(Placement.LOCAL)
        others = [n for n in self._candidates(selector) if n.node_id != self.local_id]
        with_room = [n for n in others if res.fits(n.available, request)]
        if with_room:
            return self._spill(min(with_room, key=NodeView.utilization), request)
        if local_feasible:
            return Decision(Placement.LOCAL)
        feasible = [n for n in others if res.fits(n.total, request)]
        if feasible:
            return self._spill(min(feasible, key=NodeView.utilization), request)
        return Decision(Placement.INFEASIBLE)

    def _spread(self, request: Fixed, spilled: bool, selector: Selector) -> Decision:
        if spilled and self._local_feasible(request, selector):
            return Decision(Placement.LOCAL)
        feasible = sorted(
            (n for n in self._candidates(selector) if res.fits(n.total, request)),
            key=lambda n: n.node_id,
        )
        if not feasible:
            return Decision(Placement.INFEASIBLE)
        # Round-robin, preferring the next node that has room now.
        start = self._spread_next % len(feasible)
        order = feasible[start:] + feasible[:start]
        chosen = next((n for n in order if res.fits(n.available, request)), order[0])
        self._spread_next = (feasible.index(chosen) + 1) % len(feasible)
        if chosen.node_id == self.local_id:
            return Decision(Placement.LOCAL)
        return self._spill(chosen, request)

    def _affinity(
        self,
        request: Fixed,
        strategy: SchedulingStrategy,
        spilled: bool,
        local_available: Fixed,
        selector: Selector,
    ) -> Decision:
        target = self.nodes.get(strategy.node_id)
        why = ""
        if target is None:
            why = f"node {strategy.node_id.hex()} is not in the cluster"
        elif not target.alive:
            why = f"node {strategy.node_id.hex()} is dead"
        elif not res.fits(target.total, request):
            why = f"node {strategy.node_id.hex()} does not have the resources it needs"
        elif not _eligible(target, selector):
            why = f"node {strategy.node_id.hex()} does not match its label_selector"
        if not why:
            assert target is not None
            if target.node_id == self.local_id:
                return Decision(Placement.LOCAL)
            return self._spill(target, request)
        if strategy.soft:
            return self._default(request, spilled, local_available, selector)
        return Decision(Placement.FAIL, error=f"it must run on a node that cannot: {why}")

    def _spill(self, node: NodeView, request: Fixed) -> Decision:
        """Sends it to another node, whose view is debited at once."""
        assert node.node_id != self.local_id
        res.subtract(node.available, request)
        return Decision(Placement.SPILL, node)


def _eligible(node: NodeView, selector: Selector) -> bool:
    """The node meets the label selector ({} is met by every node)."""
    return not selector or node_labels.matches(node.labels, selector)
