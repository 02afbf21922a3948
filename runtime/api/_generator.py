"""``ObjectRefGenerator``: the refs a streaming generator task yields, as they come.

``for ref in gen`` (or ``next(gen)``) waits for the next item; ``async for
ref in gen`` (or ``await anext(gen)``) waits on the caller's loop with no
thread. Each ref is the caller's own, freed when dropped. An error raised
by the generator is the next ref's value (it raises at ``get``), then the
iteration ends. Dropping the generator frees the items it did not hand out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .._private.ids import task_of
from ..core_worker import check_blocking_allowed
from ._object_ref import ObjectRef
from ._objects import put

if TYPE_CHECKING:
    from ..core_worker import CoreWorker


class ObjectRefGenerator(Iterator[ObjectRef], AsyncIterator[ObjectRef]):
    def __init__(self, completed: ObjectRef, worker: CoreWorker) -> None:
        self._completed = completed
        self._task_id = task_of(completed.binary())
        self._worker = worker

    # -- iterating ----------------------------------------------------------------------
    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef:
        check_blocking_allowed("ObjectRefGenerator.__next__", "await anext(gen)")
        worker = self._worker
        object_id = worker.bridge.run_blocking(worker.generators.next_item(self._task_id))
        if object_id is None:
            raise StopIteration
        return self._ref(object_id)

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        worker = self._worker
        object_id = await worker.bridge.on_own_loop(worker.generators.next_item(self._task_id))
        if object_id is None:
            raise StopAsyncIteration
        return self._ref(object_id)

    def _ref(self, object_id: bytes) -> ObjectRef:
        worker = self._worker
        ref = worker.make_ref(object_id, worker.address, worker, counted=True)
        assert isinstance(ref, ObjectRef)
        return ref

    # -- state --------------------------------------------------------------------------
    def completed(self) -> ObjectRef:
        """A ref that resolves when the task ends (to its item count), or raises its error."""
        return self._completed

    def next_ready(self) -> bool:
        """Whether ``next()`` would return (or stop) without waiting."""
        return self._worker.generators.ready(self._task_id)

    def is_finished(self) -> bool:
        """Whether every item was handed out and the task has ended."""
        return self._worker.generators.finished(self._task_id)

    def task_id(self) -> str:
        return self._task_id.hex()

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(
            "an ObjectRefGenerator cannot be passed to another task or stored, as in Ray: "
            "pass the refs it yields instead (for example list(gen))"
        )

    def __del__(self) -> None:
        worker = self.__dict__.get("_worker")
        if worker is None:
            return
        try:
            worker.post(worker.generators.drop, self._task_id)
        except Exception:  # interpreter shutdown
            pass


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task (Ray's legacy form): the
    refs of the items it yielded, iterated once the task is done."""

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = refs

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


class DynamicCall:
    """Runs a generator function in a task and stores each item as its own
    object: what a ``num_returns="dynamic"`` task runs."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> DynamicObjectRefGenerator:
        return DynamicObjectRefGenerator([put(item) for item in self.function(*args, **kwargs)])
