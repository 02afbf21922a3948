"""Ray's state API (``runtime.util.state``): list, get and summarize what the
cluster runs, from a driver or from any process that can reach the cluster.

Rows are :class:`StateRow` dicts with Ray's column names, readable as
attributes too (``task.state``, as Ray's dataclasses). Each function has an
``*_async`` form for code on an event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._private import cluster, log_reader, state
from .._private import task_events as te
from .._private.config import Config
from ..core_worker import check_blocking_allowed
from . import _context

logger = logging.getLogger("runtime")

T = TypeVar("T")
#: As Ray's: rows returned unless ``limit`` says otherwise.
DEFAULT_LIMIT = 100


class StateRow(dict[str, Any]):
    """One row: a dict, whose columns also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _reader(address: str | None) -> state.StateReader:
    worker = _context.current_or_none()
    if address is None and worker is not None:
        return state.StateReader(worker.gcs_address)
    config = Config.load()
    gcs = cluster.resolve_address(address or "auto", config, standing_only=False)
    return state.StateReader(gcs, cluster.token_for(gcs, config))


def _blocking(name: str, make: Callable[[], Awaitable[T]], hint: str = "") -> T:
    """Runs a reader from sync code: on the runtime's loop when this process has
    one (never from that loop's own thread), else on a loop of its own."""
    worker = _context.current_or_none()
    if worker is not None:
        hint = hint or f"await runtime.util.state.{name}_async(...)"
        check_blocking_allowed(f"util.state.{name}", hint, worker.loop)
        result: T = worker.bridge.run_blocking(_call(make))
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_call(make))
    # Another loop's thread (a notebook's, with no runtime here): it may block,
    # as in Ray; the reader gets a loop of its own on a helper thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _call(make)).result()


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


async def list_async(
    resource: str,
    filters: list[tuple[str, str, Any]] | None = None,
    limit: int = DEFAULT_LIMIT,
    detail: bool = False,
    address: str | None = None,
) -> list[StateRow]:
    """Rows of one resource (tasks, actors, objects, nodes, jobs, workers,
    placement_groups, cluster_events, runtime_envs), filtered by Ray's
    ``[(key, op, value)]`` predicates."""
    checked = te.check_filters(filters)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int, got {limit!r}")
    state.check_resource(resource)
    async with _reader(address) as reader:
        rows, total, dropped = await reader.read(resource, checked, limit, detail)
    if total > len(rows):
        logger.warning(
            "%d of %d %s shown (limit=%d); pass a larger limit to see more",
            len(rows),
            total,
            resource,
            limit,
        )
    if dropped:
        logger.warning(
            "%d task attempt(s) are not shown: the cluster dropped their events "
            "(more than task_events_max_num_task_in_gcs per job)",
            dropped,
        )
    return [StateRow(r) for r in rows]


def _lister(resource: str) -> tuple[Callable[..., list[StateRow]], Callable[..., Any]]:
    async def list_resource_async(
        filters: list[tuple[str, str, Any]] | None = None,
        limit: int = DEFAULT_LIMIT,
        detail: bool = False,
        address: str | None = None,
    ) -> list[StateRow]:
        return await list_async(resource, filters, limit, detail, address)

    def list_resource(
        filters: list[tuple[str, str, Any]] | None = None,
        limit: int = DEFAULT_LIMIT,
        detail: bool = False,
        address: str | None = None,
    ) -> list[StateRow]:
        return _blocking(
            f"list_{resource}",
            lambda: list_async(resource, filters, limit, detail, address),
        )

    doc = f"Every {resource[:-1].replace('_', ' ')} the cluster knows, as rows (Ray's columns)."
    list_resource.__doc__ = list_resource_async.__doc__ = doc
    list_resource.__name__ = f"list_{resource}"
    list_resource_async.__name__ = f"list_{resource}_async"
    return list_resource, list_resource_async


list_tasks, list_tasks_async = _lister("tasks")
list_actors, list_actors_async = _lister("actors")
list_objects, list_objects_async = _lister("objects")
list_nodes, list_nodes_async = _lister("nodes")
list_jobs, list_jobs_async = _lister("jobs")
list_workers, list_workers_async = _lister("workers")
list_placement_groups, list_placement_groups_async = _lister("placement_groups")
list_cluster_events, list_cluster_events_async = _lister("cluster_events")
list_runtime_envs, list_runtime_envs_async = _lister("runtime_envs")
list_runtime_envs.__doc__ = list_runtime_envs_async.__doc__ = (
    "The runtime environments each node started workers in (Ray's columns: the "
    "environment, whether its setup succeeded and how long it took, its node, the live "
    "workers using it, why its setup failed)."
)
list_cluster_events.__doc__ = list_cluster_events_async.__doc__ = (
    "The cluster's latest events, oldest first (Ray's columns): nodes joining and dying, "
    "jobs starting and finishing, the errors core workers reported."
)


async def get_async(resource: str, id: str, address: str | None = None) -> StateRow | None:
    """The row with this id (for a task: its latest attempt), or None."""
    if not isinstance(id, str) or not id:
        raise TypeError(f"the id must be a non-empty hex string, got {id!r}")
    column = state.ID_COLUMNS.get(resource)
    if column is None:
        raise ValueError(f"get: choose one of {', '.join(state.ID_COLUMNS)}")
    rows = await list_async(resource, [(column, "=", id)], 0, True, address)
    if not rows:
        return None
    return max(rows, key=lambda r: r.get("attempt_number", 0))


