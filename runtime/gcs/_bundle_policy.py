"""Where a placement group's bundles go: a pure function of the nodes' resources.

Strategies, as in Ray:
- PACK: all on one node if one fits them, else as few nodes as possible;
- SPREAD: on distinct nodes where they fit, sharing nodes only when they must;
- STRICT_PACK: all on one node, or not placed;
- STRICT_SPREAD: every bundle on a node of its own, or not placed.

Bundles already placed (a group being rescheduled after a node died) stay
where they are and count: a STRICT_PACK group's lost bundles go back to the
node of the others, a STRICT_SPREAD group's to nodes none of the others use.

A bundle with a label selector goes only to a node whose labels match it.

Placing tries the nodes' free resources; when nothing fits now it also says
whether it could ever fit (the nodes' totals), so a group that no node of
the cluster could hold is reported as infeasible rather than as waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .._private import labels as node_labels
from .._private import resources as res
from .._private.resources import Fixed
from ..protocol.rt import PlacementStrategy


@dataclass(eq=False)
class NodeRoom:
    node_id: bytes
    available: Fixed
    total: Fixed
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """Where each unplaced bundle goes (index -> node), or why none could."""

    assignment: dict[int, bytes] = field(default_factory=dict)
    placed: bool = False
    infeasible: bool = False  # it could not fit even on empty nodes
    reason: str = ""


def place(
    bundles: dict[int, Fixed],
    placed: dict[int, bytes],
    strategy: PlacementStrategy,
    nodes: list[NodeRoom],
    selectors: dict[int, dict[str, str]] | None = None,
) -> Outcome:
    """Places the bundles of ``bundles`` not in ``placed``, on ``nodes`` (live);
    ``selectors``: the bundles' label selectors, by index (none: any node)."""
    todo = {i: r for i, r in bundles.items() if i not in placed}
    labels = {n.node_id: n.labels for n in nodes}
    wanted = selectors or {}

    def allowed(index: int, node_id: bytes) -> bool:
        selector = wanted.get(index)
        return not selector or node_labels.matches(labels.get(node_id, {}), selector)

    now = _try(todo, placed, strategy, nodes, allowed, use_total=False)
    if now is not None:
        return Outcome(now, placed=True)
    ever = _try(todo, placed, strategy, nodes, allowed, use_total=True)
    if ever is None:
        unmatched = [i for i in sorted(todo) if not any(allowed(i, n.node_id) for n in nodes)]
        if unmatched:
            i = unmatched[0]
            why = f"no node's labels match bundle {i}'s label selector {wanted[i]}"
        else:
            why = _why_infeasible(todo, strategy, nodes)
        return Outcome(infeasible=True, reason=why)
    return Outcome(reason="waiting for resources to free up or for nodes to join")


def _try(
    todo: dict[int, Fixed],
    placed: dict[int, bytes],
    strategy: PlacementStrategy,
    nodes: list[NodeRoom],
    allowed: Callable[[int, bytes], bool],
    *,
    use_total: bool,
) -> dict[int, bytes] | None:
    room = {n.node_id: dict(n.total if use_total else n.available) for n in nodes}
    # Largest bundles first: a greedy pass then fails less often.
    order = sorted(todo, key=lambda i: (-sum(todo[i].values()), i))
    used: dict[bytes, int] = {}
    for node_id in placed.values():
        used[node_id] = used.get(node_id, 0) + 1
    if strategy in (PlacementStrategy.STRICT_PACK, PlacementStrategy.PACK):
        one = _one_node(todo, set(placed.values()), room, allowed)
        if one is not None:
            return {i: one for i in todo}
        if strategy is PlacementStrategy.STRICT_PACK:
            return None
    assignment: dict[int, bytes] = {}
    for index in order:
        need = todo[index]
        fitting = [
            node_id
            for node_id, free in room.items()
            if res.fits(free, need) and allowed(index, node_id)
        ]
        if strategy is PlacementStrategy.STRICT_SPREAD:
            fitting = [node_id for node_id in fitting if not used.get(node_id)]
        if not fitting:
            return None
        if strategy is PlacementStrategy.PACK:
            # Nodes the group already uses first, then the fullest that fits.
            chosen = min(fitting, key=lambda n: (-used.get(n, 0), _free(room[n])))
        else:
            # The nodes the group uses least, then the emptiest.
            chosen = min(fitting, key=lambda n: (used.get(n, 0), -_free(room[n])))
        assignment[index] = chosen
        res.subtract(room[chosen], need)
        used[chosen] = used.get(chosen, 0) + 1
    return assignment


def _one_node(
    todo: dict[int, Fixed],
    others: set[bytes],
    room: dict[bytes, Fixed],
    allowed: Callable[[int, bytes], bool],
) -> bytes | None:
    """The fullest node that holds every bundle left (and the placed ones' node)."""
    if len(others) > 1:
        return None
    need: Fixed = {}
    for resources in todo.values():
        res.add(need, resources)
    candidates = [
        n for n, free in room.items() if res.fits(free, need) and all(allowed(i, n) for i in todo)
    ]
    if others:
        candidates = [n for n in candidates if n in others]
    if not candidates:
        return None
    return min(candidates, key=lambda n: _free(room[n]))


def _free(resources: Fixed) -> int:
    return resources.get("CPU", 0) + resources.get("GPU", 0) * 100


def _why_infeasible(
    todo: dict[int, Fixed], strategy: PlacementStrategy, nodes: list[NodeRoom]
) -> str:
    if strategy is PlacementStrategy.STRICT_SPREAD and len(todo) > len(nodes):
        return (
            f"STRICT_SPREAD needs {len(todo)} nodes for its bundles and the cluster has "
            f"{len(nodes)} that can hold them"
        )
    if strategy is PlacementStrategy.STRICT_PACK:
        return "STRICT_PACK needs one node that holds every bundle, and no node does"
    return "no node of the cluster has the resources of its bundles"
