"""Ray's id objects (``hex()``, ``binary()``) for the ids the API hands out."""

from __future__ import annotations


class BaseID:
    """An id: equal to another of its kind with the same bytes, hashable."""

    __slots__ = ("_id",)

    def __init__(self, raw: bytes) -> None:
        self._id = raw

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()})"


class TaskID(BaseID):
    """A task's id (``ObjectRef.task_id()``; its ``hex()`` is what the task's
    ``get_runtime_context().get_task_id()`` says)."""

    __slots__ = ()


class PlacementGroupID(BaseID):
    """A placement group's id."""

    __slots__ = ()
