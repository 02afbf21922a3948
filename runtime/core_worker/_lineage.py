"""Lineage: how to make a lost object again (design, section 6).

An owner keeps, for each finished task (or actor call, which the actor, restarted
if it died, runs again) whose results live in a node's store,
what it needs to run the task again: the spec and its resolved arguments.
An entry lives while any of its results is alive, or while the entry of a
task that consumed one of its results does (so lost arguments can be rebuilt
recursively). Entries take bytes; past ``max_bytes`` the oldest are dropped,
and their objects are no longer reconstructable. A synchronous table, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .. import exceptions
from .._private.ids import task_of
from .._private.serialization import METADATA_IN_STORE, SerializedObject, store_location
from ._task_spec import TaskSpec

#: Task ids of dropped entries remembered, to explain a loss.
_EVICTED_MEMORY = 100_000


@dataclass(eq=False)
class LineageEntry:
    spec: TaskSpec
    resolved: list[SerializedObject]
    size: int
    live: set[bytes]  # its results still referenced
    parents: list[bytes] = field(default_factory=list)  # task ids of in-store arguments
    dependents: int = 0  # entries whose arguments came from this task


class Lineage:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.total_bytes = 0
        self._entries: OrderedDict[bytes, LineageEntry] = OrderedDict()
        self._evicted: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, spec: TaskSpec, in_store: list[bytes]) -> None:
        """A task finished with results in a store: remember how to rerun it."""
        if not in_store or spec.max_retries == 0:
            return
        if spec.task_id in self._entries:
            return  # a reconstruction: the entry is there already
        size = len(spec.args_data.data) + sum(len(r.data) for r in spec.resolved) + 256
        entry = LineageEntry(spec, list(spec.resolved), size, set(in_store))
        for arg in entry.resolved:
            if arg.metadata == METADATA_IN_STORE:
                parent = self._entries.get(task_of(store_location(arg)[0]))
                if parent is not None:
                    parent.dependents += 1
                    entry.parents.append(parent.spec.task_id)
        self._entries[spec.task_id] = entry
        self.total_bytes += size
        while self.total_bytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._drop(oldest, evicted=True)

    def entry_for(self, object_id: bytes) -> LineageEntry | None:
        return self._entries.get(task_of(object_id))

    def result_freed(self, object_id: bytes) -> None:
        if not self._entries:  # (most owners: no task of theirs left results in a store)
            return
        entry = self._entries.get(task_of(object_id))
        if entry is None:
            return
        entry.live.discard(object_id)
        self._maybe_drop(entry)

    def lost_error(self, object_id: bytes) -> exceptions.ObjectLostError:
        """Why a lost object cannot be made again, as the error Ray raises for it."""
        if task_of(object_id) in self._evicted:
            return exceptions.ObjectReconstructionFailedLineageEvictedError(
                object_id.hex(),
                "it is not reconstructable: its lineage was dropped to stay within "
                f"max_lineage_bytes={self.max_bytes}",
            )
        if object_id.endswith(b"\x00\x00\x00\x00"):
            return exceptions.ObjectLostError(
                object_id.hex(), "it was made by put(), which cannot be re-run"
            )
        return exceptions.ObjectReconstructionFailedError(
            object_id.hex(),
            "it is not reconstructable (no lineage: the task or actor call that made it "
            "allows no retries)",
        )

    def _maybe_drop(self, entry: LineageEntry) -> None:
        if not entry.live and entry.dependents <= 0:
            self._drop(entry.spec.task_id, evicted=False)

    def _drop(self, task_id: bytes, evicted: bool) -> None:
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return
        self.total_bytes -= entry.size
        if evicted:
            self._evicted[task_id] = None
            while len(self._evicted) > _EVICTED_MEMORY:
                self._evicted.popitem(last=False)
        for parent_id in entry.parents:
            parent = self._entries.get(parent_id)
            if parent is not None:
                parent.dependents -= 1
                self._maybe_drop(parent)
