"""``runtime.actor``: Ray's ``ray.actor`` names (``exit_actor``, ``method``, the actor types)."""

from .api import ActorClass, ActorHandle, ActorMethod, exit_actor, method

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]
