"""The in-process store: small objects this worker owns or has fetched.

Touched only from the core worker's loop, except :meth:`get_nowait` and
:meth:`present`, dict reads that other threads may do (atomic under the GIL)
for the fast paths of ``get`` and ``wait`` on ready objects, and :meth:`on_ready` and
:meth:`drop_callbacks`, which a thread blocking in ``get`` or ``wait`` calls
itself (no hand-off to the loop): ``_lock`` makes their check-then-register
atomic with :meth:`put`'s store-then-take.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from .._private.serialization import SerializedObject

K = TypeVar("K")
V = TypeVar("V")

#: What ``on_ready`` calls with each object as it is put: its id and value.
ReadyCallback = Callable[[bytes, SerializedObject], None]


def discard_from(table: dict[K, list[V]], key: K, item: V) -> None:
    """Removes ``item`` from ``table[key]`` if there, and the key once its list is empty."""
    items = table.get(key)
    if items is not None:
        with contextlib.suppress(ValueError):
            items.remove(item)
        if not items:
            del table[key]


class MemoryStore:
    def __init__(self) -> None:
        self._objects: dict[bytes, SerializedObject] = {}
        # Invariant: no id is in both ``_objects`` and ``_waiters`` (or ``_callbacks``).
        self._waiters: dict[bytes, list[asyncio.Future[SerializedObject]]] = {}
        self._callbacks: dict[bytes, list[ReadyCallback]] = {}
        self._lock = threading.Lock()  # guards _callbacks, and _objects' writes by put

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self._objects

    def put(self, object_id: bytes, obj: SerializedObject) -> None:
        with self._lock:
            self._objects[object_id] = obj
            callbacks = self._callbacks.pop(object_id, ()) if self._callbacks else ()
        if self._waiters:
            for fut in self._waiters.pop(object_id, ()):
                if not fut.done():
                    fut.set_result(obj)
        for callback in callbacks:
            callback(object_id, obj)

    def put_new(self, object_id: bytes, obj: SerializedObject) -> None:
        """Stores, from any thread, an object whose id no one has seen yet (a
        put's, before its ref is handed out): no waiter or callback can be due."""
        with self._lock:
            self._objects[object_id] = obj

    def get_nowait(self, object_id: bytes) -> SerializedObject | None:
        return self._objects.get(object_id)

    def present(self, object_ids: Iterable[bytes]) -> list[bool]:
        """Whether each object is here, in order (one C-level pass: ``wait``
        checks up to thousands of ids per call)."""
        return list(map(self._objects.__contains__, object_ids))

    def on_ready(self, object_ids: Sequence[bytes], callback: ReadyCallback) -> list[bytes]:
        """Calls ``callback(id, obj)`` for each object not here yet once it is (on
        the thread that puts it); returns the ids already here, for which it
        is not called. Any thread; one lock for the whole list."""
        objects = self._objects
        callbacks = self._callbacks
        here = []
        with self._lock:
            for object_id in object_ids:
                if object_id in objects:
                    here.append(object_id)
                else:
                    callbacks.setdefault(object_id, []).append(callback)
        return here

    def drop_callbacks(self, object_ids: Sequence[bytes], callback: ReadyCallback) -> None:
        """Withdraws ``callback`` where not called yet (its waiter gave up or is
        done). Any thread."""
        with self._lock:
            for object_id in object_ids:
                discard_from(self._callbacks, object_id, callback)

    def wait_for(self, object_id: bytes) -> asyncio.Future[SerializedObject]:
        """A future resolved when the object is put (at once if it is here)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[SerializedObject] = loop.create_future()
        obj = self._objects.get(object_id)
        if obj is not None:
            fut.set_result(obj)
            return fut
        self._waiters.setdefault(object_id, []).append(fut)
        fut.add_done_callback(lambda f: self._forget_waiter(object_id, f))
        return fut

    def _forget_waiter(self, object_id: bytes, fut: asyncio.Future[SerializedObject]) -> None:
        if fut.cancelled():
            discard_from(self._waiters, object_id, fut)

    def delete(self, object_id: bytes) -> None:
        self._objects.pop(object_id, None)

    def take(self, object_id: bytes) -> SerializedObject | None:
        """Deletes the object, returning it (None if it was not here)."""
        return self._objects.pop(object_id, None)
