"""What travels on a task stream, owner to worker and back.

A task is a plain tuple (:data:`WireTask`), pickled in batches: the fields
the worker needs, with every top-level ``ObjectRef`` argument already
resolved to its serialized value. A batch may also carry
:class:`CancelRequest` and :class:`ReleasePins` items. Replies are
:data:`WireReply` tuples. Plain tuples, not protobuf messages: one pickle of a
batch costs about 1 us, encoding every field as a message 10-30 us (see
docs/architecture.md).

Both the core worker (tasks and actor calls) and the gcs (actor creation
tasks) speak it, so it lives in the plumbing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .serialization import SerializedObject

# Kinds of wire task (plain ints: they are pickled with every task).
KIND_TASK = 0
KIND_ACTOR_CREATION = 1
KIND_ACTOR_CALL = 2

#: (task_id, function_id, name, args_data, resolved_args, num_returns, kind, extra,
#: owner_id, attempt, events). ``extra``: the method name for an actor call; for an actor
#: creation a dict (actor_id, class_name, max_concurrency, resources, and
#: gpu_ids when it has GPUs, placement in a group); for a task see
#: :func:`task_extra`.
#: ``owner_id``: the worker id of the task's owner (its results' owner);
#: ``attempt``: 0, then one more for each retry (what its task events name);
#: ``events``: False when the task's events are off (``enable_task_events``): the
#: worker then reports nothing of it and does not stamp its reply.
WireTask = tuple[
    bytes, bytes, str, SerializedObject, Sequence[SerializedObject], int, int, Any, bytes, int, bool
]
#: (task_id, ok, returns or [error], application_error, nested, ran): ``nested``
#: lists, per return, the (object id, owner) of each ref inside it (empty when
#: no return holds one); ``None`` means the worker handed the task back
#: unstarted (run it elsewhere).
#: ``ran``: (start, end, pid) of the run, unix microseconds, when it ran (the
#: owner records them as the attempt's RUNNING and end events), else None.
WireReply = tuple[
    bytes,
    bool,
    list[SerializedObject],
    bool,
    Sequence[list[tuple[bytes, tuple[str, int, bytes]]]] | None,
    tuple[int, int, int] | None,
]


#: What a task asks for unless told otherwise: its wire ``extra`` is then None.
DEFAULT_TASK_RESOURCES = {"CPU": 1.0}

#: The placement group a task or actor runs in: (group id hex, bundle index or
#: -1, whether the tasks it submits run in the group too).
Placement = tuple[str, int, bool]


def task_extra(
    resources: dict[str, float], max_calls: int, placement: Placement | None = None
) -> Any:
    """A task's ``extra`` on the wire: None for the common case (one CPU, no
    ``max_calls``, no placement group), else ``(max_calls, resources, gpu_ids,
    placement)`` (the last two may be left off)."""
    if placement is not None:
        return (max_calls, resources, (), placement)
    if not max_calls and resources == DEFAULT_TASK_RESOURCES:
        return None
    return (max_calls, resources)


def method_of(task: WireTask) -> str:
    """The method an actor call names (its ``extra``: the name, or the name and
    its concurrency group)."""
    extra = task[7]
    return extra if type(extra) is str else extra[0]


def with_gpu_ids(task: WireTask, gpu_ids: tuple[int, ...]) -> WireTask:
    """The task as pushed to a worker whose lease holds these GPU ids."""
    extra = task[7]
    if task[6] == KIND_ACTOR_CREATION:
        extra = {**extra, "gpu_ids": gpu_ids}
    else:
        extra = extra or (0, DEFAULT_TASK_RESOURCES)
        extra = (extra[0], extra[1], gpu_ids, *extra[3:])
    return (*task[:7], extra, *task[8:])


def placement_of(task: WireTask) -> Placement | None:
    """The placement group a pushed task (or actor creation) runs in."""
    extra = task[7]
    if extra is None or task[6] == KIND_ACTOR_CALL:
        return None
    if task[6] == KIND_ACTOR_CREATION:
        placement: Placement | None = extra.get("placement")
        return placement
    return extra[3] if len(extra) > 3 else None


def gpu_ids_of(task: WireTask) -> tuple[int, ...]:
    """The GPU ids a pushed task (or actor creation) was given."""
    extra = task[7]
    if extra is None or task[6] == KIND_ACTOR_CALL:
        return ()
    if task[6] == KIND_ACTOR_CREATION:
        return tuple(extra.get("gpu_ids", ()))
    return tuple(extra[2]) if len(extra) > 2 else ()


#: ``num_returns`` on the wire of a streaming generator task (as Ray's
#: ``num_returns="streaming"``): ``-1 - backpressure``, where ``backpressure``
#: is the number of unconsumed items at which the generator pauses (0: never).
def streaming_returns(backpressure: int) -> int:
    return -1 - max(0, backpressure)


def backpressure_of(num_returns: int) -> int | None:
    """None for an ordinary task; else the streaming task's backpressure (0: none)."""
    return None if num_returns >= 0 else -1 - num_returns


class GeneratorItem:
    """Worker to owner, on the task stream: item ``index`` of a streaming
    task, reported as soon as it is yielded. ``nested``: the (object id,
    owner) of each ref inside it."""

    __slots__ = ("index", "nested", "obj", "task_id")

    def __init__(
        self,
        task_id: bytes,
        index: int,
        obj: SerializedObject,
        nested: list[tuple[bytes, tuple[str, int, bytes]]],
    ) -> None:
        self.task_id = task_id
        self.index = index
        self.obj = obj
        self.nested = nested

    def __reduce__(self) -> tuple[Any, ...]:
        return (GeneratorItem, (self.task_id, self.index, self.obj, self.nested))


class WorkerExiting:
    """Worker to owner, on the task stream, ahead of the reply that ends the
    task which ran a function's ``max_calls``: the worker exits once that
    reply is out. Its owner pushes it nothing more and gives its lease back as
    exiting; a task it had pushed there that gets no answer never started
    there (the worker starts nothing once it retires): it runs elsewhere."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (WorkerExiting, ())


#: The one instance a worker sends.
WORKER_EXITING = WorkerExiting()


class GeneratorAck:
    """Owner to worker: the caller has consumed ``consumed`` items of a
    streaming task (what backpressure waits for)."""

    __slots__ = ("consumed", "task_id")

    def __init__(self, task_id: bytes, consumed: int) -> None:
        self.task_id = task_id
        self.consumed = consumed

    def __reduce__(self) -> tuple[Any, ...]:
        return (GeneratorAck, (self.task_id, self.consumed))


class CancelRequest:
    """Asks the executing worker to cancel a task it has (queued or running);
    ``recursive``: the tasks that task submitted too."""

    __slots__ = ("recursive", "task_id")

    def __init__(self, task_id: bytes, recursive: bool = False) -> None:
        self.task_id = task_id
        self.recursive = recursive

    def __reduce__(self) -> tuple[Any, ...]:
        return (CancelRequest, (self.task_id, self.recursive))


class ReleasePins:
    """Tells a worker that the owner of a task's result took over its nested refs."""

    __slots__ = ("task_id",)

    def __init__(self, task_id: bytes) -> None:
        self.task_id = task_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReleasePins, (self.task_id,))
