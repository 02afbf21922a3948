"""Streaming generators: tasks and actor methods that yield refs as they go."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np
import pytest
from conftest import wait_until

import runtime
from runtime.exceptions import TaskCancelledError

pytestmark = pytest.mark.timeout(120)


@runtime.remote
def count(n):
    yield from range(n)


@runtime.remote
async def count_async(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


@runtime.remote
def fails_after(n):
    yield from range(n)
    raise ValueError(f"after {n}")


def test_sync_and_async_generator_tasks(cluster):
    assert [runtime.get(r) for r in count.remote(5)] == [0, 1, 2, 3, 4]
    assert [runtime.get(r) for r in count_async.remote(4)] == [0, 1, 2, 3]
    gen = count.options(num_returns="streaming").remote(2)
    first = next(gen)
    assert runtime.get(first) == 0 and runtime.get(next(gen)) == 1
    with pytest.raises(StopIteration):
        next(gen)
    assert runtime.get(gen.completed()) == 2 and gen.is_finished()
    assert not gen.next_ready()  # (as in Ray: next() would stop, not return)
    assert runtime.get(gen) is gen  # (as in Ray: a generator is its own value)

    async def consume():
        return [await ref async for ref in count_async.remote(3)] + [
            await (await anext(count.remote(1)))
        ]

    assert asyncio.run(consume()) == [0, 1, 2, 0]
    # Ray's generator interface, in name (isinstance holds; sending is refused).
    import collections.abc

    assert isinstance(gen, collections.abc.Generator)
    assert isinstance(gen, collections.abc.AsyncGenerator)
    with pytest.raises(NotImplementedError, match="send"):
        gen.send(1)


def test_an_error_mid_stream(cluster):
    refs = list(fails_after.remote(2))
    assert len(refs) == 3
    assert runtime.get(refs[:2]) == [0, 1]
    with pytest.raises(ValueError, match="after 2"):
        runtime.get(refs[2])


def test_dynamic_and_fixed_num_returns(cluster):
    dynamic = runtime.get(count.options(num_returns="dynamic").remote(3))
    assert isinstance(dynamic, runtime.DynamicObjectRefGenerator)  # Ray's name for it
    assert [runtime.get(r) for r in dynamic] == [0, 1, 2]
    # As in Ray, a dynamic generator's error is its last ref's.
    *made, failed = runtime.get(fails_after.options(num_returns="dynamic").remote(2))
    assert runtime.get(made) == [0, 1]
    with pytest.raises(ValueError, match="after 2"):
        runtime.get(failed)
    assert runtime.get(count.options(num_returns=2).remote(2)) == [0, 1]
    # A fixed count of 1 is a generator's one item, as in Ray. As in Ray too,
    # each return it made is its value, the others hold its error (or, if it
    # stopped early, a ValueError saying so); what comes after the last return
    # is logged, not the task's failure.
    assert runtime.get(count.options(num_returns=1).remote(1)) == 0
    assert runtime.get(count.options(num_returns=2).remote(3)) == [0, 1]
    early = count.options(num_returns=2).remote(1)
    assert runtime.get(early[0]) == 0
    with pytest.raises(ValueError, match=r"num_returns=2 but its generator yielded 1 value"):
        runtime.get(early[1])
    partial = fails_after.options(num_returns=4).remote(2)
    assert runtime.get(partial[:2]) == [0, 1]
    for ref in partial[2:]:
        with pytest.raises(ValueError, match="after 2"):  # the generator's own error
            runtime.get(ref)
    assert runtime.get(fails_after.options(num_returns=2).remote(2)) == [0, 1]
    with pytest.raises(ValueError, match="after 0"):  # it made nothing: the task failed
        runtime.get(fails_after.options(num_returns=2).remote(0)[0])
    with pytest.raises(ValueError, match="streaming"):
        count.options(num_returns="lots")


def test_streaming_is_refused_at_the_call_site_for_what_does_not_yield():
    """As in Ray: ``num_returns="streaming"`` (or ``"dynamic"``) on a function
    or method that is not a generator is a ValueError where it is asked for,
    not a task that fails when it runs (no cluster needed)."""

    @runtime.remote
    def plain() -> int:
        return 1

    for value in ("streaming", "dynamic"):
        with pytest.raises(ValueError, match=f"num_returns='{value}' is for generator"):
            plain.options(num_returns=value)
    with pytest.raises(ValueError, match=r"plain\(\) is not one"):
        runtime.remote(num_returns="streaming")(plain._function)
    with pytest.raises(ValueError, match=r"Plain.m\(\) is not one"):

        @runtime.remote
        class Plain:
            @runtime.method(num_returns="streaming")
            def m(self) -> int:
                return 1

    class Yields:  # a callable object: whether it yields cannot be told
        def __call__(self) -> Any:
            yield 1

    runtime.remote(num_returns="streaming")(Yields())


@runtime.remote(num_cpus=0)
class Streams:
    def sync_gen(self, n):
        for i in range(n):
            yield (i, threading.current_thread().name)

    def pid(self):
        return os.getpid()


@runtime.remote(num_cpus=0)
class AsyncStreams:
    async def agen(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    def sync_gen(self, n):
        yield from range(n)


@pytest.mark.parametrize("kind", ["sync", "threaded", "async", "async-sync"])
def test_actor_generator_methods(cluster, kind):
    if kind == "sync":
        streams = Streams.remote()
        gen = streams.sync_gen.remote(3)
        values = [runtime.get(r)[0] for r in gen]
        with pytest.raises(ValueError, match=r"Streams.pid\(\) is not one"):
            streams.pid.options(num_returns="streaming")
    elif kind == "threaded":
        gen = Streams.options(max_concurrency=2).remote().sync_gen.remote(3)
        values = [runtime.get(r)[0] for r in gen]
    elif kind == "async":
        values = [runtime.get(r) for r in AsyncStreams.remote().agen.remote(3)]
    else:
        values = [runtime.get(r) for r in AsyncStreams.remote().sync_gen.remote(3)]
    assert values == [0, 1, 2]


@runtime.remote(num_cpus=0)
class Tally:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1

    def get(self):
        return self.n


@runtime.remote
def produce(tally, n):
    for i in range(n):
        runtime.get(tally.add.remote())
        yield i


def test_backpressure_bounds_the_unconsumed_items(cluster):
    tally = Tally.remote()
    gen = produce.options(_generator_backpressure_num_objects=2).remote(tally, 8)
    wait_until(lambda: runtime.get(tally.get.remote()) >= 2, what="two items produced")
    for taken, ref in enumerate(gen, start=1):
        # The worker never runs more than 2 items ahead of what was taken.
        assert runtime.get(tally.get.remote()) <= taken + 2
        assert runtime.get(ref) == taken - 1
    assert runtime.get(tally.get.remote()) == 8


@runtime.remote(max_retries=1)
def dies_once(marker, n):
    for i in range(n):
        if i == 3 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker dies mid-stream, after 3 items
        yield i


def test_a_worker_dying_mid_stream_is_retried_without_duplicates(cluster, tmp_path):
    values = [runtime.get(r) for r in dies_once.remote(str(tmp_path / "died"), 6)]
    assert values == [0, 1, 2, 3, 4, 5]


@runtime.remote
def endless(marker):
    try:
        i = 0
        while True:
            yield i
            i += 1
    except GeneratorExit:
        open(marker, "w").close()
        raise


@runtime.remote
async def endless_async(marker):
    try:
        i = 0
        while True:
            await asyncio.sleep(0.001)
            yield i
            i += 1
    except (GeneratorExit, asyncio.CancelledError):
        os.mknod(marker)  # a marker the test sees: no file is opened on the loop
        raise


@pytest.mark.parametrize("fn", [endless, endless_async])
def test_cancel_stops_the_generator(cluster, tmp_path, fn):
    marker = str(tmp_path / "stopped")
    gen = fn.options(_generator_backpressure_num_objects=3).remote(marker)
    assert runtime.get(next(gen)) == 0
    runtime.cancel(gen)
    with pytest.raises(TaskCancelledError):
        runtime.get(gen.completed())
    wait_until(lambda: os.path.exists(marker), what="the generator to be closed")


@runtime.remote
def big_items(n):
    for i in range(n):
        yield np.full(1 << 18, i, dtype=np.int64)  # 2 MiB each: in the store


def test_items_are_freed_each_on_its_own(cluster):
    worker = runtime.api._context.current()
    gen = big_items.remote(4)
    first = next(gen)
    assert runtime.get(first)[0] == 0
    second = next(gen)
    ids = [first.binary(), second.binary()]
    del first
    wait_until(lambda: ids[0] not in worker.refs, what="the first item to be freed")
    assert ids[1] in worker.refs
    task = ids[0][:16]
    runtime.get(gen.completed())  # every item is reported by now
    del second, gen  # the items never taken go too

    def stream_gone() -> bool:
        return not [oid for oid, _ in worker.refs.items() if oid[:16] == task]

    wait_until(stream_gone, what="every item of the stream to be freed")
    assert worker.store_client is not None
    wait_until(
        lambda: worker.store_client.stats().num_objects == 0,
        what="the store to hold none of the items",
    )


@runtime.remote
def take(gen):
    return list(gen)


def test_a_generator_cannot_be_passed_to_a_task(cluster):
    gen = count.remote(2)
    with pytest.raises(TypeError, match="ObjectRefGenerator"):
        take.remote(gen)
    assert [runtime.get(r) for r in gen] == [0, 1]


@runtime.remote
def slow_second(tally):
    yield 0
    runtime.get(tally.get.remote())
    yield 1


def test_wait_treats_a_generator_as_ready_when_its_next_item_is(cluster):
    gen = count.remote(1)
    ready, pending = runtime.wait([gen], timeout=30)
    assert ready == [gen] and pending == []
    next(gen)
    ready, _ = runtime.wait([gen], timeout=30)  # ended: ready too (next() stops)
    assert ready == [gen]

    async def main():
        return await runtime.wait_async([count_async.remote(2)], timeout=30)

    ready, _ = asyncio.run(main())
    assert len(ready) == 1


def test_asyncio_wait_takes_generators(cluster):
    async def main() -> list[int]:
        streams = {count_async.remote(3), count_async.remote(2)}
        seen = []
        while streams:
            done, _ = await asyncio.wait(streams, return_when=asyncio.FIRST_COMPLETED)
            for gen in done:  # the generators themselves
                try:
                    seen.append(await (await anext(gen)))
                except StopAsyncIteration:
                    streams.discard(gen)
        return sorted(seen)

    assert asyncio.run(main()) == [0, 0, 1, 1, 2]
