"""Reference counts, at the owner: a synchronous table, no I/O.

This first version counts what one process can see:
- ``local``: live ``ObjectRef`` objects in this process;
- ``submitted``: pending tasks that take the object as an argument;
- ``escaped``: the ref was pickled into another object, task or reply, so
  another process may hold it. Until borrowers report back to the owner (the
  distributed protocol), an escaped object is kept for the owner's lifetime:
  never freed too early, at the cost of keeping it.

An entry exists while any count holds. The caller frees an object's value
when a method returns its id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Reference:
    owned: bool
    local: int = 0
    submitted: int = 0
    escaped: bool = False

    def unused(self) -> bool:
        return self.local <= 0 and self.submitted <= 0 and not self.escaped


class ReferenceCounter:
    def __init__(self) -> None:
        self._refs: dict[bytes, Reference] = {}

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, object_id: bytes) -> bool:
        return object_id in self._refs

    def owns(self, object_id: bytes) -> bool:
        ref = self._refs.get(object_id)
        return ref is not None and ref.owned

    def add_owned(self, object_id: bytes, local: int = 1) -> None:
        """A new object owned here (a put or a task return), with its first refs."""
        ref = self._refs.get(object_id)
        if ref is None:
            self._refs[object_id] = Reference(owned=True, local=local)
        else:
            ref.owned = True
            ref.local += local

    def add_local(self, object_id: bytes) -> None:
        ref = self._refs.get(object_id)
        if ref is None:
            self._refs[object_id] = Reference(owned=False, local=1)
        else:
            ref.local += 1

    def remove_local(self, object_id: bytes) -> bool:
        """Drops one local ref; True when the object is no longer used here."""
        ref = self._refs.get(object_id)
        if ref is None:
            return False
        ref.local -= 1
        return self._maybe_drop(object_id, ref)

    def add_submitted(self, object_ids: list[bytes]) -> None:
        for object_id in object_ids:
            ref = self._refs.get(object_id)
            if ref is None:
                ref = self._refs[object_id] = Reference(owned=False)
            ref.submitted += 1

    def remove_submitted(self, object_ids: list[bytes]) -> list[bytes]:
        freed = []
        for object_id in object_ids:
            ref = self._refs.get(object_id)
            if ref is None:
                continue
            ref.submitted -= 1
            if self._maybe_drop(object_id, ref):
                freed.append(object_id)
        return freed

    def mark_escaped(self, object_id: bytes) -> None:
        ref = self._refs.get(object_id)
        if ref is not None and ref.owned:
            ref.escaped = True

    def _maybe_drop(self, object_id: bytes, ref: Reference) -> bool:
        if ref.unused():
            del self._refs[object_id]
            return True
        return False
