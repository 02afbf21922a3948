"""What a task is at its owner: a :class:`TaskSpec` per pending task.

What travels to the executing worker is its :meth:`TaskSpec.wire` tuple
(``runtime._private.task_wire``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._private.serialization import SerializedObject
from .._private.task_wire import KIND_TASK, WireTask
from ._reference import Reference


class ArgSlot:
    """Stands in the pickled arguments for the i-th top-level ``ObjectRef``."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArgSlot, (self.index,))


#: Tasks that share one are interchangeable on a lease: same resources, same
#: placement, same runtime environment.
SchedulingKey = tuple[tuple[tuple[str, float], ...], tuple[Any, ...]]


#: ``TaskSpec.event_row`` of an attempt whose task events row is not made yet.
DEFERRED_ROW = -2


class TaskState(enum.Enum):
    RESOLVING = "RESOLVING"  # waiting for its function export or ref arguments
    QUEUED = "QUEUED"  # waiting for a lease (or, for an actor call, its turn)
    PUSHED = "PUSHED"  # sent to a worker
    FINISHED = "FINISHED"


@dataclass(eq=False, slots=True)
class TaskSpec:
    """A pending task. The per-call paths make it from its ten required
    fields, positionally, and set the others after: keywords cost 1.3 us
    against 0.55 (the generated ``__init__`` matches each against 33 names)."""

    task_id: bytes
    function_id: bytes
    name: str
    args_data: SerializedObject
    arg_refs: Sequence[Reference]
    num_returns: int
    resources: dict[str, float]
    max_retries: int
    retry_exceptions: bool | tuple[type[BaseException], ...]
    return_ids: Sequence[bytes]
    retries_left: int = 0
    # (Empty sequences are the shared empty tuple: an in-flight call's objects
    # are what the cyclic collector walks; most calls have no ref arguments.)
    resolved: Sequence[SerializedObject] = ()
    kind: int = KIND_TASK
    extra: Any = None
    state: TaskState = TaskState.RESOLVING
    cancelled: bool = False
    actor_key: bytes = b""  # for an actor call: the handle's key
    # Refs nested in the arguments, held until the reply (ownership rule 2).
    nested: Sequence[Reference] = ()
    owner_id: bytes = b""
    # The environment its worker needs (canonical JSON; "" for none): workers
    # of different environments are never shared.
    runtime_env: str = ""
    # Where to run it (a SchedulingStrategy message; None: the default).
    strategy: Any = None
    # The submitter's queue for it (scheduling key and argument locality).
    queue_key: Any = None
    # While RESOLVING: the asyncio task that waits for its export and arguments.
    resolver: Any = None
    # The task of this process that submitted it (None: the driver's main code).
    parent_id: bytes | None = None
    # 0, then one more per retry (task events are per attempt).
    attempt: int = 0
    # Its row in the owner's task events batch numbered ``event_batch`` (a
    # cache: valid while that batch is the open one; each new attempt looks
    # its row up again, in ``TaskEvents.submitted``).
    event_batch: int = -1
    event_row: int = -1
    # While ``event_row`` is ``DEFERRED_ROW``, the attempt's states on its way
    # to a worker, kept here until its row is made (``TaskEvents.submitted``):
    # when it entered PENDING_ARGS_AVAIL, PENDING_NODE_ASSIGNMENT and
    # SUBMITTED_TO_WORKER (unix us, 0: not yet), its definition's info and
    # (an actor call's) its actor's.
    event_first: int = 0
    event_assigned: int = 0
    event_pushed: int = 0
    event_info: Any = None
    event_actor: Any = None
    # False: no task events for it, here or where it runs (``enable_task_events``).
    events: bool = True

    @property
    def scheduling_key(self) -> SchedulingKey:
        strategy = self.strategy
        where = (
            ()
            if strategy is None
            else (
                int(strategy.kind),
                strategy.node_id,
                bool(strategy.soft),
                tuple(sorted(strategy.label_selector.items())),
                tuple(tuple(sorted(f.conditions.items())) for f in strategy.fallback),
            )
        )
        return tuple(sorted(self.resources.items())), (*where, self.runtime_env)

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
            self.attempt,
            self.events,
        )
