"""Actors of every kind, on real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

import pytest
from conftest import cluster_of, process_running, wait_until

import runtime
from runtime.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    PendingCallsLimitExceededError,
    TaskCancelledError,
    TaskError,
)


@runtime.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def fail(self):
        raise ValueError("method failed")

    def pid(self):
        return os.getpid()

    def exit(self):
        os._exit(1)

    def exit_once(self, marker):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return self.value

    @runtime.method(num_returns=2)
    def pair(self):
        return self.value, -self.value


@runtime.remote
class AsyncActor:
    async def __init__(self, delay=0.0):
        await asyncio.sleep(delay)
        self.in_flight = 0
        self.peak = 0
        self.initialized = True

    async def sleep(self, seconds):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.in_flight -= 1
        return True

    async def get_peak(self):
        return self.peak

    async def is_initialized(self):
        return self.initialized

    def blocking(self):
        time.sleep(0.01)
        return threading.current_thread().name

    async def loop_thread(self):
        return threading.current_thread().name

    def get_inside(self):
        return runtime.get(runtime.put(1))


@runtime.remote
class Threaded:
    def __init__(self):
        self.barrier = threading.Barrier(2, timeout=10)

    def meet(self):
        # Returns only if two calls run at the same time.
        self.barrier.wait()
        return threading.get_ident()


@runtime.remote
class Broken:
    def __init__(self):
        raise RuntimeError("constructor exploded")

    def method(self):
        return 1


@runtime.remote
def call_counter(counter, n):
    return runtime.get([counter.incr.remote() for _ in range(n)])


def test_sync_actor_state_and_order(cluster):
    counter = Counter.remote(10)
    refs = [counter.incr.remote() for _ in range(10_000)]
    assert runtime.get(refs) == list(range(11, 10_011))


def test_order_per_caller_through_passed_handles(cluster):
    counter = Counter.remote()
    results = runtime.get([call_counter.remote(counter, 500) for _ in range(3)])
    for seq in results:
        assert seq == sorted(seq) and len(seq) == 500
    assert runtime.get(counter.get.remote()) == 1500


def test_method_errors_leave_the_actor_alive(cluster):
    counter = Counter.remote()
    with pytest.raises(ValueError, match="method failed") as info:
        runtime.get(counter.fail.remote())
    assert isinstance(info.value, TaskError)
    assert runtime.get(counter.incr.remote()) == 1


def test_num_returns_on_methods(cluster):
    counter = Counter.remote(3)
    a, b = counter.pair.remote()
    assert runtime.get([a, b]) == [3, -3]
    x, y, z = counter.incr.options(num_returns=1).remote(), *counter.pair.remote()
    assert runtime.get([x, y, z]) == [4, 4, -4]


def test_direct_calls_are_type_errors(cluster):
    with pytest.raises(TypeError, match=r"Counter\.remote"):
        Counter()
    counter = Counter.remote()
    with pytest.raises(TypeError, match=r"\.incr\.remote"):
        counter.incr()
    with pytest.raises(AttributeError, match="nope"):
        counter.nope.remote()


def test_a_handle_has_its_own_actors_methods(cluster):
    @runtime.remote
    class Other:
        def only_here(self):
            return "other"

    counter, other = Counter.remote(), Other.remote()
    assert runtime.get(other.only_here.remote()) == "other"
    with pytest.raises(AttributeError, match="only_here"):
        counter.only_here.remote()
    assert isinstance(counter, runtime.actor.ActorHandle)
    assert type(counter).__name__ == "ActorHandle"
    # A handle no variable holds still calls its actor (Ray's raises here).
    assert runtime.get(Counter.remote(5).incr.remote()) == 6


def test_ray_call_runs_a_function_on_the_actor(cluster):
    counter, waiter = Counter.remote(2), AsyncActor.remote()
    assert runtime.get(counter.__ray_call__.remote(lambda self, by: self.incr(by), 3)) == 5
    assert runtime.get(counter.get.remote()) == 5  # it ran on the actor's own state

    async def peak_after(self, seconds):
        await self.sleep(seconds)
        return await self.get_peak()

    # An async actor awaits a coroutine function's result, on its loop.
    assert runtime.get(waiter.__ray_call__.remote(peak_after, 0.0)) == 1
    assert runtime.get(waiter.__ray_call__.remote(lambda self: self.initialized)) is True
    with pytest.raises(TypeError, match="takes a callable first"):
        counter.__ray_call__.remote(3)
    with pytest.raises(TypeError, match="got nothing"):
        counter.__ray_call__.remote()


def test_actor_option_errors():
    with pytest.raises(ValueError, match="bogus"):
        Counter.options(bogus=1)
    with pytest.raises(TypeError, match="max_restarts"):
        Counter.options(max_restarts="x")
    with pytest.raises(ValueError, match="lifetime"):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError, match="get_if_exists"):
        Counter.options(get_if_exists=True)
    with pytest.raises(ValueError, match="max_concurrency"):
        Counter.options(max_concurrency=0)
    # As in Ray: no empty name or namespace (None means none, or the job's).
    with pytest.raises(ValueError, match="name cannot be empty"):
        Counter.options(name="")
    with pytest.raises(ValueError, match="not a valid namespace"):
        Counter.options(name="x", namespace="")
    with pytest.raises(ValueError, match="non-empty"):
        runtime.get_actor("")
    with pytest.raises(TypeError, match="got int"):
        runtime.get_actor(3)  # type: ignore[arg-type]


@runtime.remote
class Callable_:
    def __call__(self, x):
        return x + 1

    def __len__(self):
        return 3

    def __deepcopy__(self, memo):  # the handle's own protocol: never remote
        raise AssertionError("not called")


def test_special_methods_are_remote_methods(cluster):
    # As in Ray: handle.__call__.remote() calls the actor's __call__.
    actor = Callable_.remote()
    assert runtime.get([actor.__call__.remote(1), actor.__len__.remote()]) == [2, 3]
    import copy

    assert copy.deepcopy(actor) == actor


def test_async_actor_runs_a_thousand_coroutines_at_once(cluster):
    actor = AsyncActor.remote()
    assert all(runtime.get([actor.sleep.remote(0.5) for _ in range(1000)], timeout=60))
    assert runtime.get(actor.get_peak.remote()) == 1000


def test_async_actor_max_concurrency(cluster):
    actor = AsyncActor.options(max_concurrency=3).remote()
    runtime.get([actor.sleep.remote(0.05) for _ in range(20)])
    assert runtime.get(actor.get_peak.remote()) == 3


@runtime.remote
class Pairs:
    """Ray's documented max_concurrency example: calls meet in pairs."""

    def __init__(self):
        self.event = asyncio.Event()
        self.count = 0

    async def meet(self):
        self.count += 1
        if self.count == 2:
            self.event.set()
        else:
            await self.event.wait()
            self.event.clear()
            self.count = 0
        return "met"

    async def hold(self, seconds):
        await asyncio.sleep(seconds)
        return "held"


