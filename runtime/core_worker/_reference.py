"""A counted reference to an object, as the core worker sees it.

The core worker needs three things of a ref: the object's id, its owner's
address, and the local count the ref holds at this process's reference
counter while it lives (``__init__`` adds one, ``__del__`` drops it).
:class:`Reference` is exactly that. The public ``ObjectRef`` (the API layer)
derives from it and adds awaiting, the asyncio future protocol and
pickling. The core worker never imports ``ObjectRef``: it makes the refs
that users get through the :data:`RefFactory` the API layer gives it, and
plain :class:`Reference` objects for the refs it only holds (a result's
nested refs, kept until the result is freed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

#: (host, port, worker_id) of the core worker that owns an object.
OwnerAddress = tuple[str, int, bytes]

#: The owner of a ref made from an id alone (``ObjectRef.from_binary``,
#: ``from_random``, ``nil``) that this process does not own: nobody to ask.
NO_OWNER: OwnerAddress = ("", 0, b"")


class Reference:
    __slots__ = ("__weakref__", "_id", "_owner", "_worker")

    def __init__(
        self,
        object_id: bytes,
        owner: OwnerAddress,
        worker: CoreWorker,
        *,
        counted: bool = False,
    ) -> None:
        """``counted``: the creator already added this ref's local count.
        (``ObjectRef.__init__`` repeats these lines rather than call them.)"""
        self._id = object_id
        self._owner = owner
        self._worker = worker
        if not counted:
            worker.objects.add_local_ref(self)

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    @property
    def owner_address(self) -> OwnerAddress:
        return self._owner

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and other._id == self._id

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __del__(self) -> None:
        try:
            self._worker.objects.remove_local_ref(self._id)
        except Exception:  # interpreter shutdown: nothing left to count
            pass


class RefFactory(Protocol):
    """Makes the refs handed to users (the API layer's ``ObjectRef``)."""

    def __call__(
        self, object_id: bytes, owner: OwnerAddress, worker: CoreWorker, *, counted: bool = ...
    ) -> Reference: ...
