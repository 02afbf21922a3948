"""Actor lifetimes as in Ray: handles anywhere keep an actor alive, owners take
their actors along, detached actors stay."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import pytest
from conftest import process_running, wait_until

import runtime

pytestmark = pytest.mark.timeout(120)


@runtime.remote(num_cpus=0)
class Probe:
    def pid(self) -> int:
        return os.getpid()


@runtime.remote(num_cpus=0)
class Keeper:
    def __init__(self) -> None:
        self.kept: list = []

    def keep(self, handles: list) -> int:
        self.kept = handles
        return len(handles)

    def drop(self) -> None:
        self.kept = []

    def make(self) -> int:
        self.kept = [Probe.remote()]
        return runtime.get(self.kept[0].pid.remote())

    def pid(self) -> int:
        return os.getpid()


@runtime.remote
def call_through(handle) -> int:
    return runtime.get(handle.pid.remote())


@runtime.remote
def make_and_return_pid() -> int:
    probe = Probe.remote()
    return runtime.get(probe.pid.remote())


def gone(pid: int) -> None:
    wait_until(lambda: not process_running(pid), what=f"actor process {pid} to exit")


def test_a_handle_passed_to_a_task_and_dropped_ends_the_actor(cluster):
    probe = Probe.remote()
    pid = runtime.get(probe.pid.remote())
    assert runtime.get(call_through.remote(probe)) == pid
    del probe
    gone(pid)


def test_a_borrowed_handle_keeps_the_actor_alive(cluster):
    probe = Probe.remote()
    pid = runtime.get(probe.pid.remote())
    keeper = Keeper.remote()
    assert runtime.get(keeper.keep.remote([probe])) == 1
    del probe  # the keeper's copy holds it
    runtime.get(keeper.pid.remote())
    assert process_running(pid)
    runtime.get(keeper.drop.remote())
    gone(pid)


def test_actors_die_with_the_task_or_actor_that_owns_them(cluster):
    # A task's actor: gone when the task's handles are (the task ended).
    pid = runtime.get(make_and_return_pid.remote())
    gone(pid)
    # An actor's actor: gone when its owner is killed.
    keeper = Keeper.remote()
    inner = runtime.get(keeper.make.remote())
    assert process_running(inner)
    runtime.kill(keeper)
    gone(inner)


@runtime.remote
def make_and_return_handle():
    return Probe.remote()


def test_a_handle_returned_by_its_owner_task(cluster):
    """The task's worker owns the actor; the driver borrows it, and the actor
    lives while the driver's copy does."""
    probe = runtime.get(make_and_return_handle.remote())
    pid = runtime.get(probe.pid.remote())
    assert runtime.get(probe.pid.remote()) == pid
    del probe
    gone(pid)


def test_detached_actors_outlive_their_handles(cluster):
    probe = Probe.options(lifetime="detached", name="stays").remote()
    pid = runtime.get(probe.pid.remote())
    del probe
    again = runtime.get_actor("stays")
    assert runtime.get(again.pid.remote()) == pid
    runtime.kill(again)
    gone(pid)


class LeaverBase:
    def __init__(self, marker: str) -> None:
        import atexit

        atexit.register(lambda: open(marker, "w").close())

    def pid(self) -> int:
        return os.getpid()

    def leave(self) -> None:
        runtime.actor.exit_actor()

    def quit(self) -> None:
        sys.exit(0)  # as in Ray: a success code ends the actor as exit_actor() does

    def crash(self, code: int) -> None:
        sys.exit(code)  # any other: a crash


Leaver = runtime.remote(num_cpus=0)(LeaverBase)


@runtime.remote(num_cpus=0)
class AsyncLeaver(LeaverBase):
    async def leave_async(self) -> None:
        runtime.actor.exit_actor()

    async def quit_async(self) -> None:
        sys.exit()

    async def crash_async(self, code: int) -> None:
        sys.exit(code)


