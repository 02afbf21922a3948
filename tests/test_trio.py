"""Trio programs (and anyio on either backend) await refs and use the async API."""

from __future__ import annotations

import pytest
from conftest import assert_no_orphans

import runtime

trio = pytest.importorskip("trio", reason="needs trio (the test extra)")
anyio = pytest.importorskip("anyio", reason="needs anyio (the test extra)")

pytestmark = pytest.mark.timeout(120)


@runtime.remote
def square(x: int) -> int:
    return x * x


@runtime.remote
async def count(n: int):
    for i in range(n):
        yield i


@runtime.remote
def slow() -> int:
    import time

    time.sleep(30)
    return 1


def test_trio_awaits_refs_and_the_async_api():
    async def main() -> str:
        ctx = await runtime.init_async(num_cpus=2)
        try:
            assert await square.remote(3) == 9
            assert await runtime.get_async([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
            ready, _ = await runtime.wait_async([square.remote(2)], timeout=30)
            assert len(ready) == 1
            assert [await ref async for ref in count.remote(3)] == [0, 1, 2]
            # Cancelling the trio wait cancels only the local wait.
            ref = slow.remote()
            with trio.move_on_after(0.05):
                await ref
            assert not ref.done()
            runtime.cancel(ref)
        finally:
            await runtime.shutdown_async()
        assert ctx.session_dir is not None
        return ctx.session_dir

    assert_no_orphans(trio.run(main))


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_anyio_on_either_backend(backend):
    async def main() -> list[int]:
        await runtime.init_async(num_cpus=1)
        try:
            async with anyio.create_task_group() as group:
                results: list[int] = []

                async def one(i: int) -> None:
                    results.append(await square.remote(i))

                for i in range(5):
                    group.start_soon(one, i)
            return sorted(results)
        finally:
            await runtime.shutdown_async()

    assert anyio.run(main, backend=backend) == [0, 1, 4, 9, 16]
