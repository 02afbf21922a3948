"""Scheduling strategies, as in Ray's ``ray.util.scheduling_strategies``.

Pass one as the ``scheduling_strategy`` option of a task or an actor:
``"DEFAULT"`` (this node first, else a node with room), ``"SPREAD"``
(round-robin over the nodes that fit), or a
:class:`NodeAffinitySchedulingStrategy` naming a node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol.rt import SchedulingStrategy, StrategyKind


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id`` (hex, as ``runtime.nodes()`` and
    ``get_runtime_context().get_node_id()`` give it).

    If that node is dead or cannot fit the task: with ``soft=False`` the task
    fails with ``TaskUnschedulableError`` (an actor with
    ``ActorUnschedulableError``); with ``soft=True`` it runs elsewhere.
    """

    node_id: str
    soft: bool

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str):
            raise TypeError(
                "NodeAffinitySchedulingStrategy: node_id must be a hex str, got "
                f"{type(self.node_id).__name__}"
            )
        try:
            raw = bytes.fromhex(self.node_id)
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise ValueError(
                f"NodeAffinitySchedulingStrategy: {self.node_id!r} is not a node id "
                "(32 hex digits, as runtime.nodes() gives them)"
            )
        if not isinstance(self.soft, bool):
            raise TypeError("NodeAffinitySchedulingStrategy: soft must be a bool")


def check(name: str, value: Any) -> None:
    """Validates a ``scheduling_strategy`` option."""
    if value is None or value in ("DEFAULT", "SPREAD"):
        return
    if isinstance(value, NodeAffinitySchedulingStrategy):
        return
    raise ValueError(
        f"option {name!r} must be 'DEFAULT', 'SPREAD' or a NodeAffinitySchedulingStrategy, "
        f"got {value!r}"
    )


def to_message(value: Any) -> SchedulingStrategy | None:
    """The wire form of a validated strategy (None for the default)."""
    if value is None or value == "DEFAULT":
        return None
    if value == "SPREAD":
        return SchedulingStrategy(kind=StrategyKind.SPREAD)
    assert isinstance(value, NodeAffinitySchedulingStrategy)
    return SchedulingStrategy(
        kind=StrategyKind.NODE_AFFINITY, node_id=bytes.fromhex(value.node_id), soft=value.soft
    )
