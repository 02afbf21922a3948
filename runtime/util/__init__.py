"""Views of the cluster's state for users and tests, and Ray's utilities:
``ActorPool``, ``as_completed``, ``map_unordered``, ``inspect_serializability``,
``list_named_actors``, ``get_node_ip_address`` and ``register_serializer`` here
(also in ``serialization``), placement groups (also in
``placement_group``), scheduling strategies in ``scheduling_strategies``,
``queue.Queue`` and ``multiprocessing.Pool`` in their modules."""

from ..api import (
    get_node_ip_address,
    list_named_actors,
    list_named_actors_async,
    memory_async,
    memory_summary,
    memory_tables,
)
from . import state
from .actor_pool import ActorPool
from .check_serialize import inspect_serializability
from .helpers import as_completed, as_completed_async, map_unordered, map_unordered_async
from .placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from .serialization import deregister_serializer, register_serializer
from .state import list_actors, list_actors_async

__all__ = [
    "ActorPool",
    "PlacementGroup",
    "as_completed",
    "as_completed_async",
    "deregister_serializer",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "inspect_serializability",
    "list_actors",
    "list_actors_async",
    "list_named_actors",
    "list_named_actors_async",
    "map_unordered",
    "map_unordered_async",
    "memory_async",
    "memory_summary",
    "memory_tables",
    "placement_group",
    "placement_group_table",
    "register_serializer",
    "remove_placement_group",
    "state",
]