def test_calls_waiting_for_a_slot_run_after_the_coroutines_a_call_woke(cluster):
    """A call let in by one that ends waits behind the coroutine that call
    woke (as in Ray, where each arriving call queues on the loop): here the
    woken one resets the count before the next pair starts (it hung)."""
    actor = Pairs.options(max_concurrency=2).remote()
    assert runtime.get([actor.meet.remote() for _ in range(8)], timeout=30) == ["met"] * 8
    # A call cancelled while it waits for a slot gives up its place.
    busy = [actor.hold.remote(0.5) for _ in range(2)]
    waiting = actor.hold.remote(0)
    after = actor.hold.remote(0)
    runtime.cancel(waiting)
    with pytest.raises(TaskCancelledError):
        runtime.get(waiting, timeout=30)
    assert runtime.get([*busy, after], timeout=30) == ["held"] * 3
    assert runtime.get([actor.meet.remote() for _ in range(4)], timeout=30) == ["met"] * 4


def test_async_init_is_awaited_first(cluster):
    actor = AsyncActor.remote(0.2)
    assert runtime.get(actor.is_initialized.remote()) is True


def test_sync_method_of_async_actor_runs_on_its_loop(cluster):
    """As in Ray: the actor's state is only touched by its loop's thread. A
    blocking runtime call there would stall every coroutine: it raises."""
    actor = AsyncActor.remote()
    assert runtime.get(actor.blocking.remote()) == runtime.get(actor.loop_thread.remote())
    with pytest.raises(runtime.exceptions.BlockingCallOnLoopError, match="await"):
        runtime.get(actor.get_inside.remote())


