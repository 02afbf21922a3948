"""What a task is, at its owner and on the wire.

The owner keeps a :class:`TaskSpec` per pending task. What travels to the
executing worker is a plain tuple (:data:`WireTask`), pickled in batches:
the fields the worker needs, with every top-level ``ObjectRef`` argument
already resolved to its serialized value. A batch may also carry
:class:`CancelRequest` items.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .._object_ref import ObjectRef
from .._serialization import SerializedObject

# Kinds of wire task (plain ints: they are pickled with every task).
KIND_TASK = 0
KIND_ACTOR_CREATION = 1
KIND_ACTOR_CALL = 2

#: (task_id, function_id, name, args_data, resolved_args, num_returns, kind, extra,
#: owner_id). ``extra``: the method name for an actor call; for an actor
#: creation a dict (actor_id, class_name, max_concurrency); else None.
#: ``owner_id``: the worker id of the task's owner (its results' owner).
WireTask = tuple[bytes, bytes, str, SerializedObject, list[SerializedObject], int, int, Any, bytes]
#: (task_id, ok, returns or [error], application_error, nested): ``nested``
#: lists, per return, the (object id, owner) of each ref inside it; ``None``
#: means the worker handed the task back unstarted (run it elsewhere).
WireReply = tuple[
    bytes,
    bool,
    list[SerializedObject],
    bool,
    list[list[tuple[bytes, tuple[str, int, bytes]]]] | None,
]


class CancelRequest:
    """Asks the executing worker to cancel a task it has (queued or running)."""

    __slots__ = ("force", "task_id")

    def __init__(self, task_id: bytes, force: bool = False) -> None:
        self.task_id = task_id
        self.force = force

    def __reduce__(self) -> tuple[Any, ...]:
        return (CancelRequest, (self.task_id, self.force))


class ArgSlot:
    """Stands in the pickled arguments for the i-th top-level ``ObjectRef``."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArgSlot, (self.index,))


#: Tasks that share one are interchangeable on a lease: same resources, same placement.
SchedulingKey = tuple[tuple[tuple[str, float], ...], tuple[Any, ...]]


class TaskState(enum.Enum):
    RESOLVING = "RESOLVING"  # waiting for its function export or ref arguments
    QUEUED = "QUEUED"  # waiting for a lease (or, for an actor call, its turn)
    PUSHED = "PUSHED"  # sent to a worker
    FINISHED = "FINISHED"


@dataclass(eq=False, slots=True)
class TaskSpec:
    task_id: bytes
    function_id: bytes
    name: str
    args_data: SerializedObject
    arg_refs: list[ObjectRef]
    num_returns: int
    resources: dict[str, float]
    max_retries: int
    retry_exceptions: bool | tuple[type[BaseException], ...]
    return_ids: list[bytes]
    retries_left: int = 0
    resolved: list[SerializedObject] = field(default_factory=list)
    kind: int = KIND_TASK
    extra: Any = None
    state: TaskState = TaskState.RESOLVING
    cancelled: bool = False
    actor_key: bytes = b""  # for an actor call: the handle's key
    # Refs nested in the arguments, held until the reply (ownership rule 2).
    nested: list[ObjectRef] = field(default_factory=list)
    owner_id: bytes = b""
    # Where to run it (a SchedulingStrategy message; None: the default).
    strategy: Any = None
    # The submitter's queue for it (scheduling key and argument locality).
    queue_key: Any = None

    @property
    def scheduling_key(self) -> SchedulingKey:
        strategy = self.strategy
        where = (
            () if strategy is None else (int(strategy.kind), strategy.node_id, bool(strategy.soft))
        )
        return tuple(sorted(self.resources.items())), where

    def wire(self) -> WireTask:
        return (
            self.task_id,
            self.function_id,
            self.name,
            self.args_data,
            self.resolved,
            self.num_returns,
            self.kind,
            self.extra,
            self.owner_id,
        )
