"""Lost objects rebuilt from lineage, on real processes."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from conftest import assert_no_orphans, wait_until

import runtime
from runtime._private.framing import frame
from runtime.exceptions import (
    ObjectLostError,
    ObjectReconstructionFailedError,
    ObjectReconstructionFailedLineageEvictedError,
)
from runtime.protocol.rt import StoreOp, StoreReply, StoreRequest

MB = 1 << 20


def lose(*refs: runtime.ObjectRef) -> None:
    """Deletes objects' copies behind their owners' backs, as a lost node would
    (speaking as each owner: the store lets only an object's owner delete it)."""
    for ref in refs:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(runtime.api._context.current().store_socket)
        owner = ref._owner[2]
        for op, ids in ((StoreOp.HELLO, [owner]), (StoreOp.DELETE, [ref.binary()])):
            sock.sendall(frame(bytes(StoreRequest(op=op, object_ids=ids))))
            data = sock.recv(65536)
            assert not StoreReply.parse(data[4:]).error
        contains = StoreRequest(op=StoreOp.CONTAINS, object_ids=[ref.binary()])
        sock.sendall(frame(bytes(contains)))
        reply = StoreReply.parse(sock.recv(65536)[4:])
        assert not any(o.found for o in reply.objects)
        sock.close()


@runtime.remote
def make(value):
    return np.full(MB // 8, value, dtype=np.int64)


@runtime.remote
def plus_one(array):
    return array + 1


@runtime.remote
def first(array):
    return int(array[0])


def test_lost_task_result_is_rebuilt(cluster):
    ref = make.remote(3)
    runtime.wait([ref])
    lose(ref)
    assert int(runtime.get(ref)[0]) == 3


def test_lost_arguments_are_rebuilt_recursively(cluster):
    base = make.remote(1)
    derived = plus_one.remote(base)
    runtime.wait([derived])
    lose(base, derived)
    assert int(runtime.get(derived)[0]) == 2


def test_a_dropped_arguments_lineage_outlives_it(cluster):
    # b = g.remote(a); del a: rebuilding b rebuilds a, which nobody refers to.
    base = make.remote(1)
    derived = plus_one.remote(base)
    runtime.wait([derived])
    worker = runtime.api._context.current()
    base_id = base.binary()
    del base
    wait_until(lambda: base_id not in worker.refs, what="the argument to be freed")
    lose(derived)
    assert int(runtime.get(derived)[0]) == 2
    wait_until(lambda: base_id not in worker.refs, what="the rebuilt argument to be freed again")


def test_task_with_a_lost_argument_runs_after_rebuilding_it(cluster):
    base = make.remote(5)
    runtime.wait([base])
    lose(base)
    assert runtime.get(first.remote(base)) == 5


async def test_await_rebuilds_too():
    ctx = await runtime.init_async(num_cpus=1)
    try:
        ref = make.remote(8)
        await runtime.wait_async([ref])
        lose(ref)
        assert int((await ref)[0]) == 8
    finally:
        await runtime.shutdown_async()
        assert_no_orphans(ctx.session_dir)


def test_lost_put_object_raises(cluster):
    ref = runtime.put(np.zeros(MB // 8))
    lose(ref)
    with pytest.raises(ObjectLostError, match="put"):
        runtime.get(ref)
    with pytest.raises(ObjectLostError):  # and again, at once
        runtime.get(ref)


def test_no_retries_means_no_rebuild(cluster):
    ref = make.options(max_retries=0).remote(1)
    runtime.wait([ref])
    lose(ref)
    with pytest.raises(ObjectReconstructionFailedError, match="not reconstructable"):
        runtime.get(ref)


def test_lineage_cap(tmp_path):
    ctx = runtime.init(num_cpus=1, _system_config={"max_lineage_bytes": 2000})
    try:
        refs = [make.remote(i) for i in range(10)]
        runtime.wait(refs, num_returns=10)
        worker = runtime.api._context.current()
        assert worker.lineage.total_bytes <= 2000
        lose(refs[0], refs[-1])
        with pytest.raises(ObjectReconstructionFailedLineageEvictedError, match="max_lineage"):
            runtime.get(refs[0])
        assert int(runtime.get(refs[-1])[0]) == 9  # recent lineage is kept
    finally:
        runtime.shutdown()
        assert_no_orphans(ctx.session_dir)


def test_lineage_is_dropped_with_its_objects(cluster):
    worker = runtime.api._context.current()
    refs = [make.remote(i) for i in range(5)]
    runtime.wait(refs, num_returns=5)
    assert len(worker.lineage) == 5
    del refs
    from conftest import wait_until

    wait_until(lambda: len(worker.lineage) == 0, what="the lineage to be dropped")


@runtime.remote
def stream(path: str, first_run: int, later_runs: int, fail_after: bool = False):
    """Yields arrays 0, 1, ...: ``first_run`` of them on its first run,
    ``later_runs`` on later ones (then raises, if ``fail_after``)."""
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        runs = len(f.read())
    for i in range(first_run if runs == 1 else later_runs):
        yield np.full(MB // 8, i, dtype=np.int64)
    if fail_after:
        raise ValueError("the end")


def runs_of(path) -> int:
    with open(path) as f:
        return len(f.read())


@pytest.mark.parametrize("backpressure", [0, 1])
def test_lost_streamed_items_are_rebuilt_by_one_replay(cluster, tmp_path, backpressure):
    # As in Ray: the generator runs again and the lost items come back; with
    # backpressure, nobody reads the replay, and it does not wait for reads.
    path = str(tmp_path / "runs")
    options = {"_generator_backpressure_num_objects": backpressure} if backpressure else {}
    items = list(stream.options(**options).remote(path, 3, 3))
    runtime.wait(items, num_returns=3, fetch_local=False)
    lose(items[0], items[2])
    assert [int(a[0]) for a in runtime.get(items)] == [0, 1, 2]
    assert runs_of(path) == 2
    worker = runtime.api._context.current()
    del items
    wait_until(lambda: len(worker.lineage) == 0, what="the stream's lineage to be dropped")
    assert worker.store_client is not None
    wait_until(lambda: worker.store_client.stats().num_objects == 0, what="every copy to be freed")


def test_items_before_a_generators_error_are_rebuilt(cluster, tmp_path):
    path = str(tmp_path / "runs")
    gen = stream.remote(path, 2, 2, fail_after=True)
    first, second = next(gen), next(gen)
    with pytest.raises(ValueError, match="the end"):
        runtime.get(next(gen))
    lose(first)
    assert int(runtime.get(first)[0]) == 0 and int(runtime.get(second)[0]) == 1


def test_a_replay_yielding_fewer_items_says_so(cluster, tmp_path):
    from runtime.exceptions import StreamingGeneratorReplayInconsistentError

    path = str(tmp_path / "runs")
    items = list(stream.remote(path, 3, 2))
    lose(items[2])
    with pytest.raises(StreamingGeneratorReplayInconsistentError, match="yielded 2 items"):
        runtime.get(items[2])
    assert int(runtime.get(items[1])[0]) == 1
    assert runs_of(path) == 2
    worker = runtime.api._context.current()
    del items
    assert worker.store_client is not None
    wait_until(lambda: worker.store_client.stats().num_objects == 0, what="every copy to be freed")


@runtime.remote(max_restarts=1, max_task_retries=1)
class Maker:
    def __init__(self) -> None:
        self.calls = 0

    def make(self, value):
        self.calls += 1
        return np.full(MB // 8, value, dtype=np.int64)

    def calls_made(self) -> int:
        return self.calls


def test_an_actor_calls_lost_result_is_rebuilt_by_its_actor(cluster):
    # As in Ray: within max_task_retries, the actor runs the call again.
    maker = Maker.remote()
    ref = maker.make.remote(4)
    once = maker.make.options(max_task_retries=0).remote(5)
    runtime.wait([ref, once], num_returns=2, fetch_local=False)
    lose(ref, once)
    assert int(runtime.get(ref)[0]) == 4
    assert runtime.get(maker.calls_made.remote()) == 3
    with pytest.raises(ObjectReconstructionFailedError, match="allows no retries"):
        runtime.get(once)
    again = maker.make.remote(6)
    runtime.wait([again], fetch_local=False)
    runtime.kill(maker)  # no restart: nothing can run the call again
    lose(again)
    with pytest.raises(runtime.exceptions.ActorDiedError):
        runtime.get(again)


def test_a_call_whose_argument_was_lost_runs_after_rebuilding_it(cluster):
    # No retry is spent (the call never ran), as in Ray: max_retries=0 is enough.
    base = make.remote(5)
    runtime.wait([base])
    lose(base)
    assert runtime.get(first.options(max_retries=0).remote(base)) == 5
    maker = Maker.options(max_task_retries=0).remote()
    lose(base)
    assert int(runtime.get(plus_one_in(maker, base))[0]) == 6


def plus_one_in(maker, array_ref):
    return maker.__ray_call__.remote(lambda self, array: array + 1, array_ref)


@runtime.remote(max_restarts=1, max_task_retries=1)
class Streamer:
    def __init__(self) -> None:
        self.runs = 0

    def stream(self):
        self.runs += 1
        for i in range(3):
            yield np.full(MB // 8, i, dtype=np.int64)

    def runs_made(self) -> int:
        return self.runs


def test_an_actors_lost_streamed_item_is_rebuilt_by_a_replay(cluster):
    streamer = Streamer.remote()
    items = list(streamer.stream.remote())
    runtime.wait(items, num_returns=3, fetch_local=False)
    lose(items[1])
    assert [int(a[0]) for a in runtime.get(items)] == [0, 1, 2]
    assert runtime.get(streamer.runs_made.remote()) == 2