@runtime.remote
class WithSignals:
    """A sync actor runs on its worker's main thread, as in Ray: its code may
    set signal handlers (in the constructor, and in a method)."""

    def __init__(self):
        import signal

        self.seen = []
        signal.signal(signal.SIGUSR2, lambda signum, frame: self.seen.append(signum))

    def alarm_after_sleep(self):
        from conftest import sleep_until_alarm

        return sleep_until_alarm()

    def poke(self):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0)  # (the handler runs at the next bytecode)
        return list(self.seen)


@runtime.remote
class AsyncWithSignals:
    def __init__(self):
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # (a main thread's call only)

    async def ready(self):
        return True


def test_sync_actor_code_may_use_signals(cluster):
    actor = WithSignals.remote()
    assert runtime.get(actor.alarm_after_sleep.remote(), timeout=30) == "alarm"
    assert runtime.get(actor.poke.remote(), timeout=30) == [signal.SIGUSR2]
    # An async actor's sync constructor runs there too.
    assert runtime.get(AsyncWithSignals.remote().ready.remote(), timeout=30) is True


def test_threaded_actor_runs_calls_in_parallel(cluster):
    actor = Threaded.options(max_concurrency=2).remote()
    a, b = runtime.get([actor.meet.remote(), actor.meet.remote()], timeout=30)
    assert a != b


def test_constructor_failure(cluster):
    actor = Broken.remote()
    with pytest.raises(ActorDiedError, match="constructor exploded") as info:
        runtime.get(actor.method.remote(), timeout=30)
    # From the user's constructor on, as Ray's: the executor's frames say nothing.
    assert "Traceback" in str(info.value) and "core_worker" not in str(info.value)
    assert f'File "{__file__}"' in str(info.value)
    # A BaseException of the user's is told as any error; an exit, as the
    # process's death before the constructor returned.
    with pytest.raises(ActorDiedError, match=r"Traceback(.|\n)*AbortingInit_: stop"):
        runtime.get(AbortingInit.remote(False).ping.remote(), timeout=30)
    with pytest.raises(ActorDiedError, match="died before its constructor returned"):
        runtime.get(AbortingInit.remote(True).ping.remote(), timeout=30)


class AbortingInit_(BaseException):
    pass


@runtime.remote
class AbortingInit:
    def __init__(self, exit_process):
        if exit_process:
            sys.exit(1)
        raise AbortingInit_("stop")

    def ping(self):
        return "never"


def test_named_actor_and_get_actor(cluster):
    # As in Ray, a non-detached named actor lives while its creator's handle does.
    original = Counter.options(name="counter").remote(5)
    handle = runtime.get_actor("counter")
    assert handle == runtime.get_actor("counter") and original is not None
    assert runtime.get(handle.incr.remote()) == 6
    with pytest.raises(runtime.exceptions.ActorAlreadyExistsError, match="already exists"):
        Counter.options(name="counter").remote()  # (a ValueError too, as in Ray)
    with pytest.raises(ValueError, match="no actor named"):
        runtime.get_actor("missing")
    # Ray's get_or_create: the live one (its arguments ignored), or a new one.
    again = Counter.options(name="counter").get_or_create(100)
    assert again == handle and runtime.get(again.incr.remote()) == 7  # the same actor
    fresh = Counter.options(name="other").get_or_create(100)
    assert runtime.get(fresh.incr.remote()) == 101
    with pytest.raises(ValueError, match="needs a name"):
        Counter.options(max_restarts=1).get_or_create()


