"""The reference counter as a state machine fed events, no sockets."""

from __future__ import annotations

from runtime.core_worker._reference_counter import ReferenceCounter

P = ("127.0.0.1", 1, b"p")
Q = ("127.0.0.1", 2, b"q")


def test_local_refs():
    rc = ReferenceCounter()
    rc.add_owned(b"a")
    assert not rc.add_local(b"a", owned=True)
    assert rc.remove_local(b"a") is None
    dropped = rc.remove_local(b"a")
    assert dropped is not None and dropped.owned
    assert b"a" not in rc and len(rc) == 0


def test_submitted_tasks_hold_refs():
    rc = ReferenceCounter()
    rc.add_owned(b"a")
    rc.add_submitted([b"a"])
    assert rc.remove_local(b"a") is None
    assert [oid for oid, _ in rc.remove_submitted([b"a"])] == [b"a"]
    assert len(rc) == 0


def test_borrowers_hold_owned_objects():
    rc = ReferenceCounter()
    rc.add_owned(b"a")
    assert rc.add_borrower(b"a", P)
    assert not rc.add_borrower(b"a", P)  # once per borrower
    assert rc.add_borrower(b"a", Q)
    assert rc.remove_local(b"a") is None
    assert rc.remove_borrower(b"a", P) is None
    assert rc.remove_borrower(b"a", Q) is not None
    assert len(rc) == 0


def test_borrowers_only_of_owned_objects():
    rc = ReferenceCounter()
    assert rc.add_local(b"b", owned=False)  # a new borrow: register with the owner
    assert not rc.add_local(b"b", owned=False)
    assert not rc.add_borrower(b"b", P)
    assert rc.remove_local(b"b") is None
    dropped = rc.remove_local(b"b")
    assert dropped is not None and not dropped.owned


def test_borrow_again_after_letting_go():
    rc = ReferenceCounter()
    assert rc.add_local(b"b", owned=False)
    assert rc.remove_local(b"b") is not None
    assert rc.add_local(b"b", owned=False)


def test_unknown_ids_are_ignored():
    rc = ReferenceCounter()
    assert rc.remove_local(b"x") is None
    assert rc.remove_submitted([b"x"]) == []
    assert rc.remove_borrower(b"x", P) is None
