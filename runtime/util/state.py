"""Ray's state API (``ray.util.state``): what the cluster runs, as rows.

``list_tasks``, ``list_actors``, ``list_objects``, ``list_nodes``,
``list_jobs``, ``list_workers``, ``list_placement_groups``,
``list_runtime_envs`` and ``list_cluster_events`` (nodes joining and dying,
jobs starting and ending, errors reported) take Ray's
``filters=[("state", "=", "RUNNING")]``, ``limit`` (100 by default) and
``detail``; ``get_task``, ``get_actor``, ``get_node``, ``get_job``,
``get_worker`` and ``get_placement_group`` give one row (or None);
``summarize_tasks()`` and ``summarize_actors()`` count by name and state,
``summarize_objects()`` by call site; ``get_objects(id)`` gives an object's rows;
``list_logs()`` and ``get_log()`` read the nodes' log files (by name, actor,
task or pid).
Every function has an ``*_async`` form. ``address``: the gcs (``HOST:PORT``
or ``"auto"``); by default this process's cluster, else the newest local one.
"""

from ..api import state_api as _api

StateRow = _api.StateRow
DEFAULT_LIMIT = _api.DEFAULT_LIMIT

list_tasks = _api.list_tasks
list_actors = _api.list_actors
list_objects = _api.list_objects
list_nodes = _api.list_nodes
list_jobs = _api.list_jobs
list_workers = _api.list_workers
list_placement_groups = _api.list_placement_groups
list_cluster_events = _api.list_cluster_events
list_runtime_envs = _api.list_runtime_envs
list_tasks_async = _api.list_tasks_async
list_actors_async = _api.list_actors_async
list_objects_async = _api.list_objects_async
list_nodes_async = _api.list_nodes_async
list_jobs_async = _api.list_jobs_async
list_workers_async = _api.list_workers_async
list_placement_groups_async = _api.list_placement_groups_async
list_cluster_events_async = _api.list_cluster_events_async
list_runtime_envs_async = _api.list_runtime_envs_async

get_task = _api.get_task
get_actor = _api.get_actor
get_node = _api.get_node
get_job = _api.get_job
get_worker = _api.get_worker
get_placement_group = _api.get_placement_group
get_async = _api.get_async
list_async = _api.list_async

list_logs = _api.list_logs
list_logs_async = _api.list_logs_async
get_log = _api.get_log
get_log_async = _api.get_log_async

summarize_tasks = _api.summarize_tasks
summarize_actors = _api.summarize_actors
summarize_objects = _api.summarize_objects
summarize_objects_async = _api.summarize_objects_async
get_objects = _api.get_objects
get_objects_async = _api.get_objects_async
summarize_tasks_async = _api.summarize_tasks_async
summarize_actors_async = _api.summarize_actors_async

__all__ = [
    "DEFAULT_LIMIT",
    "StateRow",
    "get_actor",
    "get_async",
    "get_job",
    "get_log",
    "get_log_async",
    "get_node",
    "get_objects",
    "get_objects_async",
    "get_placement_group",
    "get_task",
    "get_worker",
    "list_actors",
    "list_actors_async",
    "list_async",
    "list_cluster_events",
    "list_cluster_events_async",
    "list_jobs",
    "list_jobs_async",
    "list_logs",
    "list_logs_async",
    "list_nodes",
    "list_nodes_async",
    "list_objects",
    "list_objects_async",
    "list_placement_groups",
    "list_placement_groups_async",
    "list_runtime_envs",
    "list_runtime_envs_async",
    "list_tasks",
    "list_tasks_async",
    "list_workers",
    "list_workers_async",
    "summarize_actors",
    "summarize_actors_async",
    "summarize_objects",
    "summarize_objects_async",
    "summarize_tasks",
    "summarize_tasks_async",
]