def test_list_named_actors(cluster):
    namespace = runtime.get_runtime_context().namespace
    here = Counter.options(name="listed").remote(0)
    there = Counter.options(name="faraway", namespace="elsewhere").remote(0)
    unnamed = Counter.remote(0)
    runtime.get([here.incr.remote(), there.incr.remote(), unnamed.incr.remote()])
    assert runtime.util.list_named_actors() == ["listed"]
    everywhere = runtime.util.list_named_actors(all_namespaces=True)
    assert sorted(everywhere, key=lambda a: a["name"]) == [
        {"name": "faraway", "namespace": "elsewhere"},
        {"name": "listed", "namespace": namespace},
    ]
    assert asyncio.run(runtime.util.list_named_actors_async()) == ["listed"]
    runtime.kill(here)
    wait_until(lambda: runtime.util.list_named_actors() == [], what="a dead actor to be unlisted")
    with pytest.raises(TypeError, match="all_namespaces must be a bool"):
        runtime.util.list_named_actors(all_namespaces="yes")


def test_the_gcs_forgets_the_oldest_dead_actors():
    config = {"maximum_gcs_destroyed_actor_cached_count": 1}
    with cluster_of(head_node_args={"num_cpus": 1}, system_config=config) as cluster:
        runtime.init(address=cluster.address)
        first, second = Counter.remote(0), Counter.remote(0)
        runtime.get([first.incr.remote(), second.incr.remote()], timeout=30)
        runtime.kill(first)
        wait_until(
            lambda: sorted(a["state"] for a in runtime.util.list_actors()) == ["ALIVE", "DEAD"],
            what="the first death kept",
        )
        runtime.kill(second)
        wait_until(
            lambda: [a["state"] for a in runtime.util.list_actors()] == ["DEAD"],
            what="only the last death kept",
        )
        assert runtime.util.list_actors()[0]["actor_id"] == second._actor_id.hex()


def test_get_if_exists_is_race_free(cluster):
    @runtime.remote
    def make():
        handle = Counter.options(name="shared", get_if_exists=True, lifetime="detached").remote()
        return runtime.get(handle.pid.remote())

    pids = runtime.get([make.remote() for _ in range(8)], timeout=60)
    assert len(set(pids)) == 1
    named = [a for a in runtime.util.list_actors() if a["name"] == "shared"]
    assert len(named) == 1


def test_kill_without_restart(cluster):
    counter = Counter.remote()
    runtime.get(counter.incr.remote())
    runtime.kill(counter)
    with pytest.raises(ActorDiedError, match=r"runtime\.kill") as died:
        runtime.get(counter.incr.remote(), timeout=30)
    # Ray's attributes: which actor, and the message.
    assert died.value.actor_id == counter._actor_id.hex()
    assert died.value.error_msg == str(died.value)

    def dead_rows():
        return [a for a in runtime.util.list_actors() if a["state"] == "DEAD"]

    wait_until(lambda: bool(dead_rows()), what="the gcs to record the kill")
    assert "runtime.kill" in dead_rows()[0]["death_cause"]


def test_a_killed_actors_name_is_free_when_kill_returns(cluster):
    """As in Ray: ``kill`` returns once the gcs has it; the name is free at
    once, here and in other processes, and a new actor may take it."""

    @runtime.remote
    def lookup(name):
        try:
            runtime.get_actor(name)
        except ValueError:
            return "gone"
        return "found"

    for i in range(3):
        first = Counter.options(name="taken").remote(i)
        assert runtime.get(first.incr.remote()) == i + 1
        runtime.kill(first)
        assert runtime.get(lookup.remote("taken")) == "gone"
        with pytest.raises(ValueError, match="no actor named 'taken'"):
            runtime.get_actor("taken")
        second = Counter.options(name="taken").remote(10 * i)
        assert runtime.get(second.incr.remote()) == 10 * i + 1
        runtime.kill(second)


