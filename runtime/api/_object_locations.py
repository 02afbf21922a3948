"""Where objects are, as Ray's ``ray.experimental.get_object_locations``.

For each ref: ``{"node_ids": [...], "object_size": ..., "did_spill": ...}``,
the hex ids of the nodes that hold its object (a value small enough to live in
its owner's process: the owner's node), its size in bytes, and whether a node
holding it has written it to disk; a pending object has no
node and a size of None. Refs whose owner cannot say (it died, or freed the
object) are left out. The lookup asks the borrowed objects' owners and every
node's raylet; it waits for no object to be ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..core_worker import check_blocking_allowed, object_locations
from ..exceptions import GetTimeoutError
from . import _context
from ._object_ref import ObjectRef


def get_object_locations(
    obj_refs: Sequence[ObjectRef], timeout_ms: int = -1
) -> dict[ObjectRef, dict[str, Any]]:
    """The locations of the refs' objects; ``timeout_ms`` bounds the lookup
    (negative: no bound), past which it raises ``GetTimeoutError``."""
    worker = _context.current()
    refs = _refs(obj_refs)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise TypeError(f"timeout_ms must be an int, got {type(timeout_ms).__name__}")
    check_blocking_allowed(
        "experimental.get_object_locations",
        "await asyncio.to_thread(runtime.experimental.get_object_locations, refs)",
        _context.runtime_loop(),
    )
    if not refs:
        return {}
    timeout = None if timeout_ms < 0 else timeout_ms / 1000

    async def lookup() -> dict[bytes, tuple[list[bytes], int | None, bool]]:
        try:
            return await asyncio.wait_for(object_locations(worker, refs), timeout)
        except TimeoutError:
            raise GetTimeoutError(
                f"get_object_locations() timed out after {timeout_ms} ms"
            ) from None

    found = worker.bridge.run_blocking(lookup())
    out: dict[ObjectRef, dict[str, Any]] = {}
    for ref in refs:
        location = found.get(ref._id)
        if location is not None:
            nodes, size, spilled = location
            out[ref] = {
                "node_ids": [node_id.hex() for node_id in nodes],
                "object_size": size,
                "did_spill": spilled,
            }
    return out


def _refs(obj_refs: Any) -> list[ObjectRef]:
    if isinstance(obj_refs, ObjectRef) or not isinstance(obj_refs, list | tuple):
        raise TypeError(
            f"get_object_locations() takes a list of ObjectRefs, got {type(obj_refs).__name__}"
        )
    for ref in obj_refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(
                f"get_object_locations() takes ObjectRefs, got an item of type {type(ref).__name__}"
            )
    return list(obj_refs)
