"""The object store's bookkeeping: a synchronous state machine, no I/O.

Objects are created (a segment is allocated), written by their creator,
sealed, then read by any number of clients at once. Each client's reads pin
the object ("readers") until the client releases it. The owner deletes an
object when nobody needs it; its memory is reused once no reader is left.

Accounting: ``used`` is the bytes of segments that hold objects (created,
sealed, or deleted but still read). Pooled free segments are counted apart,
and ``used + pooled <= capacity`` always holds.

Spilling: sealed objects nobody is reading can be written to disk to make
room (least recently used first); their segments are then freed. A spilled
object is restored into memory when it is read again. Secondary copies
(pulled from another node, which keeps the primary) are evicted instead.

Fallback (Ray's fallback allocation): memory outside the capacity, counted
in ``fallback_bytes`` rather than ``used``. An object created when no
spilling can make room for it (it is larger than the store, or the store is
full of objects being read) gets a segment backed by a file on disk; it is
never spilled and lives until it is deleted. A spilled object read while
every byte of the store is being read is restored into a segment of its own,
freed as soon as its last reader lets go (it stays on disk).
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ._segments import Segment, SegmentPool, destroy, round_up


class ObjectState(enum.Enum):
    CREATED = "CREATED"  # allocated, being written by its creator
    SEALED = "SEALED"  # in memory, read-only
    SPILLED = "SPILLED"  # only on disk


class StoreError(Exception):
    """A request the store refuses (bad id, wrong state); the client gets the message."""


class StoreFullError(StoreError):
    """No room, even after spilling everything that can be spilled."""


@dataclass(eq=False)
class SpillFile:
    """A spill file, open and already unlinked: the kernel frees its bytes when
    the store closes it or its process dies, however it dies."""

    path: str  # where it was made (for messages; no name on disk any more)
    fd: int = -1
    live: int = 0  # objects still stored in it


@dataclass(eq=False)
class StoredObject:
    object_id: bytes
    size: int
    state: ObjectState
    creator: int
    segment: Segment | None = None
    readers: dict[int, int] = field(default_factory=dict)  # client id -> pins
    spill: tuple[SpillFile, int] | None = None  # (file, offset) once written to disk
    deleted: bool = False  # the owner freed it; gone once the last reader leaves
    busy: bool = False  # being spilled or restored
    owner: bytes = b""  # the owner's worker id: the object dies with it
    # A copy pulled from another node: evicted (not spilled) to make room,
    # as the node it came from still holds the primary.
    secondary: bool = False
    # Its segment is a fallback allocation, outside the capacity.
    fallback: bool = False


@dataclass(eq=False)
class ClientRecord:
    client_id: int
    # Segments it was given an fd for -> whether that fd was writable.
    mapped: dict[int, bool] = field(default_factory=dict)
    unmap: list[int] = field(default_factory=list)  # segments it should drop


class ObjectStore:
    def __init__(self, capacity: int, spill_threshold: float = 0.8) -> None:
        self.capacity = capacity
        self.spill_threshold = spill_threshold
        self.used = 0
        self.pool = SegmentPool()
        self.objects: dict[bytes, StoredObject] = {}
        # Sealed, in-memory objects in least-recently-used order.
        self._lru: OrderedDict[bytes, None] = OrderedDict()
        self.clients: dict[int, ClientRecord] = {}
        self.spilled_bytes = 0  # on disk now
        self.fallback_bytes = 0
        self.num_restored = 0
        # Since the store started (the metrics' counters).
        self.spilled_bytes_total = 0
        self.restored_bytes_total = 0
        self.spill_files: set[SpillFile] = set()

    # -- clients ----------------------------------------------------------------
    def connect(self, client_id: int) -> None:
        self.clients[client_id] = ClientRecord(client_id)

    def disconnect(self, client_id: int) -> None:
        """A client left: its unsealed objects are aborted, its reads end."""
        self.clients.pop(client_id, None)
        for obj in list(self.objects.values()):
            if obj.state is ObjectState.CREATED and obj.creator == client_id:
                self._remove(obj)
            elif client_id in obj.readers:
                del obj.readers[client_id]
                self._after_release(obj)

    def hand_out(self, client_id: int, segment: Segment, writable: bool = False) -> bool:
        """Records that ``client_id`` gets ``segment`` (to write in it, or only
        to read); True if it needs an fd: it has none, or only a read-only one
        and now writes (a pooled segment reused for an object it creates)."""
        client = self.clients[client_id]
        had = client.mapped.get(segment.segment_id)
        if had is not None and (had or not writable):
            return False
        client.mapped[segment.segment_id] = writable
        return True

    def take_unmaps(self, client_id: int) -> list[int]:
        client = self.clients.get(client_id)
        if client is None or not client.unmap:
            return []
        unmap, client.unmap = client.unmap, []
        return unmap

    # -- room ---------------------------------------------------------------------
    def room_for(self, size: int) -> int:
        """Bytes that must be spilled before ``size`` more fits (0: it fits now).

        Frees pooled segments first. Raises StoreFullError if spilling every
        spillable object would still not make room.
        """
        need = round_up(size)
        if need > self.capacity:
            raise StoreFullError(
                f"an object of {size} bytes cannot fit in an object store of {self.capacity} bytes"
            )
        over = self.used + self.pool.pooled_bytes + need - self.capacity
        if over > 0:
            self._forget_segments(self.pool.shrink(over))
        missing = self.used + need - self.capacity
        if missing <= 0:
            return 0
        spillable = sum(o.segment.size for o in self._spillable() if o.segment is not None)
        if spillable < missing:
            raise StoreFullError(
                f"the object store is full: {size} bytes requested, {self.used} of "
                f"{self.capacity} bytes in use, of which only {spillable} could be spilled "
                "(the rest is being read or written)"
            )
        # Spill down to the threshold, so that one spill makes room for several puts.
        target = self.used + need - int(self.capacity * self.spill_threshold)
        return max(missing, min(target, spillable))

    def spill_candidates(self, nbytes: int) -> list[StoredObject]:
        """Objects to spill (least recently used first) to free ``nbytes``; marks them busy."""
        chosen = []
        for obj in self._spillable():
            if nbytes <= 0:
                break
            assert obj.segment is not None
            nbytes -= obj.segment.size
            if obj.secondary:
                self._remove(obj)
                continue
            if obj.spill is not None:
                # Restored earlier and still on disk: free the memory, no write.
                self._free_segment(obj)
                obj.state = ObjectState.SPILLED
                self._lru.pop(obj.object_id, None)
                continue
            obj.busy = True
            chosen.append(obj)
        return chosen

    def _spillable(self) -> list[StoredObject]:
        out = []
        for object_id in self._lru:
            obj = self.objects[object_id]
            if not obj.readers and not obj.busy and not obj.deleted:
                out.append(obj)
        return out

    # -- the object life cycle ------------------------------------------------------
    def owner_died(self, owner: bytes) -> list[bytes]:
        """Objects share their owner's fate: deletes those of a dead owner."""
        return self.owners_died(lambda o: o == owner)

    def owners_died(self, dead: Callable[[bytes], bool]) -> list[bytes]:
        """Deletes (and returns) the objects of every owner ``dead`` says is gone."""
        doomed = [o.object_id for o in self.objects.values() if o.owner and dead(o.owner)]
        for object_id in doomed:
            self.delete(object_id)
        return doomed

    def _held(self, object_id: bytes) -> StoredObject | None:
        """The object if the store holds it (sealed, in memory or spilled)."""
        obj = self.objects.get(object_id)
        if obj is None or obj.deleted or obj.state is ObjectState.CREATED:
            return None
        return obj

    def contains(self, object_id: bytes) -> bool:
        return self._held(object_id) is not None

    def size_of(self, object_id: bytes) -> int:
        """The object's size if the store holds it, else -1."""
        obj = self._held(object_id)
        return -1 if obj is None else obj.size

    def was_spilled(self, object_id: bytes) -> bool:
        """Whether the store holds the object and has written it to disk."""
        obj = self._held(object_id)
        return obj is not None and obj.spill is not None

    def create(
        self,
        client_id: int,
        object_id: bytes,
        size: int,
        owner: bytes = b"",
        fallback: Segment | None = None,
    ) -> StoredObject:
        """Allocates an object; the caller made room first (``room_for``), or
        gives the ``fallback`` segment it made outside the capacity."""
        if object_id in self.objects:
            raise StoreError(f"object {object_id.hex()} already exists")
        if size < 0:
            raise StoreError(f"invalid size {size}")
        if fallback is not None:
            segment = fallback
            self.fallback_bytes += segment.size
        else:
            if self.used + round_up(size) > self.capacity:
                raise StoreFullError(f"no room for {size} bytes ({self.used}/{self.capacity} used)")
            segment = self.pool.take(size) or self.pool.new(size)
            self.used += segment.size
        obj = StoredObject(object_id, size, ObjectState.CREATED, client_id, segment, owner=owner)
        obj.fallback = fallback is not None
        self.objects[object_id] = obj
        return obj

    def seal(self, client_id: int, object_id: bytes) -> None:
        obj = self._get(object_id)
        if obj.state is not ObjectState.CREATED:
            raise StoreError(f"object {object_id.hex()} is already sealed")
        if obj.creator != client_id:
            raise StoreError(f"object {object_id.hex()} was created by another client")
        obj.state = ObjectState.SEALED
        if not obj.fallback:  # (already on disk: spilling it would free no memory)
            self._lru[object_id] = None

    def abort(self, client_id: int, object_id: bytes) -> None:
        obj = self._get(object_id)
        if obj.state is not ObjectState.CREATED or obj.creator != client_id:
            raise StoreError(f"object {object_id.hex()} is not being created by this client")
        self._remove(obj)

    def lookup(self, object_id: bytes) -> StoredObject | None:
        obj = self.objects.get(object_id)
        if obj is None or obj.deleted or obj.state is ObjectState.CREATED:
            return None
        return obj

    def pin(self, client_id: int, obj: StoredObject) -> None:
        """A client reads a sealed, in-memory object."""
        assert obj.state is ObjectState.SEALED
        obj.readers[client_id] = obj.readers.get(client_id, 0) + 1
        if obj.object_id in self._lru:
            self._lru.move_to_end(obj.object_id)

    def release(self, client_id: int, object_id: bytes) -> None:
        obj = self.objects.get(object_id)
        if obj is None or client_id not in obj.readers:
            return  # late or duplicate releases are harmless
        obj.readers[client_id] -= 1
        if obj.readers[client_id] <= 0:
            del obj.readers[client_id]
        self._after_release(obj)

    def delete(self, object_id: bytes) -> None:
        obj = self.objects.get(object_id)
        if obj is None:
            return
        obj.deleted = True
        if not obj.readers and not obj.busy:
            self._remove(obj)

    # -- spilling and restoring (the I/O is the caller's) ---------------------------
    def spilled(self, obj: StoredObject, file: SpillFile, offset: int) -> None:
        """``obj`` was written to ``file``; its memory is freed unless someone reads it."""
        obj.busy = False
        obj.spill = (file, offset)
        file.live += 1
        self.spill_files.add(file)
        self.spilled_bytes += obj.size
        self.spilled_bytes_total += obj.size
        if obj.deleted and not obj.readers:
            self._remove(obj)
        elif not obj.readers and obj.segment is not None:
            self._free_segment(obj)
            obj.state = ObjectState.SPILLED
            self._lru.pop(obj.object_id, None)

    def spill_failed(self, obj: StoredObject) -> None:
        obj.busy = False
        if obj.deleted and not obj.readers:
            self._remove(obj)

    def begin_restore(self, obj: StoredObject, fallback: bool = False) -> Segment:
        """Allocates memory for a spilled object (room was made, or it is a
        ``fallback`` allocation outside the capacity); marks it busy."""
        if fallback:
            segment = self.pool.new(obj.size)
            self.fallback_bytes += segment.size
            obj.fallback = True
        else:
            segment = self.pool.take(obj.size) or self.pool.new(obj.size)
            self.used += segment.size
        obj.segment = segment
        obj.busy = True
        return segment

    def restored(self, obj: StoredObject) -> None:
        """Back in memory; the disk copy stays, so spilling it again costs no write."""
        obj.busy = False
        obj.state = ObjectState.SEALED
        if not obj.fallback:  # a fallback copy is never spilled: freed when unread
            self._lru[obj.object_id] = None
        self.num_restored += 1
        self.restored_bytes_total += obj.size
        if obj.deleted:
            self._remove(obj)

    def restore_failed(self, obj: StoredObject) -> None:
        obj.busy = False
        if obj.segment is not None:
            self._free_segment(obj)
        if obj.deleted:
            self._remove(obj)

    # -- internals ------------------------------------------------------------------
    def _get(self, object_id: bytes) -> StoredObject:
        obj = self.objects.get(object_id)
        if obj is None:
            raise StoreError(f"unknown object {object_id.hex()}")
        return obj

    def _after_release(self, obj: StoredObject) -> None:
        if obj.readers or obj.busy:
            return
        if obj.deleted:
            self._remove(obj)
        elif obj.fallback and obj.segment is not None and obj.spill is not None:
            # A restored copy outside the capacity: given back at once.
            self._free_segment(obj)
            obj.state = ObjectState.SPILLED

    def _remove(self, obj: StoredObject) -> None:
        self.objects.pop(obj.object_id, None)
        self._lru.pop(obj.object_id, None)
        if obj.segment is not None:
            self._free_segment(obj)
        self._drop_spill(obj)

    def _drop_spill(self, obj: StoredObject) -> None:
        if obj.spill is None:
            return
        file, _ = obj.spill
        obj.spill = None
        file.live -= 1
        self.spilled_bytes -= obj.size

    def dead_spill_files(self) -> list[SpillFile]:
        dead = [f for f in self.spill_files if f.live <= 0]
        for f in dead:
            self.spill_files.discard(f)
        return dead

    def _free_segment(self, obj: StoredObject) -> None:
        segment = obj.segment
        assert segment is not None
        obj.segment = None
        if obj.fallback:
            obj.fallback = False
            self.fallback_bytes -= segment.size
            destroy(segment)
            self._forget_segments([segment])
            return
        self.used -= segment.size
        if self.used + self.pool.pooled_bytes + segment.size <= self.capacity:
            self.pool.give_back(segment)
        else:
            destroy(segment)
            self._forget_segments([segment])

    def _forget_segments(self, segments: list[Segment]) -> None:
        """Destroyed segments: tell the clients that map them to let go."""
        ids = {s.segment_id for s in segments}
        for client in self.clients.values():
            gone = client.mapped.keys() & ids
            if gone:
                for segment_id in gone:
                    del client.mapped[segment_id]
                client.unmap.extend(gone)

    def close(self) -> None:
        for obj in list(self.objects.values()):
            if obj.segment is not None:
                destroy(obj.segment)
                obj.segment = None
        self.objects.clear()
        self.pool.close()

    def validate(self) -> None:
        held = sum(
            o.segment.size
            for o in self.objects.values()
            if o.segment is not None and not o.fallback
        )
        assert held == self.used, (held, self.used)
        fallback = sum(o.segment.size for o in self.objects.values() if o.fallback and o.segment)
        assert fallback == self.fallback_bytes, (fallback, self.fallback_bytes)
        assert self.used + self.pool.pooled_bytes <= self.capacity
        for obj in self.objects.values():
            if obj.state is ObjectState.SPILLED:
                assert obj.segment is None and obj.spill is not None
