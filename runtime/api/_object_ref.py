"""``ObjectRef``: the name of an immutable object somewhere in the cluster.

A ref is awaitable, and it is also a duck-typed asyncio future: it has
``add_done_callback``, ``result``, ``done``, ``cancel`` and the rest, so
``asyncio.wait``, ``asyncio.as_completed``, ``asyncio.wait_for`` and
``asyncio.gather`` accept refs directly and hand back the refs themselves
(``ref in done`` holds after ``asyncio.wait``).

The future state lives in a *waiter*: an asyncio future on the loop that
first asked for it, resolved with the object's deserialized value (or its
error). Cancelling a ref (as ``wait_for`` does on timeout) cancels only that
local wait, never the remote task; the next ``await`` starts a fresh waiter.

Each live ``ObjectRef`` counts as one local reference at its owner's
reference counter (``__init__`` adds one, ``__del__`` drops it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable, Generator
from contextvars import Context
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from .._private import serialization
from .._private.ids import OBJECT_ID_SIZE, task_of
from ..core_worker import NO_OWNER, OwnerAddress, Reference, await_future, in_asyncio
from . import _context
from ._ids import TaskID

if TYPE_CHECKING:
    from ..core_worker import CoreWorker


T = TypeVar("T", covariant=True)

#: The id of Ray's nil ref (``ObjectRef.nil()``): every byte 0xff.
NIL_ID = b"\xff" * OBJECT_ID_SIZE


class ObjectRef(Reference, Generic[T]):
    """The name of an immutable object; ``ObjectRef[T]`` names one of type ``T``."""

    __slots__ = ("_blocking", "_waiter")

    def __init__(
        self,
        object_id: bytes,
        owner: OwnerAddress,
        worker: CoreWorker,
        *,
        counted: bool = False,
    ) -> None:
        """``counted``: the creator already added this ref's local count."""
        self._waiter: asyncio.Future[Any] | None = None
        self._blocking = False
        # Reference.__init__, inlined (a frame less per ref made).
        self._id = object_id
        self._owner = owner
        self._worker = worker
        if not counted:
            worker.objects.add_local_ref(self)

    def __reduce__(self) -> tuple[Any, ...]:
        if not serialization.note_ref(self) and self._owner != NO_OWNER:
            self._worker.objects.pin_out_of_band(self)
        return (_rebuild, (self._id, self._owner))

    def __copy__(self) -> ObjectRef[T]:
        return self  # (a name: copying it pickles nothing)

    def __deepcopy__(self, memo: dict[int, Any]) -> ObjectRef[T]:
        return self

    def task_id(self) -> TaskID:
        """The id of the task that makes this object (a ``put``'s: its own)."""
        return TaskID(task_of(self._id))

    def call_site(self) -> str:
        """Where this process made the object (``put at file.py:12``), if it did; else ""."""
        worker = self._worker
        return "" if worker is None else worker.objects.call_sites.get(self._id, "")

    def is_nil(self) -> bool:
        """True only for ``ObjectRef.nil()`` (Ray's id protocol)."""
        return self._id == NIL_ID

    # -- refs made from an id alone (Ray's id protocol) ---------------------------
    @classmethod
    def nil(cls) -> ObjectRef[Any]:
        """The nil ref: names no object (a placeholder; ``is_nil()`` is True)."""
        return _from_id(NIL_ID)

    @classmethod
    def from_random(cls) -> ObjectRef[Any]:
        """A ref with a random id: names no object."""
        return _from_id(os.urandom(OBJECT_ID_SIZE))

    @classmethod
    def from_binary(cls, raw: bytes) -> ObjectRef[Any]:
        """The ref named by ``raw`` (``ref.binary()``). As in Ray, it reads the
        object only if this process owns it; any other owner is unknown, and
        ``get`` raises :class:`OwnerDiedError` (pass refs themselves, not ids)."""
        if not isinstance(raw, bytes) or len(raw) != OBJECT_ID_SIZE:
            raise ValueError(
                f"ObjectRef.from_binary takes {OBJECT_ID_SIZE} bytes (a ref's binary()), "
                f"got {raw!r:.80}"
            )
        return _from_id(raw)

    @classmethod
    def from_hex(cls, text: str) -> ObjectRef[Any]:
        """The ref named by ``text`` (``ref.hex()``), as ``from_binary``."""
        try:
            raw = bytes.fromhex(text)
        except (TypeError, ValueError):
            raise ValueError(f"ObjectRef.from_hex: {text!r:.80} is not hex") from None
        return cls.from_binary(raw)

    @classmethod
    def size(cls) -> int:
        """Bytes in an object's id (``binary()``)."""
        return OBJECT_ID_SIZE

    # -- waiting ----------------------------------------------------------
    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` resolved with the object's value."""
        return (self._worker or _context.current()).reader.concurrent_future(self)

    def as_future(self) -> asyncio.Future[T]:
        """Ray's: an asyncio future of the object's value, on the running loop
        (the ref itself is one too: ``await ref`` and ``asyncio.wait([ref])`` work)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "ObjectRef.as_future() needs a running event loop; use ref.future() "
                "(a concurrent.futures.Future) outside one"
            ) from None
        return loop.create_task(self._as_value())

    async def _as_value(self) -> T:
        return await self

    def __await__(self) -> Generator[Any, None, T]:
        if not in_asyncio():  # trio (or anyio on trio)
            return await_future(self.future()).__await__()
        return self._current_waiter(create=True).__await__()

    __iter__ = __await__

    def _current_waiter(self, create: bool) -> asyncio.Future[Any]:
        waiter = self._waiter
        if waiter is None or (create and waiter.cancelled()):
            # (A ref made by nil() before init has no worker: the current one.)
            worker = self._worker or _context.current()
            waiter = worker.reader.waiter(self, _running_loop_or_none())
            self._waiter = waiter
        return waiter

    # -- the asyncio future protocol ----------------------------------------
    @property
    def _asyncio_future_blocking(self) -> bool:
        return self._blocking

    @_asyncio_future_blocking.setter
    def _asyncio_future_blocking(self, value: bool) -> None:
        self._blocking = value

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._current_waiter(create=True).get_loop()

    def add_done_callback(
        self, fn: Callable[[ObjectRef], object], *, context: Context | None = None
    ) -> None:
        waiter = self._current_waiter(create=True)
        waiter.add_done_callback(_Forward(self, fn), context=context)

    def remove_done_callback(self, fn: Callable[[ObjectRef], object]) -> int:
        waiter = self._waiter
        if waiter is None:
            return 0
        return waiter.remove_done_callback(_Forward(self, fn))

    def done(self) -> bool:
        waiter = self._waiter
        return waiter is not None and waiter.done()

    def cancelled(self) -> bool:
        waiter = self._waiter
        return waiter is not None and waiter.cancelled()

    def cancel(self, msg: Any = None) -> bool:
        """Cancels the local wait on this ref; the remote task goes on."""
        waiter = self._waiter
        return waiter is not None and waiter.cancel(msg)

    def result(self) -> T:
        waiter = self._waiter
        if waiter is None:
            raise asyncio.InvalidStateError("Result is not ready.")
        return waiter.result()

    def exception(self) -> BaseException | None:
        waiter = self._waiter
        if waiter is None:
            raise asyncio.InvalidStateError("Exception is not set.")
        return waiter.exception()


class _Forward:
    """A done callback of a waiter that reports the ref, not the waiter.

    Equal to another ``_Forward`` of the same function, so
    ``remove_done_callback`` finds it.
    """

    __slots__ = ("fn", "ref")

    def __init__(self, ref: ObjectRef, fn: Callable[[ObjectRef], object]) -> None:
        self.ref = ref
        self.fn = fn

    def __call__(self, _waiter: object) -> None:
        self.fn(self.ref)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Forward) and other.fn == self.fn

    def __hash__(self) -> int:
        return hash(self.fn)


def _running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _rebuild(object_id: bytes, owner: OwnerAddress) -> ObjectRef:
    return ObjectRef(object_id, owner, _context.current())


def _from_id(object_id: bytes) -> ObjectRef[Any]:
    """A ref made from an id alone: owned here if this process owns the object,
    else of unknown owner. Counted as any ref (the id may be a live object's),
    and with no runtime up, not counted at all (nothing to count with)."""
    worker = _context.current_or_none()
    if worker is None:
        return ObjectRef(object_id, NO_OWNER, cast(Any, None), counted=True)
    owner = worker.address if worker.refs.owns(object_id) else NO_OWNER
    return ObjectRef(object_id, owner, worker)
