"""The state API on real clusters: tasks in every state, actors, the other
resources, filters, summaries, the CLI and the timeline file."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import assert_no_orphans, run_cli, wait_until

import runtime
from runtime.util import state

pytestmark = pytest.mark.timeout(120)

FAST_EVENTS = {"task_events_report_interval_s": 0.05}


@pytest.fixture
def ctx() -> Iterator[runtime.RuntimeContext]:
    context = runtime.init(num_cpus=2, _system_config=FAST_EVENTS)
    assert context.session_dir is not None
    try:
        yield context
    finally:
        runtime.shutdown()
        assert_no_orphans(context.session_dir)


def _task_state(name: str) -> set[str]:
    return {t.state for t in state.list_tasks(filters=[("name", "=", name)], limit=0)}


def _wait_state(name: str, want: str, what: str = "") -> None:
    wait_until(lambda: want in _task_state(name), 20, what or f"{name} {want}")


@runtime.remote
def blocker(path: str) -> int:
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return 1


@runtime.remote
def consumer(x: int) -> int:
    return x + 1


@runtime.remote(resources={"nowhere": 1})
def unplaceable() -> None:
    pass


@runtime.remote(max_retries=0)
def fails() -> None:
    raise ValueError("boom")


@runtime.remote(max_retries=1, retry_exceptions=True)
def flaky(path: str) -> str:
    if not os.path.exists(path):
        open(path, "w").close()
        raise RuntimeError("first attempt fails")
    return "ok"


def test_tasks_in_every_state(ctx: Any, tmp_path: Any) -> None:
    gate = tmp_path / "gate"
    flaky_marker = tmp_path / "flaky"

    running = blocker.remote(str(gate))
    waiting = consumer.remote(running)  # its argument is not ready
    pending = unplaceable.remote()
    _wait_state("blocker", "RUNNING")
    _wait_state("consumer", "PENDING_ARGS_AVAIL")
    _wait_state("unplaceable", "PENDING_NODE_ASSIGNMENT")

    with pytest.raises(ValueError):
        runtime.get(fails.remote())
    assert runtime.get(flaky.remote(str(flaky_marker))) == "ok"
    gate.touch()
    assert runtime.get(waiting) == 2
    _wait_state("consumer", "FINISHED")
    _wait_state("fails", "FAILED")
    # The owner and the worker report apart: where it ran comes with the worker's batch.
    wait_until(lambda: all(t.worker_pid for t in state.list_tasks([("state", "=", "FAILED")])), 20)
    wait_until(lambda: len(state.list_tasks(filters=[("name", "=", "flaky")])) == 2, 20)

    attempts = sorted(
        state.list_tasks(filters=[("name", "=", "flaky")], detail=True),
        key=lambda t: t.attempt_number,
    )
    assert [(t.attempt_number, t.state) for t in attempts] == [(0, "FAILED"), (1, "FINISHED")]
    assert attempts[0].error_type == "TASK_EXECUTION_EXCEPTION"
    assert "first attempt fails" in attempts[0].error_message
    assert attempts[1].task_id == attempts[0].task_id

    failed = state.list_tasks(filters=[("state", "=", "FAILED")], detail=True)
    assert {t.name for t in failed} == {"fails", "flaky"}
    row = next(t for t in failed if t.name == "fails")
    assert row.error_type == "TASK_EXECUTION_EXCEPTION" and "boom" in row.error_message
    assert row.worker_pid and row.node_id == ctx.address_info["node_id"]
    assert row.start_time_ms <= row.end_time_ms
    assert [e["state"] for e in row.events][-2:] == ["RUNNING", "FAILED"]

    # get_task: the latest attempt; filters with != and limit.
    got = state.get_task(attempts[0].task_id)
    assert got is not None and got.attempt_number == 1 and got["state"] == "FINISHED"
    assert len(state.list_tasks(limit=2)) == 2
    assert all(t.state != "FINISHED" for t in state.list_tasks([("state", "!=", "FINISHED")]))

    summary = state.summarize_tasks()["cluster"]
    assert summary["summary"]["flaky"]["state_counts"] == {"FAILED": 1, "FINISHED": 1}
    assert summary["summary"]["unplaceable"]["state_counts"] == {"PENDING_NODE_ASSIGNMENT": 1}
    runtime.cancel(pending)


@runtime.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n

    def crash(self) -> None:
        raise KeyError("nope")


@runtime.remote(resources={"nowhere": 1})
class Waiting:
    pass


def test_actors_and_their_calls(ctx: Any) -> None:
    alive = Counter.options(name="alive").remote()
    dead = Counter.remote()
    assert runtime.get([alive.add.remote(), dead.add.remote()]) == [1, 1]
    with pytest.raises(KeyError):
        runtime.get(alive.crash.remote())
    runtime.kill(dead)
    waiting = Waiting.remote()

    def states() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for a in state.list_actors():
            out.setdefault(a.class_name, set()).add(a.state)
        return out

    wait_until(lambda: states().get("Counter") == {"ALIVE", "DEAD"}, 20, "a dead counter")
    assert states()["Waiting"] == {"PENDING_CREATION"}
    named = state.list_actors(filters=[("name", "=", "alive")])
    assert (
        len(named) == 1
        and named[0].pid
        and named[0].job_id == runtime.get_runtime_context().get_job_id()
    )
    assert state.get_actor(named[0].actor_id)["state"] == "ALIVE"
    killed = state.list_actors(filters=[("state", "=", "DEAD")], detail=True)
    assert killed[0].death_cause

    summary = state.summarize_actors()["cluster"]
    assert summary["summary"]["Counter"]["state_counts"] == {"ALIVE": 1, "DEAD": 1}
    assert summary["total_actors"] == 3

    wait_until(lambda: "FAILED" in _task_state("Counter.crash"), 20, "the failed call")
    calls = state.list_tasks(filters=[("type", "=", "ACTOR_TASK")], detail=True)
    crash = next(t for t in calls if t.name == "Counter.crash")
    assert crash.actor_id == named[0].actor_id
    assert crash.error_type == "TASK_EXECUTION_EXCEPTION"
    assert crash.placement_group_id is None  # the actor is in no group

    def creations() -> set[str]:
        rows = state.list_tasks(filters=[("type", "=", "ACTOR_CREATION_TASK")])
        return {t.name for t in rows}

    # (Waiting's row may come in the owner's next batch of events.)
    wanted = {"Counter.__init__", "Waiting.__init__"}
    wait_until(lambda: creations() >= wanted, 20, "the actors' creation rows")
    del waiting


@runtime.remote
class Gated:
    def wait(self, path: str) -> int:
        import time

        while not os.path.exists(path):
            time.sleep(0.01)
        return 1


@runtime.remote
class Adder:
    async def add(self) -> int:
        return 1


WHOLE = ["PENDING_ARGS_AVAIL", "SUBMITTED_TO_WORKER", "RUNNING", "FINISHED"]


@runtime.remote(num_cpus=0)
class Shard:
    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"Shard[{self.index}]"


@runtime.remote(num_cpus=0)
class AsyncShard(Shard.__ray_actor_class__):  # type: ignore[name-defined,misc]
    async def ping(self) -> None:
        pass


def test_an_actors_own_repr_is_its_repr_name(ctx: Any) -> None:
    """Ray's ``repr_name``: the actor's ``__repr__`` when its class defines
    one (sync or async), else empty."""
    actors = [Shard.remote(1), AsyncShard.remote(2), Counter.remote()]
    runtime.get([a.__ray_ready__.remote() for a in actors])
    names = {a.class_name: a.repr_name for a in state.list_actors()}
    assert names == {"Shard": "Shard[1]", "AsyncShard": "Shard[2]", "Counter": ""}


def test_an_actor_calls_row_is_whole(ctx: Any, tmp_path: Any) -> None:
    """An actor's worker reports each call it ran with its owner's times: one
    row with every state, where it ran and the actor, whether the call ended
    between two of the owner's batches (an async actor's here) or its owner
    and its worker reported it first as pending and running (a sync one's,
    waiting on a gate)."""
    gate = tmp_path / "gate"
    adder, gated = Adder.remote(), Gated.remote()
    assert runtime.get(adder.add.remote()) == 1
    waiting = gated.wait.remote(str(gate))
    _wait_state("Gated.wait", "RUNNING")
    gate.touch()
    assert runtime.get(waiting) == 1
    for name, actor in (("Adder.add", adder), ("Gated.wait", gated)):
        _wait_state(name, "FINISHED")
        (row,) = state.list_tasks(filters=[("name", "=", name)], detail=True)
        assert [e["state"] for e in row.events] == WHOLE, name
        assert row.type == "ACTOR_TASK" and row.actor_id == actor._actor_id.hex()
        assert row.worker_pid and row.node_id == ctx.address_info["node_id"] and row.worker_id
        assert row.start_time_ms <= row.end_time_ms


def test_other_resources_and_bad_input(ctx: Any) -> None:
    ref = runtime.put(b"x" * 10)
    nodes = state.list_nodes()
    assert [n.state for n in nodes] == ["ALIVE"] and nodes[0].is_head_node
    assert state.get_node(nodes[0].node_id)["resources_total"]["CPU"] == 2
    jobs = state.list_jobs()
    assert (
        jobs[0].job_id == runtime.get_runtime_context().get_job_id() and jobs[0].status == "RUNNING"
    )
    workers = state.list_workers(filters=[("worker_type", "=", "DRIVER")])
    assert workers[0].pid == os.getpid()
    objects = state.list_objects(filters=[("object_id", "=", ref.hex())])
    assert objects[0].reference_type == "LOCAL_REFERENCE"
    assert [row.pid for row in state.get_objects(ref.hex())] == [os.getpid()]
    assert state.get_objects("ab" * 20) == []
    summary = state.summarize_objects()["cluster"]
    by_site = next(v for k, v in summary["summary"].items() if "test_state_api.py" in k)
    assert by_site["total_objects"] >= 1 and by_site["total_num_workers"] == 1
    assert by_site["ref_type_counts"]["LOCAL_REFERENCE"] >= 1
    assert summary["total_objects"] >= 1 and summary["summary_by"] == "callsite"
    assert state.list_placement_groups() == []

    with pytest.raises(ValueError, match="its columns are"):
        state.list_tasks(filters=[("colour", "=", "red")])
    with pytest.raises(ValueError, match="predicate"):
        state.list_tasks(filters=[("state", "~", "x")])
    with pytest.raises(TypeError):
        state.list_tasks(filters="state=RUNNING")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        state.list_tasks(limit=-1)
    assert state.get_task("00" * 16) is None


@runtime.remote
def one() -> int:
    return 1


async def test_async_forms_on_the_runtimes_loop() -> None:
    await runtime.init_async(num_cpus=1, _system_config=FAST_EVENTS)
    try:
        assert await one.remote() == 1
        with pytest.raises(runtime.exceptions.BlockingCallOnLoopError, match="list_tasks_async"):
            state.list_tasks()
        for _ in range(400):
            rows = await state.list_tasks_async(filters=[("name", "=", "one")])
            if rows and rows[0].state == "FINISHED":
                break
            await asyncio.sleep(0.05)
        assert rows[0].state == "FINISHED"
        assert (await state.summarize_tasks_async())["cluster"]["total_tasks"] == 1
    finally:
        await runtime.shutdown_async()


@runtime.remote
def work(i: int) -> int:
    return i


@runtime.remote(max_retries=0)
def broken() -> None:
    raise OSError("disk")


def test_cli_and_timeline(ctx: Any) -> None:
    runtime.get([work.remote(i) for i in range(4)])
    with pytest.raises(OSError):
        runtime.get(broken.remote())
    wait_until(lambda: "FAILED" in _task_state("broken"), 20, "the failure reported")
    address = ctx.address_info["gcs_address"]

    listed = run_cli("list", "tasks", "--filter", "state=FAILED", "--format", "json",
                     "--address", address)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["broken"]
    table = run_cli("list", "tasks", "--limit", "2", "--address", address)
    assert table.returncode == 0 and "TASK_ID" in table.stdout
    assert "2 of 5 shown" in table.stderr
    summary = run_cli("summary", "tasks", "--address", address)
    assert "work" in summary.stdout and "FINISHED: 4" in summary.stdout
    got = run_cli("get", "task", rows[0]["task_id"], "--address", address)
    assert got.returncode == 0 and "OSError" in got.stdout
    bad = run_cli("list", "tasks", "--filter", "nope", "--address", address)
    assert bad.returncode == 1 and "KEY=VALUE" in bad.stderr
    actors = run_cli("list", "actors", "--address", address)
    assert actors.returncode == 0 and "(none)" in actors.stdout

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.json")
        written = run_cli("timeline", "-o", path, "--address", address)
        assert written.returncode == 0, written.stderr
        with open(path) as f:
            trace = json.load(f)
    slices = [e for e in trace if e["ph"] == "X"]
    assert sorted(e["name"] for e in slices) == ["broken"] + ["work"] * 4
    for e in slices:
        assert e["dur"] >= 0 and e["ts"] > 0 and e["args"]["task_id"]
    names = {(e["pid"], e["tid"]) for e in trace if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in slices} <= names
    assert any(e["name"] == "process_name" for e in trace)
    assert len(runtime.timeline()) == len(trace)


@runtime.remote(max_retries=0)
def exits(code: int) -> None:
    os._exit(code)


@runtime.remote
class Idle:
    def pid(self) -> int:
        return os.getpid()


def test_ended_workers_and_how_they_ended(ctx: Any) -> None:
    """Dead workers are listed too (``is_alive`` False), with Ray's exit type
    and the exit their raylet saw."""
    with pytest.raises(runtime.exceptions.WorkerCrashedError):
        runtime.get(exits.remote(3))
    idle = Idle.remote()
    killed = runtime.get(idle.pid.remote())
    runtime.kill(idle)

    def dead() -> dict[int, Any]:
        return {w.pid: w for w in state.list_workers(filters=[("is_alive", "=", False)])}

    wait_until(lambda: killed in dead() and len(dead()) >= 2, what="both ends listed")
    rows = dead()
    crashed = next(w for w in rows.values() if w.exit_detail.endswith("exited with code 3"))
    assert crashed.exit_type == "SYSTEM_ERROR" and crashed.worker_type == "WORKER"
    assert rows[killed].exit_type == "INTENDED_SYSTEM_EXIT"
    assert "the raylet ended it" in rows[killed].exit_detail
    alive = state.list_workers(filters=[("is_alive", "=", True)])
    assert alive and all(w.exit_type is None for w in alive)


@runtime.remote
def env_var() -> str | None:
    return os.environ.get("STATE_TEST")


def test_runtime_envs(ctx: Any, tmp_path: Any) -> None:
    """Each environment a node started workers in: whether its setup succeeded
    (how long it took, or why it failed) and how many live workers use it."""
    env = {"env_vars": {"STATE_TEST": "1"}}
    assert runtime.get(env_var.options(runtime_env=env).remote()) == "1"
    (tmp_path / "shipped.py").write_text("X = 1\n")
    slow = {"working_dir": str(tmp_path), "config": {"setup_timeout_seconds": 0.0001}}
    with pytest.raises(runtime.exceptions.RuntimeEnvSetupError):
        runtime.get(env_var.options(runtime_env=slow).remote(), timeout=60)
    node = runtime.get_runtime_context().get_node_id()
    (ok,) = [r for r in state.list_runtime_envs() if r.success]
    assert ok.runtime_env == env and ok.node_id == node and ok.error is None
    assert ok.creation_time_ms >= 0 and ok.ref_cnt in (0, 1)  # its worker may be idle-reaped
    (failed,) = state.list_runtime_envs(filters=[("success", "=", False)])
    assert failed.runtime_env["working_dir"].startswith("gcs://")
    assert "setup_timeout_seconds" in failed.error and failed.ref_cnt == 0

    address = ctx.address_info["gcs_address"]
    listed = run_cli("list", "runtime-envs", "--format", "json", "--address", address)
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["success"] for r in json.loads(listed.stdout)) == [False, True]
    got = run_cli("get", "runtime-envs", "x", "--address", address)
    assert got.returncode == 1 and "runtime list runtime-envs" in got.stderr


@runtime.remote(max_concurrency=4)
class Holder:
    def hold(self, path: str) -> int:
        import time

        while not os.path.exists(path):
            time.sleep(0.01)
        return 1

    @runtime.method(enable_task_events=True)
    def shown(self) -> int:
        return 2


def _names() -> set[str]:
    return {t.name for t in state.list_tasks(limit=0)}


def test_a_tasks_or_actors_events_can_be_turned_off(ctx: Any, tmp_path: Any) -> None:
    gate = str(tmp_path / "gate")
    holder = Holder.remote()
    # Two calls running in one worker: its report of the running one shows,
    # the other, with its events off, is reported by neither that worker nor its owner.
    quiet = holder.hold.options(name="quiet_hold", enable_task_events=False).remote(gate)
    loud = holder.hold.options(name="loud_hold").remote(gate)
    assert runtime.get(one.options(name="quiet_one", enable_task_events=False).remote()) == 1
    _wait_state("loud_hold", "RUNNING")
    open(gate, "w").close()
    assert runtime.get([quiet, loud]) == [1, 1]
    _wait_state("loud_hold", "FINISHED")
    names = _names()
    # (A worker's report of a running task with events off would be a row of no name.)
    assert names == {"Holder.__init__", "loud_hold"}, names

    # An actor's option is its calls' default (and its creation's); a method's
    # own option wins.
    Quiet = Holder.options(name="quiet_holder", enable_task_events=False)
    silent = Quiet.remote()
    assert runtime.get([silent.hold.remote(gate), silent.shown.remote()]) == [1, 2]
    _wait_state("Holder.shown", "FINISHED")
    # (The first actor's calls had names of their own.)
    assert sorted(n for n in _names() if n.startswith("Holder.")) == [
        "Holder.__init__",
        "Holder.shown",
    ]
    rows = state.list_tasks(filters=[("name", "=", "Holder.__init__")], limit=0)
    assert len(rows) == 1  # the first actor's creation only
    with pytest.raises(TypeError, match="enable_task_events"):
        one.options(enable_task_events="no")
    with pytest.raises(TypeError, match="enable_task_events"):
        Holder.options(enable_task_events=1)
    with pytest.raises(TypeError, match="enable_task_events"):
        runtime.method(enable_task_events=None)


def test_events_can_be_turned_off() -> None:
    runtime.init(num_cpus=1, _system_config={**FAST_EVENTS, "enable_task_events": False})
    try:
        assert runtime.get(one.remote()) == 1
        assert state.list_tasks() == []
    finally:
        runtime.shutdown()
