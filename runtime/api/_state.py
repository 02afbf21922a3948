"""Views of the cluster's state for users and tests (``runtime.util``)."""

from __future__ import annotations

from typing import Any

from .._private import memory
from ..core_worker import check_blocking_allowed
from ..protocol.rt import ActorInfo
from . import _context


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
    check_blocking_allowed(
        "util.list_actors", "await runtime.util.list_actors_async()", _context.runtime_loop()
    )
    worker = _context.current()
    infos: list[ActorInfo] = worker.bridge.run_blocking(worker.actor_client.list_actors())
    return [_actor_row(info) for info in infos]


async def list_actors_async() -> list[dict[str, Any]]:
    worker = _context.current()
    infos: list[ActorInfo] = await worker.bridge.on_own_loop(worker.actor_client.list_actors())
    return [_actor_row(info) for info in infos]


def memory_summary() -> str:
    """Every live reference in the cluster, grouped by process (``runtime memory``)."""
    check_blocking_allowed(
        "util.memory_summary", "await runtime.util.memory_async()", _context.runtime_loop()
    )
    worker = _context.current()
    tables = worker.bridge.run_blocking(memory.collect(worker.gcs_address))
    return memory.render(tables)


async def memory_async() -> list[memory.WorkerTable]:
    worker = _context.current()
    tables: list[memory.WorkerTable] = await worker.bridge.on_own_loop(
        memory.collect(worker.gcs_address)
    )
    return tables


def memory_tables() -> list[memory.WorkerTable]:
    """The reference tables behind ``memory_summary``, one per process."""
    check_blocking_allowed(
        "util.memory_tables", "await runtime.util.memory_async()", _context.runtime_loop()
    )
    worker = _context.current()
    tables: list[memory.WorkerTable] = worker.bridge.run_blocking(
        memory.collect(worker.gcs_address)
    )
    return tables
