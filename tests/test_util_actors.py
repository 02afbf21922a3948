"""Ray's utilities: ActorPool, Queue, the multiprocessing Pool, as_completed and
map_unordered."""

from __future__ import annotations

import asyncio
import multiprocessing as stdlib_mp
import os

import pytest

import runtime
from runtime.util import (
    ActorPool,
    as_completed,
    as_completed_async,
    map_unordered,
    map_unordered_async,
)
from runtime.util.multiprocessing import Pool
from runtime.util.queue import Empty, Full, Queue

pytestmark = pytest.mark.timeout(120)


@runtime.remote(num_cpus=0)
class Doubler:
    def double(self, x: int) -> int:
        return 2 * x

    def pid(self) -> int:
        return os.getpid()


def double(actor, x):
    return actor.double.remote(x)


def test_actor_pool_map_and_submit(cluster):
    actors = [Doubler.remote() for _ in range(2)]
    pool = ActorPool(actors)
    assert list(pool.map(double, range(6))) == [0, 2, 4, 6, 8, 10]
    assert sorted(pool.map_unordered(double, range(4))) == [0, 2, 4, 6]
    for i in range(3):  # more than the actors: one waits for a free actor
        pool.submit(double, i)
    assert not pool.has_free()
    assert [pool.get_next() for _ in range(3)] == [0, 2, 4]
    assert not pool.has_next() and pool.has_free()
    with pytest.raises(StopIteration):
        pool.get_next()
    idle = pool.pop_idle()
    assert idle is not None
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(actors[0] if idle is actors[1] else actors[1])
    pool.push(idle)
    pool.submit(double, 5)
    assert pool.get_next_unordered() == 10


def test_actor_pool_async_forms(cluster):
    pool = ActorPool([Doubler.remote() for _ in range(2)])

    async def main() -> tuple[list[int], list[int]]:
        ordered = [x async for x in pool.map_async(double, range(5))]
        unordered = [x async for x in pool.map_unordered_async(double, range(5))]
        return ordered, sorted(unordered)

    assert asyncio.run(main()) == ([0, 2, 4, 6, 8], [0, 2, 4, 6, 8])


@runtime.remote(num_cpus=0)
def when_there(path: str, value: int) -> int:
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return value


@runtime.remote(num_cpus=0)
def squared(x: int) -> int:
    return x * x


def test_as_completed_yields_what_is_ready_first(cluster, tmp_path):
    gate = tmp_path / "gate"
    open(tmp_path / "open", "w").close()
    refs = [when_there.remote(str(gate), 1), when_there.remote(str(tmp_path / "open"), 2)]
    results = as_completed(refs, chunk_size=1)
    assert next(results) == 2  # the second is ready; the first waits for its gate
    gate.touch()
    assert list(results) == [1]
    assert sorted(as_completed([squared.remote(i) for i in range(25)])) == [
        i * i for i in range(25)
    ]
    got = list(as_completed(refs, yield_obj_refs=True, timeout=30))
    assert sorted(runtime.get(got)) == [1, 2] and all(isinstance(r, runtime.ObjectRef) for r in got)
    for bad, kind in (({"chunk_size": 0}, ValueError), ({"num_returns": 3}, TypeError)):
        with pytest.raises(kind):
            as_completed(refs, **bad)


def test_map_unordered_keeps_its_backpressure(cluster):
    taken = []

    def items():
        for i in range(7):
            taken.append(i)
            yield i

    results = map_unordered(squared, items(), backpressure_size=2, chunk_size=1)
    first = next(results)
    assert len(taken) == 2  # two in flight, then one result before the third
    assert sorted([first, *results]) == [i * i for i in range(7)]
    assert sorted(map_unordered(squared, range(5), backpressure_size=None)) == [0, 1, 4, 9, 16]
    for bad in ({"backpressure_size": 0}, {"chunk_size": -1}):
        with pytest.raises(ValueError):
            map_unordered(squared, range(3), **bad)
    with pytest.raises(TypeError, match="remote function"):
        map_unordered(lambda x: x, range(3))

    async def main() -> tuple[list[int], list[int]]:
        done = [x async for x in as_completed_async([squared.remote(i) for i in range(4)])]
        mapped = [x async for x in map_unordered_async(squared, range(4), backpressure_size=2)]
        return sorted(done), sorted(mapped)

    assert asyncio.run(main()) == ([0, 1, 4, 9], [0, 1, 4, 9])
    with pytest.raises(ValueError):  # at the call, not at the first await
        as_completed_async([], chunk_size=0)


