"""What a task is, at its owner and on the wire.

The owner keeps a :class:`TaskSpec` per pending task. What travels to the
executing worker is a plain tuple (:data:`WireTask`), pickled in batches:
the fields the worker needs, with every top-level ``ObjectRef`` argument
already resolved to its serialized value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._object_ref import ObjectRef
from .._serialization import SerializedObject

#: (task_id, function_id, name, args_data, resolved_args, num_returns)
WireTask = tuple[bytes, bytes, str, bytes, list[SerializedObject], int]
#: (task_id, ok, returns or [error], application_error)
WireReply = tuple[bytes, bool, list[SerializedObject], bool]


class ArgSlot:
    """Stands in the pickled arguments for the i-th top-level ``ObjectRef``."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArgSlot, (self.index,))


@dataclass(eq=False, slots=True)
class TaskSpec:
    task_id: bytes
    function_id: bytes
    name: str
    args_data: bytes
    arg_refs: list[ObjectRef]
    num_returns: int
    resources: dict[str, float]
    max_retries: int
    retry_exceptions: bool | tuple[type[BaseException], ...]
    return_ids: list[bytes]
    retries_left: int = 0
    resolved: list[SerializedObject] = field(default_factory=list)

    @property
    def scheduling_key(self) -> tuple[tuple[str, float], ...]:
        return tuple(sorted(self.resources.items()))

    def wire(self) -> WireTask:
        return (
            self.task_id,
            self.function_id,
            self.name,
            self.args_data,
            self.resolved,
            self.num_returns,
        )