def test_get_if_exists_after_the_last_handle_went(cluster):
    """A named actor whose handles all went is ending: ``get_if_exists`` from
    the process that dropped them makes a new one, never the dying one."""
    for _ in range(3):
        assert (
            runtime.get(Counter.options(name="n", get_if_exists=True).remote().incr.remote()) == 1
        )
        assert (
            runtime.get(Counter.options(name="n", get_if_exists=True).remote().incr.remote()) == 1
        )


async def test_kill_on_the_runtimes_own_loop_does_not_block():
    """On the loop hosting the runtime, ``kill`` returns at once (it cannot
    wait there), and this process's next lookup still sees it."""
    await runtime.init_async(num_cpus=1)
    try:
        actor = Counter.options(name="on-loop").remote()
        assert await actor.incr.remote() == 1
        runtime.kill(actor)
        with pytest.raises(ValueError, match="no actor named"):
            await runtime.get_actor_async("on-loop")
        # Killed before its registration was answered (a named creation does
        # not wait for it on the loop): neither waits for the other.
        quick = Counter.options(name="quick").remote()
        runtime.kill(quick)
        with pytest.raises(ActorDiedError):
            await asyncio.wait_for(quick.incr.remote(), 30)
        again = Counter.options(name="quick").remote()
        assert await asyncio.wait_for(again.incr.remote(), 30) == 1
    finally:
        await runtime.shutdown_async()


def test_kill_with_restart_resets_state(cluster):
    counter = Counter.options(max_restarts=1).remote(100)
    assert runtime.get(counter.incr.remote()) == 101
    pid = runtime.get(counter.pid.remote())
    runtime.kill(counter, no_restart=False)
    wait_until(lambda: not process_running(pid), what="the actor's process to die")
    assert runtime.get(counter.incr.remote(), timeout=30) == 101
    row = next(a for a in runtime.util.list_actors() if a["class_name"] == "Counter")
    assert row["num_restarts"] == 1 and row["state"] == "ALIVE"


def test_a_call_after_an_idle_actors_death_reaches_its_restart(cluster):
    """Its worker died with no call in flight (killed from outside, as by the
    out-of-memory killer): a call made afterwards never reached the dead
    incarnation, so it runs on the restarted one, even with max_task_retries=0
    (as in Ray)."""
    counter = Counter.options(max_restarts=1).remote(100)
    pid = runtime.get(counter.pid.remote())
    os.kill(pid, signal.SIGKILL)

    def restarted():
        rows = [a for a in runtime.util.list_actors() if a["class_name"] == "Counter"]
        return bool(rows) and rows[0]["num_restarts"] == 1 and rows[0]["state"] == "ALIVE"

    wait_until(restarted, what="the actor's restart")
    assert runtime.get(counter.incr.remote(), timeout=30) == 101
    assert runtime.get(counter.pid.remote()) != pid


def test_restart_retries_calls_in_flight(cluster, tmp_path):
    counter = Counter.options(max_restarts=1, max_task_retries=1).remote()
    assert runtime.get(counter.incr.remote()) == 1
    dies_once = counter.exit_once.remote(str(tmp_path / "marker"))
    after = counter.incr.remote()
    # Both calls were lost with the first incarnation and retried on the second,
    # whose state starts over.
    assert runtime.get(dies_once, timeout=60) == 0
    assert runtime.get(after, timeout=60) == 1
    row = next(a for a in runtime.util.list_actors() if a["class_name"] == "Counter")
    assert row["num_restarts"] == 1


def test_a_call_lost_with_a_restarted_actor_is_unavailable(cluster, tmp_path):
    # As in Ray: not retried (max_task_retries=0), it may or may not have run,
    # and the actor is not dead.
    counter = Counter.options(max_restarts=1).remote()
    dies = counter.exit_once.remote(str(tmp_path / "marker"))
    with pytest.raises(ActorUnavailableError, match="may or may not have run") as info:
        runtime.get(dies, timeout=60)
    assert not isinstance(info.value, ActorDiedError)
    assert "exited with code 1" in str(info.value)  # how the process ended
    assert info.value.actor_id == counter._actor_id.hex()
    assert runtime.get(counter.incr.remote(), timeout=60) == 1


