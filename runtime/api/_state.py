"""Views of the cluster's state for users and tests (``runtime.util``)."""

from __future__ import annotations

from .._private import memory
from ..core_worker import check_blocking_allowed
from . import _context


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
