"""runtime: an asyncio-native distributed computing runtime with Ray's core API.

``import runtime as ray`` and use ``ray.init``, ``@ray.remote``, ``ray.get``,
``ray.put``, ``ray.wait``. Every blocking call has an ``await`` form:
``await ref``, ``await runtime.get_async(refs)``, ``await runtime.wait_async(refs)``,
``await runtime.init_async()``, ``await runtime.shutdown_async()``.
"""

from __future__ import annotations

from . import (
    actor,
    cloudpickle,
    exceptions,
    experimental,
    job_config,
    runtime_context,
    runtime_env,
    util,
)
from ._private.version import __version__ as __version__
from .api import (
    ActorClass,
    ActorClassID,
    ActorHandle,
    ActorID,
    DynamicObjectRefGenerator,
    FunctionID,
    JobID,
    LoggingConfig,
    NodeID,
    ObjectRef,
    ObjectRefGenerator,
    PlacementGroupID,
    RemoteFunction,
    RuntimeContext,
    TaskID,
    UniqueID,
    WorkerID,
    available_resources,
    available_resources_async,
    cancel,
    cluster_resources,
    cluster_resources_async,
    get,
    get_actor,
    get_actor_async,
    get_async,
    get_gpu_ids,
    get_runtime_context,
    init,
    init_async,
    is_initialized,
    kill,
    method,
    nodes,
    nodes_async,
    put,
    remote,
    shutdown,
    shutdown_async,
    wait,
    wait_async,
)
from .api import state_api as _state_api

timeline = _state_api.timeline
timeline_async = _state_api.timeline_async
#: Ray's older name of ``ObjectRef``.
ObjectID = ObjectRef
#: Ray's process modes, for code that compares against them: a driver's, a
#: worker's (this runtime has no local mode).
SCRIPT_MODE = 0
WORKER_MODE = 1
LOCAL_MODE = 2

__all__ = [
    "LOCAL_MODE",
    "SCRIPT_MODE",
    "WORKER_MODE",
    "ActorClass",
    "ActorClassID",
    "ActorHandle",
    "ActorID",
    "DynamicObjectRefGenerator",
    "FunctionID",
    "JobID",
    "LoggingConfig",
    "NodeID",
    "ObjectID",
    "ObjectRef",
    "ObjectRefGenerator",
    "PlacementGroupID",
    "RemoteFunction",
    "RuntimeContext",
    "TaskID",
    "UniqueID",
    "WorkerID",
    "actor",
    "available_resources",
    "available_resources_async",
    "cancel",
    "cloudpickle",
    "cluster_resources",
    "cluster_resources_async",
    "exceptions",
    "experimental",
    "get",
    "get_actor",
    "get_actor_async",
    "get_async",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "init_async",
    "is_initialized",
    "job_config",
    "kill",
    "method",
    "nodes",
    "nodes_async",
    "put",
    "remote",
    "runtime_context",
    "runtime_env",
    "shutdown",
    "shutdown_async",
    "timeline",
    "timeline_async",
    "util",
    "wait",
    "wait_async",
]
