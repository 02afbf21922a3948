"""Cancellation as in Ray: recursive by default, from any process holding the
ref, KeyboardInterrupt in a running sync task, ``is_canceled()``."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from conftest import wait_until

import runtime
from runtime.exceptions import TaskCancelledError


@runtime.remote(num_cpus=0)
class Board:
    """Where tasks note what happened to them, and wait to be let go."""

    def __init__(self):
        self.notes = []
        self._go = asyncio.Event()

    async def wait(self):
        await self._go.wait()

    def go(self):
        self._go.set()

    def note(self, what):
        self.notes.append(what)

    def read(self):
        return list(self.notes)


def _board(name: str):
    return Board.options(name=name).remote()


@runtime.remote
def blocked(board_name, label):
    board = runtime.get_actor(board_name)
    board.note.remote(f"{label} started")
    try:
        runtime.get(board.wait.remote())
    except KeyboardInterrupt:
        ctx = runtime.get_runtime_context()
        runtime.get(board.note.remote(f"{label} interrupted, canceled={ctx.is_canceled()}"))
        raise
    return label


@runtime.remote
def parent(board_name):
    return runtime.get(blocked.remote(board_name, "child"))


@runtime.remote
def canceller(refs):
    runtime.cancel(refs[0])
    return "asked"


def _wait_for_note(board, note, timeout=30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notes = runtime.get(board.read.remote())
        if note in notes:
            return notes
        runtime.wait([board.read.remote()], timeout=0.05)
    raise AssertionError(f"no note {note!r} in {runtime.get(board.read.remote())}")


def _cancel_once_started(name, submit, label):
    """Submits, waits until ``label`` runs, cancels; its ref then raises, and
    ``label`` noted that it got the interrupt."""
    board = _board(name)
    ref = submit(name)
    _wait_for_note(board, f"{label} started")
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError) as raised:
        runtime.get(ref, timeout=30)
    # As in Ray, a task cancelled while it ran fails with a RayTaskError whose
    # cause is the cancellation (Ray's documentation catches either).
    assert isinstance(raised.value, runtime.exceptions.RayTaskError)
    _wait_for_note(board, f"{label} interrupted, canceled=True")


def test_running_sync_task_gets_keyboard_interrupt(cluster):
    _cancel_once_started("b-interrupt", lambda name: blocked.remote(name, "task"), "task")


def test_cancel_is_recursive_by_default(cluster):
    _cancel_once_started("b-recursive", parent.remote, "child")


def test_cancel_from_a_borrower_is_forwarded_to_the_owner(cluster):
    board = _board("b-forward")
    ref = blocked.remote("b-forward", "task")
    _wait_for_note(board, "task started")
    assert runtime.get(canceller.remote([ref])) == "asked"
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=30)


def test_cancel_checks_its_arguments(cluster):
    with pytest.raises(TypeError, match="ObjectRef"):
        runtime.cancel("nope")
    with pytest.raises(TypeError, match="force"):
        runtime.cancel(runtime.put(1), force="yes")
    board = _board("b-force")
    call = board.wait.remote()
    with pytest.raises(ValueError, match="force=True is not supported for actor calls"):
        runtime.cancel(call, force=True)
    board.go.remote()
    runtime.get(call)


def test_is_canceled_outside_a_task(cluster):
    with pytest.raises(RuntimeError, match="inside a task"):
        runtime.get_runtime_context().is_canceled()


@runtime.remote
def sleeper(board_name, label):
    """Sleeps; notes that it started once it is inside the sleep (seen from
    a helper thread: the task's thread is in ``nap``, which only sleeps)."""
    import sys
    import threading
    import time

    task_thread = threading.get_ident()

    def nap():
        time.sleep(600)

    def tell_once_asleep():
        while sys._current_frames()[task_thread].f_code.co_name != "nap":
            time.sleep(0.01)
        runtime.get_actor(board_name).note.remote(f"{label} started")

    threading.Thread(target=tell_once_asleep, daemon=True).start()
    try:
        nap()
    except KeyboardInterrupt:
        runtime.get(runtime.get_actor(board_name).note.remote(f"{label} interrupted"))
        raise


@runtime.remote
def sleeping_parent(board_name):
    return runtime.get(sleeper.remote(board_name, "child"))


def _cpus_back(total: float, timeout: float = 30.0) -> None:
    from conftest import wait_until

    wait_until(
        lambda: runtime.available_resources().get("CPU") == total,
        timeout=timeout,
        what="every CPU back",
    )


@pytest.mark.parametrize("nested", [False, True], ids=["task", "child"])
def test_cancel_interrupts_a_blocking_call(cluster, nested):
    """As in Ray, the KeyboardInterrupt reaches a task inside a blocking call
    (``time.sleep`` here): its worker runs it on its main thread, where a
    signal lands at once. (Raised between bytecodes, it waited for the sleep.)"""
    name = f"b-sleep-{nested}"
    board = _board(name)
    ref = sleeping_parent.remote(name) if nested else sleeper.remote(name, "child")
    _wait_for_note(board, "child started")
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=30)
    _wait_for_note(board, "child interrupted")
    _cpus_back(2.0)


