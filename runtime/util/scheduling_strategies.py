"""Scheduling strategies, as in Ray's ``ray.util.scheduling_strategies``.

Pass one as the ``scheduling_strategy`` option of a task or an actor:
``"DEFAULT"`` (this node first, else a node with room), ``"SPREAD"``
(round-robin over the nodes that fit), a
:class:`NodeAffinitySchedulingStrategy` naming a node, or a
:class:`PlacementGroupSchedulingStrategy` naming a placement group.
"""

from ..api import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