def _getter(resource: str, name: str) -> Callable[..., StateRow | None]:
    def get(id: str, address: str | None = None) -> StateRow | None:
        return _blocking(name, lambda: get_async(resource, id, address))

    get.__name__ = name
    get.__doc__ = f"The {resource[:-1].replace('_', ' ')} with this id (hex), or None."
    return get


get_task = _getter("tasks", "get_task")
get_actor = _getter("actors", "get_actor")
get_node = _getter("nodes", "get_node")
get_job = _getter("jobs", "get_job")
get_worker = _getter("workers", "get_worker")
get_placement_group = _getter("placement_groups", "get_placement_group")


async def summarize_tasks_async(address: str | None = None) -> dict[str, Any]:
    async with _reader(address) as reader:
        return await reader.task_summary([])


async def summarize_actors_async(address: str | None = None) -> dict[str, Any]:
    rows = await list_async("actors", None, 0, False, address)
    return state.summarize_actors(rows)


async def summarize_objects_async(address: str | None = None) -> dict[str, Any]:
    rows = await list_async("objects", None, 0, False, address)
    return state.summarize_objects(rows)


def summarize_objects(address: str | None = None) -> dict[str, Any]:
    """Referenced objects grouped by where they were made, as Ray's ``summarize_objects()``."""
    return _blocking("summarize_objects", lambda: summarize_objects_async(address))


async def get_objects_async(id: str, address: str | None = None) -> list[StateRow]:
    if not isinstance(id, str) or not id:
        raise TypeError(f"the id must be a non-empty hex string, got {id!r}")
    return await list_async("objects", [("object_id", "=", id)], 0, True, address)


def get_objects(id: str, address: str | None = None) -> list[StateRow]:
    """Every row of the object with this id (hex): one per process holding a
    reference to it, as Ray's ``get_objects()``."""
    return _blocking("get_objects", lambda: get_objects_async(id, address))


def summarize_tasks(address: str | None = None) -> dict[str, Any]:
    """Tasks counted by function and state, as Ray's ``summarize_tasks()``."""
    return _blocking("summarize_tasks", lambda: summarize_tasks_async(address))


def summarize_actors(address: str | None = None) -> dict[str, Any]:
    """Actors counted by class and state, as Ray's ``summarize_actors()``."""
    return _blocking("summarize_actors", lambda: summarize_actors_async(address))


async def timeline_async(
    filename: str | None = None, address: str | None = None
) -> list[dict[str, Any]]:
    rows = await list_async("tasks", None, 0, True, address)
    events = state.chrome_trace(rows)
    if filename is not None:
        await asyncio.to_thread(_write_json, filename, events)
    return events


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as f:
        json.dump(value, f)


def timeline(filename: str | None = None) -> list[dict[str, Any]]:
    """The tasks that ran, as a Chrome trace (open it in Perfetto or
    chrome://tracing): written to ``filename`` when given, and returned."""
    hint = "await runtime.timeline_async(...)"
    return _blocking("timeline", lambda: timeline_async(filename), hint)


async def list_logs_async(
    node_id: str | None = None, address: str | None = None
) -> dict[str, list[StateRow]]:
    async with _reader(address) as reader:
        listing = await log_reader.list_logs(reader, node_id)
    return {node: [StateRow(f) for f in files] for node, files in listing.items()}


def list_logs(node_id: str | None = None, address: str | None = None) -> dict[str, list[StateRow]]:
    """Every node's log files: node id -> rows (name, size, worker_id, pid, job_id)."""
    return _blocking("list_logs", lambda: list_logs_async(node_id, address))


async def get_log_async(
    filename: str | None = None,
    *,
    node_id: str | None = None,
    actor_id: str | None = None,
    task_id: str | None = None,
    pid: int | None = None,
    suffix: str = "out",
    tail: int = 1000,
    address: str | None = None,
) -> list[str]:
    if suffix not in ("out", "err"):
        raise ValueError(f"suffix must be 'out' or 'err', got {suffix!r}")
    if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
        raise ValueError(f"tail must be a non-negative int, got {tail!r}")
    async with _reader(address) as reader:
        target = await log_reader.resolve(
            reader,
            filename=filename,
            node_id=node_id,
            actor_id=actor_id,
            task_id=task_id,
            pid=pid,
            err=suffix == "err",
        )
        return [line async for chunk in log_reader.read(reader, target, tail) for line in chunk]


def get_log(
    filename: str | None = None,
    *,
    node_id: str | None = None,
    actor_id: str | None = None,
    task_id: str | None = None,
    pid: int | None = None,
    suffix: str = "out",
    tail: int = 1000,
    address: str | None = None,
) -> list[str]:
    """The lines of one log: a file by name, or an actor's, a task's (only what
    it printed) or a worker process's output (``suffix="err"``: its stderr)."""
    return _blocking(
        "get_log",
        lambda: get_log_async(
            filename,
            node_id=node_id,
            actor_id=actor_id,
            task_id=task_id,
            pid=pid,
            suffix=suffix,
            tail=tail,
            address=address,
        ),
    )
