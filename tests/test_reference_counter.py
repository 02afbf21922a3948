"""The owner's reference counter as a state machine."""

from __future__ import annotations

from runtime.core_worker._reference_counter import ReferenceCounter


def test_local_refs():
    rc = ReferenceCounter()
    rc.add_owned(b"a")
    rc.add_local(b"a")
    assert not rc.remove_local(b"a")
    assert rc.remove_local(b"a")
    assert b"a" not in rc and len(rc) == 0


def test_submitted_tasks_hold_refs():
    rc = ReferenceCounter()
    rc.add_owned(b"a")
    rc.add_submitted([b"a"])
    assert not rc.remove_local(b"a")
    assert rc.remove_submitted([b"a"]) == [b"a"]
    assert len(rc) == 0


def test_escaped_objects_are_kept():
    rc = ReferenceCounter()
    rc.add_owned(b"a")
    rc.mark_escaped(b"a")
    assert not rc.remove_local(b"a")
    assert b"a" in rc


def test_borrowed_refs_are_counted_but_not_owned():
    rc = ReferenceCounter()
    rc.add_local(b"b")
    assert not rc.owns(b"b")
    rc.mark_escaped(b"b")  # only owners track escapes
    assert rc.remove_local(b"b")


def test_unknown_ids_are_ignored():
    rc = ReferenceCounter()
    assert not rc.remove_local(b"x")
    assert rc.remove_submitted([b"x"]) == []
