"""Pure helpers of the gcs's actor manager: where to place an actor first,
and how its deaths are told."""

from __future__ import annotations

import pickle

from .. import exceptions
from .._private import labels as node_labels
from ..protocol.rt import ActorInfo, NodeInfo, StrategyKind


def first_node(
    nodes: list[NodeInfo], info: ActorInfo, avoid: tuple[str, int] | None = None
) -> NodeInfo | None:
    """Where to ask first: the affinity node, else one with room (the raylet
    asked spills back if its view knows better); ``avoid`` a raylet that just failed."""
    alive = [n for n in nodes if n.alive and (n.host, n.raylet_port) != avoid]
    wanted = info.resources.items()

    def fits(have: dict[str, float]) -> bool:
        return all(have.get(k, 0.0) >= v for k, v in wanted)

    strategy = info.strategy
    if strategy is not None and (strategy.label_selector or strategy.fallback):
        # Only nodes its selector (or the fallback in use) matches (none: the
        # first raylet asked keeps it waiting).
        selector = node_labels.choose_selector(
            strategy.label_selector,
            [f.conditions for f in strategy.fallback],
            (n.labels for n in alive if fits(n.resources_total)),
        )
        alive = [n for n in alive if node_labels.matches(n.labels, selector)] or alive
    if strategy is not None and strategy.kind is StrategyKind.NODE_AFFINITY:
        for node in alive:
            if node.node_id == strategy.node_id:
                return node

    with_room = [n for n in alive if fits(n.resources_available)]
    if with_room:
        return with_room[0]
    candidates = [n for n in alive if fits(n.resources_total)] or alive
    return candidates[0] if candidates else None


def constructor_error(data: bytes) -> str:
    """The death cause of an actor whose constructor failed (its pickled error)."""
    try:
        error = pickle.loads(data)
    except Exception as e:
        return f"the constructor failed (its error could not be read: {e})"
    if isinstance(error, exceptions.ActorDiedError):
        return str(error)
    return f"the constructor failed: {error}"


def process_died(info: ActorInfo, how: str | None = None) -> str:
    """``how``: how the process ended ("was killed by SIGKILL"), if known."""
    if not info.pid:  # it never came up: its constructor did not return
        told = f" (it {how})" if how else ""
        return f"worker process died before its constructor returned{told}"
    return f"worker process (pid={info.pid}) {how or 'died'}"
