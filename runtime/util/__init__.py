"""Views of the cluster's state for users and tests, and Ray's utilities:
``ActorPool`` here, ``queue.Queue`` and ``multiprocessing.Pool`` in their modules."""

from ..api import list_actors, list_actors_async, memory_async, memory_summary, memory_tables
from .actor_pool import ActorPool

__all__ = [
    "ActorPool",
    "list_actors",
    "list_actors_async",
    "memory_async",
    "memory_summary",
    "memory_tables",
]