@runtime.remote(max_restarts=1)
class Retried:
    def __init__(self):
        self.calls = 0

    @runtime.method(max_task_retries=1)
    def exit_once(self, marker):
        self.calls += 1
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return self.calls


def test_a_methods_own_max_task_retries(cluster, tmp_path):
    # The method's retries, where the actor's are none: retried on the restart.
    actor = Retried.remote()
    assert runtime.get(actor.exit_once.remote(str(tmp_path / "a")), timeout=60) == 1
    # A call's own, over the method's: not retried, lost with the actor.
    call = actor.exit_once.options(max_task_retries=0).remote(str(tmp_path / "b"))
    with pytest.raises(ActorDiedError):
        runtime.get(call, timeout=60)
    for bad, kind in (
        ({"max_task_retries": "x"}, TypeError),
        ({"num_returns": "dynamic"}, ValueError),
    ):
        with pytest.raises(kind, match=next(iter(bad))):
            runtime.method(**bad)
        with pytest.raises(kind, match=next(iter(bad))):
            actor.exit_once.options(**bad)


@runtime.remote
class Flaky:
    def __init__(self):
        self.calls = 0

    @runtime.method(max_task_retries=2, retry_exceptions=True)
    def fails_first(self, times):
        self.calls += 1
        if self.calls <= times:
            raise ValueError(f"call {self.calls} fails")
        return self.calls

    @runtime.method(max_task_retries=2, retry_exceptions=[KeyError])
    def raises(self, kind):
        self.calls += 1
        raise kind("raised")

    @runtime.method(max_task_retries=2)
    def plain(self):
        self.calls += 1
        raise ValueError("not retried: retry_exceptions is off")

    def count(self):
        return self.calls

    def leave(self):
        runtime.actor.exit_actor()


def test_a_methods_retry_exceptions(cluster):
    actor = Flaky.remote()
    # As in Ray: an exception is retried only where retry_exceptions says so.
    assert runtime.get(actor.fails_first.remote(2), timeout=30) == 3
    with pytest.raises(ValueError, match="not retried"):
        runtime.get(actor.plain.remote(), timeout=30)
    assert runtime.get(actor.count.remote()) == 4
    with pytest.raises(ValueError, match="call 5 fails"):  # a call's own option wins
        runtime.get(actor.fails_first.options(retry_exceptions=False).remote(10), timeout=30)
    with pytest.raises(ValueError, match="call 8 fails"):  # retries run out
        runtime.get(actor.fails_first.remote(10), timeout=30)
    with pytest.raises(ValueError):  # not one of the listed exceptions
        runtime.get(actor.raises.remote(ValueError), timeout=30)
    with pytest.raises(KeyError):  # listed: retried, twice
        runtime.get(actor.raises.remote(KeyError), timeout=30)
    assert runtime.get(actor.count.remote()) == 8 + 1 + 3
    # Calls made after a retried one still run, in order, on the same actor.
    counter = Counter.remote()
    first = actor.fails_first.remote(100)
    later = [counter.incr.remote() for _ in range(3)]
    with pytest.raises(ValueError):
        runtime.get(first, timeout=30)
    assert runtime.get(later) == [1, 2, 3]
    # The actor's end is no exception of the method's: not retried.
    ending = actor.leave.remote()
    behind = actor.fails_first.options(max_task_retries=-1).remote(0)
    for ref in (ending, behind):
        with pytest.raises(ActorDiedError, match="exited intentionally"):
            runtime.get(ref, timeout=30)

    def attempts():
        rows = runtime.util.state.list_tasks(filters=[("task_id", "=", behind.task_id().hex())])
        return sorted((row.attempt_number, row.state) for row in rows)

    wait_until(lambda: attempts() and attempts()[-1][1] == "FAILED", what="the call's rows")
    assert attempts() == [(0, "FAILED")]
    with pytest.raises(TypeError, match="retry_exceptions"):
        runtime.method(retry_exceptions=[1])
    with pytest.raises(TypeError, match="retry_exceptions"):
        actor.plain.options(retry_exceptions="yes")


