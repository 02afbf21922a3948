"""``runtime.actor``: Ray's ``ray.actor`` names (``exit_actor``, the actor types)."""

from .api import ActorClass, ActorHandle, exit_actor

__all__ = ["ActorClass", "ActorHandle", "exit_actor"]
