"""Views of the cluster's state for users and tests."""

from __future__ import annotations

from typing import Any

from .. import _context, _memory
from ..core_worker import CoreWorker
from ..protocol.rt import ActorInfo


def _actor_row(info: ActorInfo) -> dict[str, Any]:
    address = info.address
    return {
        "actor_id": info.actor_id.hex(),
        "class_name": info.class_name,
        "name": info.name,
        "namespace": info.namespace,
        "state": info.state.name.removeprefix("ACTOR_STATE_") if info.state else "UNKNOWN",
        "node_id": address.node_id.hex() if address is not None else "",
        "pid": info.pid,
        "num_restarts": info.num_restarts,
        "detached": info.detached,
        "death_cause": info.death_cause,
        "job_id": info.job_id,
    }


def list_actors() -> list[dict[str, Any]]:
    """Every actor the cluster knows (alive or not), one dict each.

    Keys: actor_id, class_name, name, namespace, state (PENDING_CREATION,
    ALIVE, RESTARTING, DEAD), node_id, pid, num_restarts, detached,
    death_cause, job_id.
    """
    CoreWorker.check_blocking_allowed("util.list_actors", "await runtime.util.list_actors_async()")
    worker = _context.current()
    infos: list[ActorInfo] = worker._run_blocking(worker.actor_client.list_actors())
    return [_actor_row(info) for info in infos]


async def list_actors_async() -> list[dict[str, Any]]:
    worker = _context.current()
    infos: list[ActorInfo] = await worker._on_own_loop(worker.actor_client.list_actors())
    return [_actor_row(info) for info in infos]


def memory_summary() -> str:
    """Every live reference in the cluster, grouped by process (``runtime memory``)."""
    CoreWorker.check_blocking_allowed("util.memory_summary", "await runtime.util.memory_async()")
    worker = _context.current()
    tables = worker._run_blocking(_memory.collect(worker.gcs_address))
    return _memory.render(tables)


async def memory_async() -> list[_memory.WorkerTable]:
    worker = _context.current()
    tables: list[_memory.WorkerTable] = await worker._on_own_loop(
        _memory.collect(worker.gcs_address)
    )
    return tables


def memory_tables() -> list[_memory.WorkerTable]:
    """The reference tables behind ``memory_summary``, one per process."""
    CoreWorker.check_blocking_allowed("util.memory_tables", "await runtime.util.memory_async()")
    worker = _context.current()
    tables: list[_memory.WorkerTable] = worker._run_blocking(_memory.collect(worker.gcs_address))
    return tables