@runtime.remote
def with_alarm():
    from conftest import sleep_until_alarm

    return sleep_until_alarm()


def test_a_task_may_use_signals(cluster):
    """A task runs on its worker's main thread, as in Ray: its code may set
    signal handlers (a timeout by ``signal.alarm``, here)."""
    assert runtime.get(with_alarm.remote(), timeout=30) == "alarm"


@runtime.remote
class Cancellable:
    def __init__(self):
        self._running = asyncio.Event()

    async def wait_forever(self):
        self._running.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.saw_cancel = True
            raise

    async def started(self):
        await self._running.wait()

    async def saw_cancelled(self):
        return getattr(self, "saw_cancel", False)


def test_cancel_async_actor_call(cluster):
    actor = Cancellable.remote()
    ref = actor.wait_forever.remote()
    runtime.get(actor.started.remote(), timeout=30)  # the long call is running now
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=30)
    assert runtime.get(actor.saw_cancelled.remote()) is True


@runtime.remote
class Gated:
    def hold(self, path):
        while not os.path.exists(path):
            time.sleep(0.01)
        return "held"

    def quick(self):
        return "quick"


def test_cancel_of_a_queued_sync_call_answers_at_once(cluster, tmp_path):
    gate = tmp_path / "gate"
    actor = Gated.remote()
    held = actor.hold.remote(str(gate))
    queued = actor.quick.remote()
    # Cancelled once the actor's worker has it (not in its caller's queue).
    wait_until(
        lambda: any(
            t.state == "SUBMITTED_TO_WORKER"
            for t in runtime.util.state.list_tasks(filters=[("name", "=", "Gated.quick")])
        ),
        30,
        "the call to reach the actor",
    )
    runtime.cancel(queued)
    # Answered while the call ahead of it still runs (it never will run).
    with pytest.raises(TaskCancelledError):
        runtime.get(queued, timeout=30)
    assert runtime.wait([held], timeout=0)[0] == []
    gate.touch()
    assert runtime.get(held, timeout=30) == "held"
    assert runtime.get(actor.quick.remote(), timeout=30) == "quick"


def test_cancel_queued_task():
    ctx = runtime.init(num_cpus=1)
    try:

        @runtime.remote
        def slow():
            time.sleep(1.0)
            return "done"

        running = slow.remote()
        queued = slow.remote()
        runtime.cancel(queued)
        with pytest.raises(TaskCancelledError):
            runtime.get(queued, timeout=30)
        assert runtime.get(running, timeout=30) == "done"
    finally:
        runtime.shutdown()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)


def test_cancel_running_task(cluster):
    @runtime.remote
    def spin():
        while True:
            time.sleep(0.01)

    @runtime.remote
    def block():
        time.sleep(3600)

    ref = spin.remote()
    wait_until(lambda: runtime.available_resources().get("CPU", 0) < 2, what="the task to start")
    runtime.cancel(ref)
    with pytest.raises(TaskCancelledError):
        runtime.get(ref, timeout=30)
    forced = block.remote()
    wait_until(lambda: runtime.available_resources().get("CPU", 0) < 2, what="the task to start")
    runtime.cancel(forced, force=True)
    with pytest.raises(TaskCancelledError):
        runtime.get(forced, timeout=30)
