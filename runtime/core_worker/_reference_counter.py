"""Reference counts: a synchronous table, no I/O (design, section 6).

At an object's **owner**, an entry counts
- ``local``: live ``ObjectRef`` objects in this process, including those
  held on behalf of others (refs nested in a stored value, refs pinned until
  a receiver has registered);
- ``submitted``: pending tasks that take the object as a top-level argument;
- ``borrowers``: other processes that hold refs to it. A borrower registers
  itself when it first gets a ref (``AddBorrower``) and the owner then waits
  for it to let go (``WaitForRefRemoved``), or to die.

In a **borrower**, an entry counts its live refs to an object owned
elsewhere; when it reaches zero the owner is told.

An entry exists while any count holds; when a method reports it dropped,
the caller frees the value (owned) or forgets its cached copy (borrowed).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import cast

#: (host, port, worker_id) of a core worker.
Address = tuple[str, int, bytes]

_NO_BORROWERS: frozenset[Address] = frozenset()


@dataclass(slots=True)
class RefCount:
    owned: bool
    local: int = 0
    submitted: int = 0
    # A set from the first borrower on; until then the shared empty frozenset
    # (most objects are never borrowed, and every call's result has an entry).
    borrowers: Set[Address] = _NO_BORROWERS


class ReferenceCounter:
    def __init__(self) -> None:
        self._refs: dict[bytes, RefCount] = {}

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self._refs

    def get(self, object_id: bytes) -> RefCount | None:
        return self._refs.get(object_id)

    def items(self) -> list[tuple[bytes, RefCount]]:
        return list(self._refs.items())

    def owns(self, object_id: bytes) -> bool:
        ref = self._refs.get(object_id)
        return ref is not None and ref.owned

    def add_owned(self, object_id: bytes, local: int = 1) -> None:
        """A new object owned here (a put or a task return), with its first refs."""
        ref = self._refs.get(object_id)
        if ref is None:
            self._refs[object_id] = RefCount(owned=True, local=local)
        else:
            ref.owned = True
            ref.local += local

    def add_local(self, object_id: bytes, owned: bool) -> bool:
        """One more local ref; True if this process now borrows the object anew."""
        ref = self._refs.get(object_id)
        if ref is None:
            self._refs[object_id] = RefCount(owned=owned, local=1)
            return not owned
        ref.local += 1
        return False

    def remove_local(self, object_id: bytes) -> RefCount | None:
        """Drops one local ref; returns the entry if it is no longer used here."""
        ref = self._refs.get(object_id)
        if ref is None:
            return None
        ref.local -= 1
        return self._maybe_drop(object_id, ref)

    def add_submitted(self, object_ids: list[bytes]) -> None:
        for object_id in object_ids:
            ref = self._refs.get(object_id)
            if ref is None:
                ref = self._refs[object_id] = RefCount(owned=False)
            ref.submitted += 1

    def remove_submitted(self, object_ids: list[bytes]) -> list[tuple[bytes, RefCount]]:
        dropped = []
        for object_id in object_ids:
            ref = self._refs.get(object_id)
            if ref is None:
                continue
            ref.submitted -= 1
            if self._maybe_drop(object_id, ref) is not None:
                dropped.append((object_id, ref))
        return dropped

    def add_borrower(self, object_id: bytes, borrower: Address) -> bool:
        """Records a borrower of an owned object; True if it is new."""
        ref = self._refs.get(object_id)
        if ref is None or not ref.owned or borrower in ref.borrowers:
            return False
        if ref.borrowers:
            cast(set[Address], ref.borrowers).add(borrower)
        else:
            ref.borrowers = {borrower}
        return True

    def remove_borrower(self, object_id: bytes, borrower: Address) -> RefCount | None:
        ref = self._refs.get(object_id)
        if ref is None:
            return None
        if borrower in ref.borrowers:
            cast(set[Address], ref.borrowers).discard(borrower)
        return self._maybe_drop(object_id, ref)

    def _maybe_drop(self, object_id: bytes, ref: RefCount) -> RefCount | None:
        # Unused: no count holds it (checked once per ref dropped, so inline).
        if ref.local <= 0 and ref.submitted <= 0 and not ref.borrowers:
            del self._refs[object_id]
            return ref
        return None
