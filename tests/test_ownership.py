"""Ownership and distributed reference counting, on real processes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import process_running, run_driver, wait_until

import runtime
from runtime.exceptions import OwnerDiedError

MB = 1 << 20


def worker():
    return runtime.api._context.current()


def store_objects() -> int:
    return worker().store_client.stats().num_objects


def settled(baseline_refs: int = 0) -> bool:
    w = worker()
    return store_objects() == 0 and len(w.refs) <= baseline_refs


@runtime.remote
def read_nested(box, depth):
    if depth > 0:
        return runtime.get(read_nested.remote(box, depth - 1))
    return int(runtime.get(box[0])[0])


@runtime.remote
def make_inner(value):
    return [runtime.put(np.full(MB // 8, value, dtype=np.int64))]


@runtime.remote
def unwrap(box):
    return int(runtime.get(box[0])[0])


@runtime.remote
class Keeper:
    def __init__(self):
        self.kept = []

    def keep(self, box):
        self.kept.append(box[0])
        return len(self.kept)

    def read(self):
        return [int(runtime.get(ref)[0]) for ref in self.kept]

    def read_at(self, i):
        return int(runtime.get(self.kept[i])[0])

    def drop(self):
        self.kept.clear()
        return True

    def make(self):
        return [runtime.put(np.full(MB // 8, 9, dtype=np.int64))]

    def pid(self):
        return os.getpid()


def test_borrow_chain_through_two_levels(cluster):
    ref = runtime.put(np.full(MB // 8, 5, dtype=np.int64))
    assert runtime.get(read_nested.remote([ref], 2)) == 5
    del ref
    wait_until(settled, what="the object to be freed after the chain")


def test_ref_in_actor_state_outlives_the_owner_handle(cluster):
    keeper = Keeper.remote()
    ref = runtime.put(np.full(MB // 8, 7, dtype=np.int64))
    assert runtime.get(keeper.keep.remote([ref])) == 1
    del ref
    # The driver let go, the actor did not: still there.
    assert runtime.get(keeper.read.remote()) == [7]
    assert store_objects() == 1
    runtime.get(keeper.drop.remote())
    wait_until(lambda: store_objects() == 0, what="the object to be freed by the actor's drop")


def test_refs_in_returned_containers(cluster):
    box = runtime.get(make_inner.remote(3))
    # The worker that made (and owns) it moves on to other work.
    runtime.get([unwrap.remote(make_inner.remote(i)) for i in range(4)])
    assert int(runtime.get(box[0])[0]) == 3
    assert runtime.get(unwrap.remote(box)) == 3
    del box
    wait_until(lambda: store_objects() == 0, what="the worker-owned object to be freed")


@runtime.remote
class Maker:
    def make(self, n):
        return [runtime.put(i) for i in range(n)]

    def owned(self):
        w = worker()
        return len(w.refs), w.ownership.stats()["borrower_polls"]


def test_a_borrower_of_many_refs_costs_its_owner_a_few_polls(cluster):
    maker = Maker.remote()
    baseline, _ = runtime.get(maker.owned.remote())
    boxes = [runtime.get(maker.make.remote(5000)) for _ in range(4)]
    owned, polls = runtime.get(maker.owned.remote())
    assert owned >= baseline + 20_000
    assert 1 <= polls <= 2  # for 20,000 borrowed refs: not one call each
    assert runtime.get(boxes[0][1234]) == 1234
    del boxes[:2]  # the owner frees those, while the rest stay borrowed
    wait_until(lambda: runtime.get(maker.owned.remote())[0] <= baseline + 10_000, timeout=30)
    assert runtime.get(boxes[-1][4999]) == 4999
    del boxes
    wait_until(lambda: runtime.get(maker.owned.remote()) == (baseline, 0), timeout=30)


def test_refs_inside_put_objects(cluster):
    inner = runtime.put(np.full(MB // 8, 4, dtype=np.int64))
    outer = runtime.put({"inner": inner})
    del inner
    got = runtime.get(outer)
    assert int(runtime.get(got["inner"])[0]) == 4
    del got
    assert store_objects() == 1
    del outer
    wait_until(lambda: store_objects() == 0, what="the inner object to follow its container")


def test_nested_refs_passed_through_a_task_and_returned(cluster):
    @runtime.remote
    def relay(box):
        return box

    ref = runtime.put(np.full(MB // 8, 6, dtype=np.int64))
    back = runtime.get(relay.remote([ref]))
    del ref
    assert int(runtime.get(back[0])[0]) == 6
    del back
    wait_until(lambda: store_objects() == 0, what="the relayed object to be freed")


def test_owner_death_raises_owner_died(cluster):
    keeper = Keeper.remote()
    pid = runtime.get(keeper.pid.remote())
    box = runtime.get(keeper.make.remote())
    assert int(runtime.get(box[0])[0]) == 9
    runtime.kill(keeper)
    wait_until(lambda: not process_running(pid), what="the owner to die")
    # The raylet saw the death and dropped the dead owner's objects.
    object_id = box[0].binary()
    wait_until(
        lambda: not worker().store_client.contains(object_id),
        what="the store to drop the dead owner's object",
    )
    # A fresh ref to the object: its cached copy died with the first.
    ref = runtime.get(runtime.put(box))[0]
    del box
    with pytest.raises(OwnerDiedError):
        runtime.get(ref, timeout=10)


def test_an_object_put_with_an_actor_as_owner_outlives_its_maker(cluster):
    keeper = Keeper.options(name="keeper", namespace="adopt").remote()
    code = (
        "import numpy as np, runtime\n"
        f"runtime.init(address={cluster.address!r})\n"
        "k = runtime.get_actor('keeper', namespace='adopt')\n"
        "small = runtime.put(np.full(4, 5), _owner=k)\n"
        f"large = runtime.put(np.full({MB // 8}, 6), _owner=k)\n"
        "assert int(runtime.get(large)[0]) == 6\n"
        f"mine = runtime.put(np.full({MB // 8}, 7))\n"
        "for ref in (small, large, mine):\n"
        "    runtime.get(k.keep.remote([ref]))\n"
        "print('kept')\n"
    )
    done = run_driver(code)
    assert done.returncode == 0 and "kept" in done.stdout, done.stderr[-2000:]
    # Its maker is gone: what the actor owns lives on, what the maker owned does not.
    assert runtime.get(keeper.read_at.remote(0)) == 5
    assert runtime.get(keeper.read_at.remote(1)) == 6
    with pytest.raises(OwnerDiedError):
        runtime.get(keeper.read_at.remote(2), timeout=60)
    # The owner frees what it owns once nobody holds a ref.
    assert runtime.get(keeper.drop.remote())
    wait_until(lambda: store_objects() == 0, what="the actor's objects to be freed")
    # It ends with its owner: the store drops the copy, and a read says why.
    orphan = runtime.put(np.full(MB // 8, 8), _owner=keeper)
    runtime.kill(keeper)
    wait_until(lambda: store_objects() == 0, what="the dead owner's object to be dropped")
    with pytest.raises(OwnerDiedError):
        runtime.get(orphan, timeout=60)
    with pytest.raises(TypeError, match="actor handle"):
        runtime.put(1, _owner="keeper")
    with pytest.raises(ValueError, match="holds ObjectRefs"):
        runtime.put([runtime.put(1)], _owner=keeper)
    with pytest.raises(runtime.exceptions.ActorDiedError):
        runtime.put(1, _owner=keeper)  # (a dead actor owns nothing)


def test_soak_returns_to_baseline(cluster):
    w = worker()
    # Before the baseline: each live actor handle holds a ref to its handle object.
    keepers = [Keeper.remote() for _ in range(2)]
    runtime.get([k.drop.remote() for k in keepers])  # their refs are counted by now
    baseline_refs = len(w.refs)
    baseline_memory = len(w.store)

    @runtime.remote
    def step(box, i):
        value = runtime.get(box[0])
        return [runtime.put(value + 1)] if i % 2 else [box[0]]

    for round_ in range(10):
        box = [runtime.put(np.zeros(MB // 8, dtype=np.int64))]
        for i in range(10):
            box = runtime.get(step.remote(box, i))
        runtime.get([k.keep.remote(box) for k in keepers])
        if round_ % 3 == 2:
            runtime.get([k.drop.remote() for k in keepers])
        assert int(runtime.get(box[0])[0]) == 5
    del box
    runtime.get([k.drop.remote() for k in keepers])
    wait_until(lambda: store_objects() == 0, timeout=30, what="every object to be freed")
    wait_until(
        lambda: len(w.refs) <= baseline_refs and len(w.store) <= baseline_memory,
        what="the driver's tables to return to their baseline",
    )
    assert w.ownership.stats()["contained"] == 0


def test_memory_summary_lists_references_by_process(cluster):
    ref = runtime.put(np.zeros(MB // 8))
    box = runtime.put([ref])
    keeper = Keeper.remote()
    runtime.get(keeper.keep.remote([ref]))
    tables = runtime.util.memory_tables()
    driver = next(t for t in tables if t.info.is_driver)
    rows = {row.object_id: row for row in driver.rows}
    from runtime._private.memory import kinds

    ref_kinds = kinds(rows[ref.binary()])
    assert "LOCAL_REFERENCE" in ref_kinds and "PINNED_IN_STORE" in ref_kinds
    assert "CAPTURED_IN_OBJECT" in ref_kinds and "BORROWED_BY(1)" in ref_kinds
    assert rows[ref.binary()].call_site.startswith("put at test_ownership.py:")
    assert kinds(rows[box.binary()]) == ["LOCAL_REFERENCE"]
    actor_rows = [row for t in tables if t.info.label.startswith("Keeper") for row in t.rows]
    assert [kinds(r) for r in actor_rows] == [["BORROWED"]]
    text = runtime.util.memory_summary()
    assert ref.hex() in text and "driver" in text


def test_memory_command(cluster, monkeypatch):
    from runtime import cli

    ref = runtime.put(np.zeros(MB // 8))
    monkeypatch.setattr("sys.argv", ["runtime"])
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["memory", "--address", cluster.gcs_address]) == 0
    assert ref.hex() in out.getvalue()
