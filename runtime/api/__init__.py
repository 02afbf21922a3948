"""The public API's implementation: what users import from ``runtime``.

Users import from ``runtime`` itself (and ``runtime.util``, ``runtime.testing``,
``runtime.exceptions``), which re-export the names below; the modules here
are private. This layer may import the core worker and the plumbing; nothing
below it imports it.
"""

from . import _internal_kv as internal_kv_api
from . import _metrics as metrics_api
from . import _state_api as state_api
from ._actor import (
    ActorClass,
    ActorHandle,
    get_actor,
    get_actor_async,
    kill,
    list_named_actors,
    list_named_actors_async,
)
from ._actor_handle import ActorMethod
from ._cluster_info import (
    available_resources,
    available_resources_async,
    cluster_resources,
    cluster_resources_async,
    get_node_ip_address,
    nodes,
    nodes_async,
)
from ._context import runtime_loop
from ._dag import (
    ClassMethodNode,
    ClassNode,
    DAGInputData,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)
from ._decorators import method, remote
from ._driver import init, init_async, is_initialized, shutdown, shutdown_async
from ._generator import ObjectRefGenerator
from ._ids import (
    ActorClassID,
    ActorID,
    FunctionID,
    JobID,
    NodeID,
    PlacementGroupID,
    TaskID,
    UniqueID,
    WorkerID,
)
from ._init_options import LoggingConfig
from ._job_config import JobConfig
from ._label_strategy import DoesNotExist, Exists, In, NodeLabelSchedulingStrategy, NotIn
from ._object_locations import get_object_locations
from ._object_ref import ObjectRef
from ._objects import cancel, get, get_async, put, wait, wait_async
from ._placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ._remote_function import DynamicObjectRefGenerator, RemoteFunction
from ._runtime_context import RuntimeContext, exit_actor, get_gpu_ids, get_runtime_context
from ._runtime_env_spec import RuntimeEnv, RuntimeEnvConfig
from ._scheduling import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy
from ._state import memory_async, memory_summary, memory_tables

__all__ = [
    "ActorClass",
    "ActorClassID",
    "ActorHandle",
    "ActorID",
    "ActorMethod",
    "ClassMethodNode",
    "ClassNode",
    "DAGInputData",
    "DAGNode",
    "DoesNotExist",
    "DynamicObjectRefGenerator",
    "Exists",
    "FunctionID",
    "FunctionNode",
    "In",
    "InputAttributeNode",
    "InputNode",
    "JobConfig",
    "JobID",
    "LoggingConfig",
    "MultiOutputNode",
    "NodeAffinitySchedulingStrategy",
    "NodeID",
    "NodeLabelSchedulingStrategy",
    "NotIn",
    "ObjectRef",
    "ObjectRefGenerator",
    "PlacementGroup",
    "PlacementGroupID",
    "PlacementGroupSchedulingStrategy",
    "RemoteFunction",
    "RuntimeContext",
    "RuntimeEnv",
    "RuntimeEnvConfig",
    "TaskID",
    "UniqueID",
    "WorkerID",
    "available_resources",
    "available_resources_async",
    "cancel",
    "cluster_resources",
    "cluster_resources_async",
    "exit_actor",
    "get",
    "get_actor",
    "get_actor_async",
    "get_async",
    "get_current_placement_group",
    "get_gpu_ids",
    "get_node_ip_address",
    "get_object_locations",
    "get_placement_group",
    "get_runtime_context",
    "init",
    "init_async",
    "internal_kv_api",
    "is_initialized",
    "kill",
    "list_named_actors",
    "list_named_actors_async",
    "memory_async",
    "memory_summary",
    "memory_tables",
    "method",
    "metrics_api",
    "nodes",
    "nodes_async",
    "placement_group",
    "placement_group_table",
    "put",
    "remote",
    "remove_placement_group",
    "runtime_loop",
    "shutdown",
    "shutdown_async",
    "state_api",
    "wait",
    "wait_async",
]