@runtime.remote
def consume(queue: Queue, n: int) -> list[int]:
    return [queue.get(timeout=30) for _ in range(n)]


def test_queue_between_driver_and_tasks(cluster):
    queue = Queue(maxsize=3)
    assert queue.empty() and not queue.full() and len(queue) == 0
    queue.put_nowait_batch([1, 2, 3])
    assert queue.full() and queue.qsize() == 3
    with pytest.raises(Full):
        queue.put(4, block=False)
    with pytest.raises(Full):
        queue.put(4, timeout=0.1)
    with pytest.raises(Full):
        queue.put_nowait_batch([4])
    got = consume.remote(queue, 5)  # the task reads through its own copy
    queue.put(4)
    queue.put(5)
    assert runtime.get(got) == [1, 2, 3, 4, 5]
    with pytest.raises(Empty):
        queue.get_nowait()
    with pytest.raises(Empty):
        queue.get(timeout=0.1)
    queue.put_nowait_batch([7, 8])
    with pytest.raises(Empty):
        queue.get_nowait_batch(3)
    assert queue.get_nowait_batch(2) == [7, 8]
    with pytest.raises(ValueError):
        queue.get(timeout=-1)
    with pytest.raises(TypeError):
        queue.get_nowait_batch("2")  # type: ignore[arg-type]

    async def main() -> int:
        await queue.put_async(9)
        return await queue.get_async(timeout=5)

    assert asyncio.run(main()) == 9
    assert issubclass(Empty, __import__("queue").Empty)


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def fail(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


_initialized = []


def init(tag: str) -> None:
    _initialized.append(tag)


def tagged(_: int) -> list[str]:
    return list(_initialized)


def test_pool_as_the_standard_library_pool(cluster):
    with Pool(2, initializer=init, initargs=("ready",)) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(pool.imap(square, range(5))) == [0, 1, 4, 9, 16]
        assert sorted(pool.imap_unordered(square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
        assert pool.apply(add, (2, 3)) == 5
        result = pool.apply_async(add, (1,), {"b": 1})
        assert result.get(timeout=30) == 2 and result.ready() and result.successful()
        assert pool.map(tagged, range(2), chunksize=1) == [["ready"], ["ready"]]
        with pytest.raises(ValueError, match="three"):
            pool.map(fail, range(5))
        errors: list[BaseException] = []
        done = pool.map_async(fail, range(5), error_callback=errors.append)
        done.wait(30)
        assert not done.successful()
        seen = []
        pool.map_async(square, [3], callback=seen.append).get(30)
        pool.close()
        with pytest.raises(ValueError, match="not running"):
            pool.map(square, [1])
        pool.join()
        assert seen == [[9]] and isinstance(errors[0], ValueError)
    with pytest.raises(ValueError, match="not running"):
        pool.apply(add, (1, 2))


def test_pool_get_timeout_is_the_standard_one(cluster):
    import time

    with Pool(1) as pool:
        result = pool.apply_async(time.sleep, (5,))
        with pytest.raises(stdlib_mp.TimeoutError):
            result.get(timeout=0.1)
        # Ray's module names it (and JoinableQueue) too.
        assert runtime.util.multiprocessing.TimeoutError is stdlib_mp.TimeoutError
        assert runtime.util.multiprocessing.JoinableQueue is stdlib_mp.JoinableQueue
        with pytest.raises(ValueError, match="still running"):
            pool.join()
