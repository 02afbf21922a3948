"""Views of the cluster's state for users and tests, and Ray's utilities:
``ActorPool``, ``as_completed``, ``map_unordered``, ``inspect_serializability``,
``list_named_actors``, ``get_node_ip_address`` and ``register_serializer`` here
(also in ``serialization``), placement groups (also in
``placement_group``), scheduling strategies in ``scheduling_strategies``,
``queue.Queue`` and ``multiprocessing.Pool`` in their modules, accelerator type names
in ``accelerators``, ``log_once`` here (also in ``debug``)."""

from ..api import (
    get_node_ip_address,
    list_named_actors,
    list_named_actors_async,
    memory_async,
    memory_summary,
    memory_tables,
)
from . import accelerators, debug, scheduling_strategies, state
from .actor_pool import ActorPool
from .check_serialize import inspect_serializability
from .debug import disable_log_once_globally, enable_periodic_logging, log_once
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
    "accelerators",
    "as_completed",
    "as_completed_async",
    "debug",
    "deregister_serializer",
    "disable_log_once_globally",
    "enable_periodic_logging",
    "get_current_placement_group",
    "get_node_ip_address",
    "get_placement_group",
    "inspect_serializability",
    "list_actors",
    "list_actors_async",
    "list_named_actors",
    "list_named_actors_async",
    "log_once",
    "map_unordered",
    "map_unordered_async",
    "memory_async",
    "memory_summary",
    "memory_tables",
    "placement_group",
    "placement_group_table",
    "register_serializer",
    "remove_placement_group",
    "scheduling_strategies",
    "state",
]
