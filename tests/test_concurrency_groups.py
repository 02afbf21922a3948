"""Concurrency groups: each group limits its own calls, as in Ray."""

from __future__ import annotations

import asyncio
import threading

import pytest
from conftest import wait_until

import runtime

pytestmark = pytest.mark.timeout(90)


@runtime.remote(num_cpus=0, concurrency_groups={"io": 2, "compute": 1})
class AsyncGroups:
    def __init__(self) -> None:
        self.running = {"io": 0, "compute": 0, "": 0}
        self.peak = dict(self.running)
        self.release = asyncio.Event()

    async def _hold(self, group: str) -> None:
        self.running[group] += 1
        self.peak[group] = max(self.peak[group], self.running[group])
        await self.release.wait()
        self.running[group] -= 1

    @runtime.method(concurrency_group="io")
    async def io(self) -> None:
        await self._hold("io")

    @runtime.method(concurrency_group="compute")
    async def compute(self) -> None:
        await self._hold("compute")

    async def default(self) -> None:
        await self._hold("")

    async def flexible(self, group: str) -> None:
        await self._hold(group)

    def state(self) -> tuple[dict, dict, str]:
        # A sync method of an async actor runs on the actor's loop thread.
        return dict(self.running), dict(self.peak), threading.current_thread().name

    def open(self) -> None:
        self.release.set()

    async def loop_thread(self) -> str:
        return threading.current_thread().name


def test_async_groups_limit_separately(cluster):
    actor = AsyncGroups.remote()
    refs = [actor.io.remote() for _ in range(4)]
    refs += [actor.compute.remote() for _ in range(3)]
    refs += [actor.default.remote() for _ in range(5)]
    refs += [actor.flexible.options(concurrency_group="io").remote("io")]

    def settled() -> bool:
        running, _, _ = runtime.get(actor.state.remote())
        return running == {"io": 2, "compute": 1, "": 5}

    wait_until(settled, what="each group to fill up to its size")
    _, peak, thread = runtime.get(actor.state.remote())
    assert peak == {"io": 2, "compute": 1, "": 5}
    actor.open.remote()
    runtime.get(refs)
    assert thread == runtime.get(actor.loop_thread.remote())
    _, peak, _ = runtime.get(actor.state.remote())
    assert peak == {"io": 2, "compute": 1, "": 5}  # never more than each group's size


@runtime.remote(num_cpus=0, concurrency_groups={"io": 2})
class ThreadedGroups:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.running = {"io": 0, "": 0}
        self.peak = dict(self.running)

    def _hold(self, group: str) -> str:
        with self.lock:
            self.running[group] += 1
            self.peak[group] = max(self.peak[group], self.running[group])
        self.gate.wait()
        with self.lock:
            self.running[group] -= 1
        return threading.current_thread().name

    @runtime.method(concurrency_group="io")
    def io(self) -> str:
        return self._hold("io")

    def default(self) -> str:
        return self._hold("")

    @runtime.method(concurrency_group="io")
    def counts(self) -> dict:
        return dict(self.running)

    @runtime.method(concurrency_group="io")
    def open(self) -> dict:
        self.gate.set()
        return dict(self.peak)


def test_threaded_groups_have_their_own_threads(cluster):
    actor = ThreadedGroups.remote()
    defaults = [actor.default.remote() for _ in range(2)]  # the default group: 1 thread
    ios = [actor.io.remote() for _ in range(1)]
    # The default group (one thread) runs one call; the io group runs beside it,
    # with a thread left for the calls that look and open the gate.
    wait_until(
        lambda: runtime.get(actor.counts.remote()) == {"io": 1, "": 1},
        what="the default group to hold one call and the io group another",
    )
    assert runtime.get(actor.open.remote()) == {"io": 1, "": 1}
    names = runtime.get(defaults + ios)
    assert all("-io" not in n for n in names[:2]) and "-io" in names[2]


def test_unknown_groups_are_refused():
    with pytest.raises(ValueError, match="'nope'"):

        @runtime.remote(concurrency_groups={"io": 1})
        class Bad:
            @runtime.method(concurrency_group="nope")
            def f(self) -> None:
                pass

    with pytest.raises(ValueError, match="concurrency_groups\\['io'\\]"):
        runtime.remote(concurrency_groups={"io": 0})(AsyncGroups.__ray_actor_class__)


def test_an_unknown_group_on_a_call(cluster):
    actor = AsyncGroups.remote()
    with pytest.raises(ValueError, match="no concurrency group 'nope'"):
        actor.io.options(concurrency_group="nope")
