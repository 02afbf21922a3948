"""Scheduling strategies, as in Ray's ``ray.util.scheduling_strategies``.

Pass one as the ``scheduling_strategy`` option of a task or an actor:
``"DEFAULT"`` (this node first, else a node with room), ``"SPREAD"``
(round-robin over the nodes that fit), or a
:class:`NodeAffinitySchedulingStrategy` naming a node.
"""

from ..api import NodeAffinitySchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy"]