def test_restarts_run_out(cluster):
    counter = Counter.options(max_restarts=2, max_task_retries=-1).remote()
    with pytest.raises(ActorDiedError, match="restarted 2 time"):
        runtime.get(counter.exit.remote(), timeout=60)


def test_death_without_retries(cluster):
    counter = Counter.remote()
    with pytest.raises(ActorDiedError):
        runtime.get(counter.exit.remote(), timeout=30)
    with pytest.raises(ActorDiedError):
        runtime.get(counter.incr.remote(), timeout=30)


def test_max_pending_calls(cluster):
    actor = AsyncActor.options(max_pending_calls=2, max_concurrency=1).remote()
    first = actor.sleep.remote(0.5)
    second = actor.sleep.remote(0.5)
    with pytest.raises(PendingCallsLimitExceededError, match="max_pending_calls=2"):
        actor.sleep.remote(0)
    runtime.get([first, second])
    assert runtime.get(actor.sleep.remote(0)) is True


def test_handle_out_of_scope_kills_the_actor(cluster):
    counter = Counter.remote()
    pid = runtime.get(counter.pid.remote())
    del counter
    wait_until(lambda: not process_running(pid), what="the unreferenced actor to exit")


def test_temporary_handle_keeps_its_pending_call(cluster):
    assert runtime.get(Counter.remote(41).incr.remote()) == 42


def test_actor_output_prefix(tmp_path):
    from conftest import run_driver

    code = (
        "import runtime\n"
        "runtime.init(num_cpus=1)\n"
        "@runtime.remote\n"
        "class Talker:\n"
        "    def talk(self):\n"
        "        import os\n"
        "        print('actor says hi')\n"
        "        return os.getpid()\n"
        "t = Talker.remote()\n"
        "import sys\n"
        "sys.stdout.write(f'PID {runtime.get(t.talk.remote())}\\n'); sys.stdout.flush()\n"
        "import time\n"
        "time.sleep(1.0)\n"
        "runtime.shutdown()\n"
    )
    env = {**os.environ, "RUNTIME_SESSION_ROOT": str(tmp_path)}
    result = run_driver(code, env=env)
    assert result.returncode == 0, result.stderr
    pid = next(line.split()[1] for line in result.stdout.splitlines() if line.startswith("PID"))
    assert f"(Talker pid={pid}) actor says hi" in result.stdout


def test_no_orphan_actor_processes():
    ctx = runtime.init(num_cpus=1)
    actors = [Counter.remote() for _ in range(3)]
    pids = runtime.get([a.pid.remote() for a in actors])
    runtime.shutdown()
    from conftest import assert_no_orphans

    assert_no_orphans(ctx.session_dir)
    for pid in pids:
        wait_until(lambda p=pid: not process_running(p), what=f"actor {pid} to exit")


@runtime.remote
class TaskAware:
    async def inside_a_task(self) -> bool:
        # Its first step may run eagerly (Python 3.12+): still inside its own
        # task, so asyncio.timeout and current_task work from the first line.
        async with asyncio.timeout(5):
            await asyncio.sleep(0)  # (its second step runs in the task too)
        return asyncio.current_task() is not None

    async def in_its_task_at_once(self) -> bool:
        return asyncio.current_task() is not None

    async def fails_at_once(self) -> None:
        raise KeyError("at once")

    async def exits_at_once(self) -> None:
        runtime.actor.exit_actor()


def test_async_methods_that_finish_in_their_first_step(cluster):
    actor = TaskAware.remote()
    assert runtime.get([actor.inside_a_task.remote() for _ in range(50)]) == [True] * 50
    assert runtime.get([actor.in_its_task_at_once.remote() for _ in range(50)]) == [True] * 50
    with pytest.raises(KeyError, match="at once"):
        runtime.get(actor.fails_at_once.remote())
    with pytest.raises(runtime.exceptions.ActorDiedError):
        runtime.get(actor.exits_at_once.remote())
