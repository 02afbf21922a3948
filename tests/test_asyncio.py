"""The runtime inside asyncio programs: refs are awaitable futures."""

from __future__ import annotations

import asyncio
import threading

import pytest

import runtime
from runtime.exceptions import BlockingCallOnLoopError, GetTimeoutError, TaskError


@runtime.remote
def square(x):
    return x * x


@runtime.remote
async def slow(x, seconds):
    await asyncio.sleep(seconds)
    return x


@runtime.remote
def fail():
    raise KeyError("missing")


@pytest.fixture
async def attached():
    ctx = await runtime.init_async(num_cpus=2)
    try:
        yield ctx
    finally:
        await runtime.shutdown_async()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)


async def test_attaches_to_the_running_loop(attached):
    worker = runtime.api._context.current()
    assert worker.loop is asyncio.get_running_loop()
    assert not any(t.name == "runtime-loop" for t in threading.enumerate())
    assert await square.remote(4) == 16


async def test_hundred_refs_with_asyncio_wait(attached):
    refs = [square.remote(i) for i in range(100)]
    done, pending = await asyncio.wait(refs)
    assert not pending and done == set(refs)
    assert sorted(r.result() for r in done) == [i * i for i in range(100)]


async def test_hundred_refs_with_as_completed(attached):
    refs = [square.remote(i) for i in range(100)]
    results = [await fut for fut in asyncio.as_completed(refs)]
    assert sorted(results) == [i * i for i in range(100)]


async def test_gather_and_wait_for(attached):
    refs = [square.remote(i) for i in range(10)]
    assert await asyncio.gather(*refs) == [i * i for i in range(10)]
    assert await asyncio.wait_for(square.remote(3), timeout=10) == 9


async def test_as_future_is_rays(attached):
    future = square.remote(4).as_future()
    assert isinstance(future, asyncio.Future) and await future == 16
    done, _ = await asyncio.wait([square.remote(5).as_future()], timeout=30)
    assert [f.result() for f in done] == [25]


async def test_wait_for_timeout_leaves_ref_usable(attached):
    ref = slow.remote(5, 0.5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ref, timeout=0.05)
    assert await ref == 5


async def test_first_completed(attached):
    fast, late = slow.remote(1, 0), slow.remote(2, 5)
    done, pending = await asyncio.wait([fast, late], return_when=asyncio.FIRST_COMPLETED)
    assert done == {fast} and pending == {late}


async def test_errors_raise_on_await(attached):
    with pytest.raises(KeyError) as info:
        await fail.remote()
    assert isinstance(info.value, TaskError)
    assert "missing" in str(info.value)


async def test_blocking_calls_on_the_loop_name_the_await_form(attached):
    ref = square.remote(2)
    with pytest.raises(BlockingCallOnLoopError, match="await ref"):
        runtime.get(ref)
    with pytest.raises(BlockingCallOnLoopError, match="wait_async"):
        runtime.wait([ref])
    with pytest.raises(BlockingCallOnLoopError, match="await ref"):
        square.remote(3).future().result()  # would wait for this very loop
    assert await ref == 4
    assert await asyncio.wrap_future(square.remote(3).future()) == 9


async def test_async_forms(attached):
    refs = [square.remote(i) for i in range(5)]
    assert await runtime.get_async(refs) == [0, 1, 4, 9, 16]
    ready, not_ready = await runtime.wait_async(refs, num_returns=5)
    assert ready == refs and not not_ready
    with pytest.raises(GetTimeoutError):
        await runtime.get_async(slow.remote(1, 5), timeout=0.05)
    assert (await runtime.cluster_resources_async())["CPU"] == 2


async def test_sync_init_on_a_running_loop_runs_its_own():
    """As in a notebook cell: the kernel's loop runs, and sync calls work."""
    ctx = runtime.init(num_cpus=1)
    try:
        assert runtime.api._context.current().loop is not asyncio.get_running_loop()
        assert any(t.name == "runtime-loop" for t in threading.enumerate())
        ref = square.remote(5)
        assert runtime.get(ref) == 25  # blocks this loop, not the runtime's
        assert await square.remote(6) == 36  # and awaiting works here too
        assert runtime.wait([ref]) == ([ref], [])
    finally:
        await runtime.shutdown_async()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)


def test_awaiting_from_a_foreign_loop(cluster):
    """A sync driver whose program also runs asyncio.run() elsewhere."""

    async def main():
        return await square.remote(6)

    assert asyncio.run(main()) == 36


@runtime.remote
def sleeper_until_cancelled():
    import time

    for _ in range(600):
        if runtime.get_runtime_context().is_canceled():
            return "saw it"
        time.sleep(0.05)
    return "never"


async def test_cancel_remote_is_an_opt_in_per_await(attached):
    from runtime.exceptions import TaskCancelledError

    kept = slow.remote(1, 0.5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runtime.get_async(kept), timeout=0.05)
    assert await kept == 1  # the default: only the local wait was cancelled

    ref = sleeper_until_cancelled.remote()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runtime.get_async(ref, cancel_remote=True), timeout=0.2)
    with pytest.raises(TaskCancelledError):
        await ref
