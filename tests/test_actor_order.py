"""The order one caller's actor calls run in, as in Ray: submission order for a
sync actor; for actors that run calls concurrently (async, threaded, or told
``allow_out_of_order_execution``), each call leaves once its own arguments
are ready, so one waiting for an argument holds back none after it."""

from __future__ import annotations

import os
import time

import pytest

import runtime

pytestmark = pytest.mark.timeout(90)


@runtime.remote
def after_gate(path: str, value: int) -> int:
    while not os.path.exists(path):
        time.sleep(0.01)
    return value


class _Counter:
    def __init__(self) -> None:
        self.value = 0

    def add(self, addition: int) -> int:
        self.value += addition
        return self.value


Counter = runtime.remote(_Counter)


@runtime.remote
class AsyncCounter:
    def __init__(self) -> None:
        self.value = 0

    async def add(self, addition: int) -> int:
        self.value += addition
        return self.value


def _later_call_runs_first(actor, tmp_path) -> None:
    gate = tmp_path / "gate"
    first = actor.add.remote(after_gate.remote(str(gate), 1))
    second = actor.add.remote(2)
    assert runtime.get(second, timeout=30) == 2  # while the first still waits
    gate.touch()
    assert runtime.get(first, timeout=30) == 3


def test_a_sync_actors_calls_run_in_submission_order(cluster, tmp_path):
    gate = tmp_path / "gate"
    counter = Counter.remote()
    first = counter.add.remote(after_gate.remote(str(gate), 1))
    second = counter.add.remote(2)
    gate.touch()
    assert runtime.get([first, second], timeout=30) == [1, 3]


def test_concurrent_actors_calls_leave_as_their_arguments_are_ready(cluster, tmp_path):
    (tmp_path / "async").mkdir()
    _later_call_runs_first(AsyncCounter.remote(), tmp_path / "async")
    threaded = Counter.options(max_concurrency=2).remote()
    (tmp_path / "threaded").mkdir()
    _later_call_runs_first(threaded, tmp_path / "threaded")
    told = Counter.options(allow_out_of_order_execution=True).remote()
    (tmp_path / "told").mkdir()
    _later_call_runs_first(told, tmp_path / "told")

    @runtime.remote
    def through_a_passed_handle(actor, path):
        _later_call_runs_first(actor, path)
        return True

    (tmp_path / "passed").mkdir()
    passed = AsyncCounter.remote()
    assert runtime.get(through_a_passed_handle.remote(passed, tmp_path / "passed"), timeout=60)


def test_in_order_is_refused_for_concurrent_actors(cluster):
    with pytest.raises(ValueError, match="async"):
        AsyncCounter.options(allow_out_of_order_execution=False).remote()
    with pytest.raises(ValueError, match="threaded"):
        Counter.options(max_concurrency=4, allow_out_of_order_execution=False).remote()
    with pytest.raises(TypeError):
        Counter.options(allow_out_of_order_execution="yes")


def test_a_call_waiting_for_its_argument_can_be_cancelled_or_die_with_its_actor(cluster, tmp_path):
    from runtime.exceptions import ActorDiedError, TaskCancelledError

    gate = tmp_path / "gate"
    counter = AsyncCounter.remote()
    waiting = counter.add.remote(after_gate.remote(str(gate), 1))
    runtime.cancel(waiting)
    with pytest.raises(TaskCancelledError):
        runtime.get(waiting, timeout=30)
    assert runtime.get(counter.add.remote(5), timeout=30) == 5
    # Many calls waiting on arguments at once, each leaving as its own is ready.
    values = [runtime.put(1) for _ in range(200)]
    delayed = [after_gate.remote(str(gate), 1) for _ in range(200)]
    calls = [counter.add.remote(v) for pair in zip(values, delayed, strict=True) for v in pair]
    gate.touch()
    assert sorted(runtime.get(calls, timeout=60))[-1] == 405
    stuck = counter.add.remote(after_gate.remote(str(tmp_path / "never"), 1))
    runtime.kill(counter)
    with pytest.raises(ActorDiedError):
        runtime.get(stuck, timeout=30)
