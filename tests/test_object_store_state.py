"""The store's bookkeeping as a state machine: no sockets, no processes."""

from __future__ import annotations

import pytest

from runtime.raylet.store._segments import PAGE
from runtime.raylet.store._store import (
    ObjectState,
    ObjectStore,
    SpillFile,
    StoreError,
    StoreFullError,
)

MB = 1 << 20


@pytest.fixture
def store():
    s = ObjectStore(10 * MB)
    s.connect(1)
    s.connect(2)
    yield s
    s.close()


def test_create_seal_read_release_delete(store):
    obj = store.create(1, b"a", MB)
    assert store.lookup(b"a") is None  # not sealed yet
    store.seal(1, b"a")
    assert store.used == MB
    found = store.lookup(b"a")
    store.pin(2, found)
    store.delete(b"a")
    assert store.used == MB  # still read by client 2
    store.release(2, b"a")
    assert store.used == 0 and b"a" not in store.objects
    assert store.pool.pooled_bytes == obj.size
    store.validate()


def test_segments_are_reused(store):
    first = store.create(1, b"a", MB)
    store.seal(1, b"a")
    segment_id = first.segment.segment_id
    store.delete(b"a")
    second = store.create(1, b"b", MB - 100)
    assert second.segment.segment_id == segment_id
    assert store.hand_out(1, second.segment) is True
    assert store.hand_out(1, second.segment) is False  # mapped already


def test_errors(store):
    store.create(1, b"a", 10)
    with pytest.raises(StoreError, match="already exists"):
        store.create(1, b"a", 10)
    with pytest.raises(StoreError, match="another client"):
        store.seal(2, b"a")
    store.seal(1, b"a")
    with pytest.raises(StoreError, match="already sealed"):
        store.seal(1, b"a")
    with pytest.raises(StoreError, match="unknown"):
        store.seal(1, b"zz")
    with pytest.raises(StoreFullError, match="cannot fit"):
        store.room_for(11 * MB)


def test_disconnect_aborts_creates_and_ends_reads(store):
    store.create(1, b"a", MB)
    store.create(2, b"b", MB)
    store.seal(2, b"b")
    store.pin(1, store.lookup(b"b"))
    store.delete(b"b")
    store.disconnect(1)
    assert b"a" not in store.objects and b"b" not in store.objects
    assert store.used == 0
    store.validate()


def test_room_spills_least_recently_used(store):
    for i in range(9):
        store.create(1, bytes([i]), MB)
        store.seal(1, bytes([i]))
    store.pin(2, store.lookup(bytes([0])))  # in use: never spilled
    store.release(2, bytes([0]))
    store.pin(2, store.lookup(bytes([1])))
    missing = store.room_for(3 * MB)
    assert missing >= MB
    victims = store.spill_candidates(missing)
    assert bytes([1]) not in [v.object_id for v in victims]
    assert victims[0].object_id == bytes([2])  # 0 was touched after 2
    file = SpillFile("/nonexistent")
    for offset, victim in enumerate(victims):
        store.spilled(victim, file, offset)
    assert all(v.state is ObjectState.SPILLED for v in victims)
    assert store.room_for(3 * MB) == 0
    store.validate()


def test_spilled_objects_restore_and_free_their_file(store):
    store.create(1, b"a", MB)
    store.seal(1, b"a")
    file = SpillFile("/nonexistent")
    (victim,) = store.spill_candidates(MB)
    store.spilled(victim, file, 0)
    assert store.used == 0 and file.live == 1
    store.begin_restore(victim)
    store.restored(victim)
    assert victim.state is ObjectState.SEALED and store.used == MB
    # Spilling it again needs no write: its disk copy is still there.
    assert store.spill_candidates(MB) == []
    assert victim.state is ObjectState.SPILLED
    store.delete(b"a")
    assert store.dead_spill_files() == [file]
    store.validate()


def test_fallback_restore_lives_only_while_read(store):
    store.create(1, b"a", MB)
    store.seal(1, b"a")
    file = SpillFile("/nonexistent")
    (victim,) = store.spill_candidates(MB)
    store.spilled(victim, file, 0)
    store.begin_restore(victim, fallback=True)
    store.restored(victim)
    assert store.used == 0 and store.fallback_bytes == MB
    store.pin(2, victim)
    store.validate()
    assert store.spill_candidates(MB) == []  # never spilled: it is on disk already
    store.release(2, b"a")
    assert victim.state is ObjectState.SPILLED and store.fallback_bytes == 0
    assert store.pool.pooled_bytes == MB  # the first copy's; the fallback one is destroyed
    store.validate()


def test_a_fallback_creation_lives_until_deleted(store, tmp_path):
    import os

    fd = os.open(tmp_path, os.O_TMPFILE | os.O_RDWR, 0o600)
    os.ftruncate(fd, 20 * MB)
    obj = store.create(1, b"big", 20 * MB, fallback=store.pool.adopt(fd, 20 * MB))
    store.seal(1, b"big")
    assert store.used == 0 and store.fallback_bytes == 20 * MB
    store.pin(2, obj)
    store.release(2, b"big")
    # Unlike a restored copy, it is the only one: kept while unread, never spilled.
    assert obj.state is ObjectState.SEALED and store.fallback_bytes == 20 * MB
    assert store.spill_candidates(MB) == []
    store.validate()
    store.delete(b"big")
    assert store.fallback_bytes == 0 and b"big" not in store.objects
    assert store.pool.pooled_bytes == 0  # destroyed, not pooled
    store.validate()


def test_full_when_nothing_can_be_spilled(store):
    store.create(1, b"a", 6 * MB)  # unsealed: cannot be spilled
    with pytest.raises(StoreFullError, match="only 0 could be spilled"):
        store.room_for(6 * MB)


def test_accounting_in_pages(store):
    store.create(1, b"a", 1)
    assert store.used == PAGE