@pytest.mark.parametrize(
    "kind, options, method",
    [
        ("sync", {}, "leave"),
        ("threaded", {"max_concurrency": 4}, "leave"),
        ("async", {}, "leave_async"),
        ("async, sync method", {}, "leave"),
        ("terminate", {}, "__ray_terminate__"),
        ("sync", {}, "quit"),
        ("threaded", {"max_concurrency": 4}, "quit"),
        ("async", {}, "quit_async"),
    ],
)
def test_an_actor_exits_from_inside(cluster, tmp_path, kind, options, method):
    marker = str(tmp_path / "atexit-ran")
    cls = AsyncLeaver if kind.startswith("async") else Leaver
    actor = cls.options(max_restarts=2, **options).remote(marker)
    assert runtime.get(actor.__ray_ready__.remote()) is True
    pid = runtime.get(actor.pid.remote())
    ending = getattr(actor, method).remote()
    behind = actor.pid.remote()  # sent before the actor ended
    with pytest.raises(runtime.exceptions.ActorDiedError, match="exited intentionally"):
        runtime.get(ending)
    if kind == "threaded":  # it may run beside the ending call, on another thread
        with contextlib.suppress(runtime.exceptions.ActorDiedError):
            assert runtime.get(behind) == pid
    else:  # queued behind it: does not run
        with pytest.raises(runtime.exceptions.ActorDiedError, match="exited intentionally"):
            runtime.get(behind)
    with pytest.raises(runtime.exceptions.ActorDiedError, match="exited intentionally"):
        runtime.get(actor.pid.remote())  # not restarted
    gone(pid)
    assert os.path.exists(marker)  # atexit handlers ran


@pytest.mark.parametrize("kind, method", [("sync", "crash"), ("async", "crash_async")])
def test_sys_exit_with_a_failure_code_is_a_crash(cluster, tmp_path, kind, method):
    cls = AsyncLeaver if kind == "async" else Leaver
    actor = cls.options(max_restarts=1).remote(str(tmp_path / "marker"))
    pid = runtime.get(actor.pid.remote())
    # Restarted, so the call's error says it is unavailable (as in Ray), not dead.
    with pytest.raises(runtime.exceptions.ActorUnavailableError) as info:
        runtime.get(getattr(actor, method).remote(3))
    assert "intentionally" not in str(info.value)
    gone(pid)
    assert runtime.get(actor.pid.remote(), timeout=60) != pid  # restarted


def test_exit_actor_outside_an_actor():
    with pytest.raises(TypeError, match="in a method of an actor"):
        runtime.actor.exit_actor()


@runtime.remote(num_cpus=0)
class Introspective:
    def describe(self):
        ctx = runtime.get_runtime_context()
        me = ctx.current_actor
        return (
            ctx.get_actor_id(),
            ctx.get_actor_name(),
            ctx.was_current_actor_reconstructed,
            type(me).__name__,
            ctx.get_task_name(),
            ctx.get_task_function_name(),
        )

    async def names(self):
        ctx = runtime.get_runtime_context()
        return ctx.get_task_name(), ctx.get_task_function_name()

    def pid(self) -> int:
        return os.getpid()

    def crash(self) -> None:
        os._exit(1)


def test_the_runtime_context_of_an_actor(cluster):
    actor = Introspective.options(name="intro", max_restarts=1).remote()
    actor_id, name, restarted, handle_type, task, fn = runtime.get(actor.describe.remote())
    assert actor_id == actor._actor_id.hex() and name == "intro" and not restarted
    assert handle_type == "ActorHandle"
    assert (task, fn) == ("Introspective.describe", f"{__name__}.Introspective.describe")
    assert runtime.get(actor.names.options(name="n").remote()) == (
        "n",
        f"{__name__}.Introspective.names",
    )
    with pytest.raises(runtime.exceptions.ActorUnavailableError):
        runtime.get(actor.crash.remote())
    assert runtime.get(actor.describe.remote())[2]  # the restarted incarnation
    ctx = runtime.get_runtime_context()
    assert ctx.get_actor_id() is None and ctx.get_actor_name() is None
    assert "describe" in dir(actor) and "pid" in dir(actor)


