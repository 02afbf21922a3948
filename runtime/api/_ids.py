"""Ray's id objects (``hex()``, ``binary()``, ``from_hex()``, ``nil()``) for the
ids the API hands out, and the others Ray's top level names."""

from __future__ import annotations

import os
from typing import TypeVar

IdT = TypeVar("IdT", bound="BaseID")


class BaseID:
    """An id: equal to another of its kind with the same bytes, hashable."""

    __slots__ = ("_id",)
    #: How many bytes an id of this kind has.
    SIZE = 16

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != self.SIZE:
            raise ValueError(f"{type(self).__name__} takes {self.SIZE} bytes, got {raw!r:.80}")
        self._id = raw

    @classmethod
    def size(cls) -> int:
        return cls.SIZE

    @classmethod
    def from_binary(cls: type[IdT], raw: bytes) -> IdT:
        return cls(raw)

    @classmethod
    def from_hex(cls: type[IdT], text: str) -> IdT:
        try:
            raw = bytes.fromhex(text)
        except (TypeError, ValueError):
            raise ValueError(f"{cls.__name__}.from_hex: {text!r:.80} is not hex") from None
        return cls(raw)

    @classmethod
    def nil(cls: type[IdT]) -> IdT:
        return cls(b"\xff" * cls.SIZE)

    @classmethod
    def from_random(cls: type[IdT]) -> IdT:
        return cls(os.urandom(cls.SIZE))

    def is_nil(self) -> bool:
        return self._id == b"\xff" * self.SIZE

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


class JobID(BaseID):
    """A job's id (its ``hex()`` is what ``get_runtime_context().get_job_id()`` says):
    the job's number in 4 bytes, little-endian as Ray's (job 1 is ``01000000``)."""

    __slots__ = ()
    SIZE = 4

    @classmethod
    def from_int(cls, value: int) -> JobID:
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * cls.SIZE):
            raise ValueError(f"JobID.from_int takes an int in [0, 2**32), got {value!r:.80}")
        return cls(value.to_bytes(cls.SIZE, "little"))

    def int(self) -> int:
        return int.from_bytes(self._id, "little")


class NodeID(BaseID):
    """A node's id (``runtime.nodes()``'s ``NodeID`` is its hex)."""

    __slots__ = ()


class ActorID(BaseID):
    """An actor's id (``get_runtime_context().get_actor_id()`` is its hex)."""

    __slots__ = ()


class WorkerID(BaseID):
    """A worker's or driver's id."""

    __slots__ = ()


class UniqueID(BaseID):
    """Any other 16-byte id."""

    __slots__ = ()


class FunctionID(BaseID):
    """A remote function's or actor class's definition id."""

    __slots__ = ()


class ActorClassID(BaseID):
    """An actor class's id."""

    __slots__ = ()
