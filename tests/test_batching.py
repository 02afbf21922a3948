"""The batcher that coalesces calls into batched round trips (no processes)."""

from __future__ import annotations

import asyncio

import pytest

from runtime._private.batching import Batcher


def test_calls_made_together_share_one_batch_and_later_ones_the_next() -> None:
    async def run() -> list[list[int]]:
        sent: list[list[int]] = []
        release = asyncio.Event()

        async def send(items: list[int]) -> list[int]:
            sent.append(items)
            await release.wait()
            return [i * 10 for i in items]

        batcher: Batcher[int, int] = Batcher(send)
        first = [asyncio.ensure_future(batcher.call(i)) for i in range(3)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the first batch is in flight
        later = [asyncio.ensure_future(batcher.call(i)) for i in range(3, 5)]
        release.set()
        assert await asyncio.gather(*first, *later) == [0, 10, 20, 30, 40]
        return sent

    assert asyncio.run(asyncio.wait_for(run(), 10)) == [[0, 1, 2], [3, 4]]


def test_a_batch_is_bounded() -> None:
    async def run() -> list[int]:
        sizes: list[int] = []

        async def send(items: list[int]) -> list[int]:
            sizes.append(len(items))
            return items

        batcher: Batcher[int, int] = Batcher(send, max_batch=2)
        assert await asyncio.gather(*(batcher.call(i) for i in range(5))) == list(range(5))
        return sizes

    assert asyncio.run(asyncio.wait_for(run(), 10)) == [2, 2, 1]


def test_a_failed_batch_fails_its_calls_and_the_next_batch_still_goes() -> None:
    async def run() -> None:
        calls = 0

        async def send(items: list[str]) -> list[str]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("peer gone")
            return [s.upper() for s in items]

        batcher: Batcher[str, str] = Batcher(send)
        with pytest.raises(ConnectionError, match="peer gone"):
            await batcher.call("a")
        assert await batcher.call("b") == "B"

    asyncio.run(asyncio.wait_for(run(), 10))


def test_a_wrong_number_of_results_is_an_error_not_a_mismatch() -> None:
    async def run() -> None:
        async def send(items: list[int]) -> list[int]:
            return []

        with pytest.raises(RuntimeError, match="1 requests got 0 results"):
            await Batcher(send).call(1)

    asyncio.run(asyncio.wait_for(run(), 10))


def test_close_cancels_the_calls_in_flight_and_waiting() -> None:
    async def run() -> None:
        async def send(items: list[int]) -> list[int]:
            await asyncio.Event().wait()
            return items

        batcher: Batcher[int, int] = Batcher(send)
        calls = [asyncio.ensure_future(batcher.call(i)) for i in range(2)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await batcher.close()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results)

    asyncio.run(asyncio.wait_for(run(), 10))


def test_max_batch_must_be_positive() -> None:
    async def send(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="at least 1"):
        Batcher(send, max_batch=0)


def test_a_lingering_batcher_gathers_calls_made_one_after_another() -> None:
    async def run() -> list[list[int]]:
        sent: list[list[int]] = []

        async def send(items: list[int]) -> list[int]:
            sent.append(items)
            return items

        batcher: Batcher[int, int] = Batcher(send, linger_s=0.05)
        calls = []
        for i in range(3):  # each a loop iteration apart
            calls.append(asyncio.ensure_future(batcher.call(i)))
            await asyncio.sleep(0)
        assert await asyncio.gather(*calls) == [0, 1, 2]
        return sent

    assert asyncio.run(asyncio.wait_for(run(), 10)) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="duration"):
        Batcher(lambda items: asyncio.sleep(0, items), linger_s=-1)