def test_the_call_that_ends_an_actor_is_not_an_unhandled_error(cluster):
    reports: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reports.append(record.getMessage())

    catch = Catch()
    logging.getLogger("runtime").addHandler(catch)
    try:
        actor = Leaver.remote(os.devnull)
        assert runtime.get(actor.__ray_ready__.remote()) is True
        ending = actor.__ray_terminate__.remote()  # asked for: never read
        after = actor.pid.remote()  # a real error, never read
        ending_id, after_id = ending.hex(), after.hex()
        del ending, after
        wait_until(lambda: any(after_id in r for r in reports), 30, "the later call's report")
        assert not any(ending_id in r for r in reports)
    finally:
        logging.getLogger("runtime").removeHandler(catch)


class _Cleaned:
    """Writes its tag to ``folder`` in ``__ray_shutdown__`` (Ray's cleanup hook)."""

    def __init__(self, folder: str, tag: str, hang: bool = False) -> None:
        self.folder, self.tag, self.hang = folder, tag, hang

    def __ray_shutdown__(self) -> None:
        if self.hang:
            import time

            time.sleep(3600)
        if self.tag == "raises":
            raise RuntimeError("cleanup failed")
        with open(os.path.join(self.folder, self.tag), "w") as f:
            f.write(str(os.getpid()))

    def pid(self) -> int:
        return os.getpid()

    def leave(self) -> None:
        runtime.actor.exit_actor()


Cleaned = runtime.remote(num_cpus=0)(_Cleaned)


@runtime.remote(num_cpus=0)
class AsyncCleaned(_Cleaned):
    async def ping(self) -> int:
        return os.getpid()


def test_ray_shutdown_runs_when_an_actor_ends_gracefully(cluster, tmp_path):
    """As in Ray: out of scope (sync or async actor), ``__ray_terminate__`` and
    ``exit_actor()`` run it; ``kill`` does not. A hook that raises is logged
    and the actor still ends."""
    folder = str(tmp_path)

    def ended(actor, how) -> int:
        pid = runtime.get(actor.pid.remote())
        how(actor)
        return pid

    pids = {}
    a = Cleaned.remote(folder, "out_of_scope")
    pids["out_of_scope"] = runtime.get(a.pid.remote())
    del a
    b = AsyncCleaned.remote(folder, "async_out_of_scope")
    pids["async_out_of_scope"] = runtime.get(b.pid.remote())
    del b
    c = Cleaned.remote(folder, "terminate")
    pids["terminate"] = ended(c, lambda h: h.__ray_terminate__.remote())
    d = Cleaned.remote(folder, "exit_actor")
    pids["exit_actor"] = ended(d, lambda h: runtime.wait([h.leave.remote()], timeout=30))
    e = Cleaned.remote(folder, "killed")
    pids["killed"] = ended(e, runtime.kill)
    f = Cleaned.remote(folder, "raises")
    pids["raises"] = runtime.get(f.pid.remote())
    del f
    for pid in pids.values():
        wait_until(lambda pid=pid: not process_running(pid), 60, "the actor to end")
    assert sorted(os.listdir(folder)) == sorted(
        ["out_of_scope", "async_out_of_scope", "terminate", "exit_actor"]
    )
    dead = {a["pid"]: a for a in runtime.util.list_actors() if a["state"] == "DEAD"}
    assert "out of scope" in dead[pids["out_of_scope"]]["death_cause"]


def test_a_hung_ray_shutdown_is_cut_short():
    # (Ray's name, in ms: taken as this runtime's setting in seconds)
    runtime.init(num_cpus=1, _system_config={"actor_graceful_shutdown_timeout_ms": 500})
    try:
        actor = Cleaned.remote("/nonexistent", "hangs", hang=True)
        pid = runtime.get(actor.pid.remote())
        del actor
        wait_until(lambda: not process_running(pid), 60, "the actor to end")
    finally:
        runtime.shutdown()
