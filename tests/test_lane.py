"""The executor lane: calls start in order off the loop; results come back on it."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from runtime.core_worker._lane import Lane

pytestmark = pytest.mark.timeout(30)

_var: contextvars.ContextVar[str] = contextvars.ContextVar("lane_test", default="")


def test_calls_run_in_order_off_the_loop_and_results_come_back_on_it() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        lane = Lane(loop, "test-lane")
        ran: list[int] = []
        threads: set[int] = set()
        delivered: list[tuple[int, int]] = []
        finished = asyncio.Event()

        def call(i: int) -> int:
            ran.append(i)
            threads.add(threading.get_ident())
            return i * i

        def done(result: int, error: BaseException | None) -> None:
            assert error is None and threading.get_ident() == loop_thread
            delivered.append((len(delivered), result))
            if len(delivered) == 500:
                finished.set()

        for i in range(500):
            lane.submit(lambda i=i: call(i), done)
        await asyncio.wait_for(finished.wait(), 10)
        assert ran == list(range(500))
        assert threads and loop_thread not in threads
        assert [r for _, r in delivered] == [i * i for i in range(500)]
        # The caller's context travels with the call; errors come back as errors.
        _var.set("mine")
        assert await lane.run(_var.get) == "mine"
        with pytest.raises(ZeroDivisionError):
            await lane.run(lambda: 1 / 0)
        lane.close()

    asyncio.run(main())
