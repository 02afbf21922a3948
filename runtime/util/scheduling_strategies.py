"""Scheduling strategies, as in Ray's ``ray.util.scheduling_strategies``.

Pass one as the ``scheduling_strategy`` option of a task or an actor:
``"DEFAULT"`` (this node first, else a node with room), ``"SPREAD"``
(round-robin over the nodes that fit), a
:class:`NodeAffinitySchedulingStrategy` naming a node, a
:class:`NodeLabelSchedulingStrategy` by the nodes' labels (``In``, ``NotIn``,
``Exists``, ``DoesNotExist``), or a
:class:`PlacementGroupSchedulingStrategy` naming a placement group.
"""

from ..api import (
    DoesNotExist,
    Exists,
    In,
    NodeAffinitySchedulingStrategy,
    NodeLabelSchedulingStrategy,
    NotIn,
    PlacementGroupSchedulingStrategy,
)

__all__ = [
    "DoesNotExist",
    "Exists",
    "In",
    "NodeAffinitySchedulingStrategy",
    "NodeLabelSchedulingStrategy",
    "NotIn",
    "PlacementGroupSchedulingStrategy",
]
