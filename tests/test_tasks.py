"""Remote functions on a real local cluster."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Iterator

import pytest

import runtime
from runtime.exceptions import GetTimeoutError


@runtime.remote
def add(a, b=0):
    return a + b


@runtime.remote(num_returns=3)
def three():
    return 1, 2, 3


@runtime.remote
def identity(x):
    return x


@runtime.remote
async def async_double(x):
    await asyncio.sleep(0.001)
    return 2 * x


@runtime.remote
def interval(duration):
    start = time.time()
    time.sleep(duration)
    return start, time.time()


@runtime.remote
def depth(n):
    if n == 0:
        return os.getpid()
    return runtime.get(depth.remote(n - 1))


def test_simple_task(cluster):
    assert runtime.get(add.remote(1, 2)) == 3
    assert runtime.get(add.remote(1, b=5)) == 6


def test_thousand_tasks(cluster):
    refs = [add.remote(i, 1) for i in range(1000)]
    assert runtime.get(refs) == [i + 1 for i in range(1000)]


def test_workers_run_with_the_collector_tuned_and_the_driver_as_it_was(cluster):
    """The runtime's own processes raise the collector's first threshold and
    freeze their imports; a driver is the user's process: left alone."""
    import gc

    from runtime._private.daemon import GC_THRESHOLD

    @runtime.remote
    def collector() -> tuple[int, int]:
        return gc.get_threshold()[0], gc.get_freeze_count()

    threshold, frozen = runtime.get(collector.remote())
    assert threshold >= GC_THRESHOLD and frozen > 0
    assert gc.get_threshold()[0] < GC_THRESHOLD


def test_num_returns(cluster):
    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert runtime.get(refs) == [1, 2, 3]
    assert add.options(num_returns=0).remote(1) is None


def test_num_returns_mismatch_is_an_error(cluster):
    ref = identity.options(num_returns=2).remote([1, 2, 3])
    with pytest.raises(ValueError, match="num_returns=2"):
        runtime.get(ref[0])


def test_ref_arguments_are_resolved_at_top_level_only(cluster):
    inner = runtime.put(10)
    assert runtime.get(add.remote(inner, inner)) == 20
    nested = runtime.get(identity.remote([inner]))
    assert isinstance(nested[0], runtime.ObjectRef)
    assert runtime.get(nested[0]) == 10


def test_chained_tasks(cluster):
    ref = add.remote(1)
    for _ in range(10):
        ref = add.remote(ref, 1)
    assert runtime.get(ref) == 11


def test_async_def_remote_function(cluster):
    assert runtime.get([async_double.remote(i) for i in range(50)]) == [2 * i for i in range(50)]


def test_resources_are_enforced(cluster):
    spans = runtime.get([interval.remote(0.3) for _ in range(6)])
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak <= 2


def test_task_taking_two_cpus_runs_alone(cluster):
    spans = runtime.get([interval.options(num_cpus=2).remote(0.2) for _ in range(3)])
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.01


@runtime.remote
def waits_for_a_child() -> int:
    # No timeout: on one CPU this only returns if wait lends the CPU, as get does.
    ready, _ = runtime.wait([depth.remote(1)])
    return runtime.get(ready[0])


@runtime.remote
def counts(n: int) -> Iterator[int]:
    yield from range(n)


@runtime.remote
def consumes_a_generator() -> list[int]:
    items = counts.remote(3)
    ready, _ = runtime.wait([items])  # ready once its next item is
    assert ready == [items]
    return [runtime.get(ref) for ref in items]


def test_nested_get_and_wait_lend_the_cpu_on_one_cpu():
    ctx = runtime.init(num_cpus=1)
    try:
        assert runtime.get(depth.remote(3), timeout=60) > 0
        assert runtime.get(waits_for_a_child.remote(), timeout=60) > 0
        assert runtime.get(consumes_a_generator.remote(), timeout=60) == [0, 1, 2]
    finally:
        runtime.shutdown()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)


@runtime.remote(num_cpus=0)
class Box:
    def __init__(self):
        self.refs = None

    def put(self, refs):
        self.refs = refs

    def take(self):
        return self.refs


@runtime.remote
def sibling(box, folder, k):
    """The first (k <= 0) marks that it runs, waits (touching no object) until
    told to go, then (k == 0) waits for the first of the refs in ``box``; the
    others return at once."""
    if k > 0:
        return k + 1
    open(os.path.join(folder, "started"), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(folder, "go")) and time.monotonic() < deadline:
        time.sleep(0.005)
    if k < 0:
        return 0
    refs = runtime.get(box.take.remote())
    return runtime.get(refs[0], timeout=30) + 1


def test_a_task_waiting_for_one_queued_behind_it_on_its_worker(tmp_path):
    """A task that waits hands back the tasks queued behind it on its worker,
    even those already on its thread's queue, so one of them can be what it
    waits for (the tasks of one function are pushed behind one another to
    the only CPU's worker; it already ran the function, so they, and the
    first, go to its thread's queue at once)."""
    ctx = runtime.init(num_cpus=1)
    try:
        box = Box.remote()
        assert runtime.get(sibling.remote(box, str(tmp_path), 1), timeout=30) == 2  # loaded
        first = sibling.remote(box, str(tmp_path), 0)
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the first task did not start"
            time.sleep(0.005)
        # More than the lease requests an owner keeps in flight: the rest go
        # to the worker it has, behind the first.
        behind = [sibling.remote(box, str(tmp_path), k) for k in range(1, 21)]
        runtime.get(box.put.remote(behind))
        # Pushed behind the first one (it holds the only CPU's lease).
        while sum(t.state == "SUBMITTED_TO_WORKER" for t in _tasks_named("sibling")) < 2:
            assert time.monotonic() < deadline, "no task was pushed behind the first"
            time.sleep(0.05)
        (tmp_path / "go").touch()
        assert runtime.get(first, timeout=60) == 3
        assert runtime.get(behind, timeout=60) == list(range(2, 22))
    finally:
        runtime.shutdown()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)


def test_tasks_on_a_workers_thread_queue_can_be_cancelled(tmp_path):
    """The task running on the thread and one queued behind it there."""
    from runtime.exceptions import TaskCancelledError

    ctx = runtime.init(num_cpus=1)
    try:
        box = Box.remote()
        assert runtime.get(sibling.remote(box, str(tmp_path), 1), timeout=30) == 2  # loaded
        first = sibling.remote(box, str(tmp_path), -1)
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline, "the first task did not start"
            time.sleep(0.005)
        behind = [sibling.remote(box, str(tmp_path), k) for k in range(1, 21)]
        while sum(t.state == "SUBMITTED_TO_WORKER" for t in _tasks_named("sibling")) < 2:
            assert time.monotonic() < deadline, "no task was pushed behind the first"
            time.sleep(0.05)
        runtime.cancel(behind[0])
        runtime.cancel(first)
        with pytest.raises(TaskCancelledError):
            runtime.get(first, timeout=30)
        with pytest.raises(TaskCancelledError):
            runtime.get(behind[0], timeout=30)
        assert runtime.get(behind[1:], timeout=60) == list(range(3, 22))
    finally:
        runtime.shutdown()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)


def _tasks_named(name):
    from runtime.util import state

    return state.list_tasks(filters=[("name", "=", name)])


def test_infeasible_task_warns_and_waits(cluster, caplog):
    caplog.set_level(logging.WARNING, logger="runtime")
    ref = add.options(num_cpus=64).remote(1, 1)
    deadline = time.monotonic() + 10
    while "infeasible" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "infeasible" in caplog.text and "add" in caplog.text and "64" in caplog.text
    with pytest.raises(GetTimeoutError):
        runtime.get(ref, timeout=0.2)


def test_custom_resources():
    ctx = runtime.init(num_cpus=2, resources={"accel": 1})
    try:
        assert runtime.get(add.options(resources={"accel": 1}).remote(2, 3)) == 5
        assert runtime.cluster_resources()["accel"] == 1
    finally:
        runtime.shutdown()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)


def test_runtime_context_in_task(cluster):
    @runtime.remote
    def where():
        ctx = runtime.get_runtime_context()
        return ctx.job_id, ctx.get_task_id(), ctx.mode

    @runtime.remote
    def names():
        ctx = runtime.get_runtime_context()
        return ctx.get_task_name(), ctx.get_task_function_name()

    ref = where.remote()
    job_id, task_id, mode = runtime.get(ref)
    assert job_id == runtime.get_runtime_context().job_id
    assert task_id and mode == "worker"
    # Ray's names: the task's own (its name option wins) and its function's.
    here = "test_runtime_context_in_task.<locals>.names"
    assert runtime.get(names.remote()) == (here, f"{__name__}.{here}")
    assert runtime.get(names.options(name="renamed").remote()) == ("renamed", f"{__name__}.{here}")
    ctx = runtime.get_runtime_context()
    assert ctx.get_task_name() is None and ctx.get_task_function_name() is None
    # The ref names its task, as Ray's does.
    assert isinstance(ref.task_id(), runtime.TaskID)
    assert ref.task_id().hex() == task_id
    assert ref.task_id() == runtime.TaskID(bytes.fromhex(task_id))
    assert ref.task_id() != runtime.put(1).task_id()
    # Ray's older properties and get(): id objects, not hex.
    assert ctx.job_id == runtime.JobID.from_hex(ctx.get_job_id())
    assert ctx.node_id == runtime.NodeID.from_hex(ctx.get_node_id())
    assert ctx.task_id is None and ctx.actor_id is None
    assert ctx.get() == {"job_id": ctx.job_id, "node_id": ctx.node_id, "namespace": ctx.namespace}

    @runtime.remote
    def summary():
        return runtime.get_runtime_context().get()

    inside = runtime.get(summary.remote())
    assert inside["task_id"] == runtime.TaskID.from_hex(inside["task_id"].hex())
    assert inside["actor_id"] is None and inside["job_id"] == ctx.job_id


def test_closures_and_lambdas_travel(cluster):
    factor = 7
    fn = runtime.remote(lambda x: x * factor)
    assert runtime.get(fn.remote(6)) == 42


@runtime.remote
class Gate:
    def __init__(self):
        import asyncio

        self.opened = asyncio.Event()

    async def wait(self):
        await self.opened.wait()
        return True

    async def open(self):
        self.opened.set()


@runtime.remote
def wait_at(gate):
    return runtime.get(gate.wait.remote())


def test_tasks_queued_behind_a_waiting_task_run_elsewhere():
    # One CPU: the second task is pipelined behind the first on its worker. The
    # first waits; the worker hands the second back, which runs on another.
    ctx = runtime.init(num_cpus=1)
    try:
        gate = Gate.remote()
        blocked = wait_at.remote(gate)
        behind = add.remote(1, 1)
        assert runtime.get(behind, timeout=30) == 2
        runtime.get(gate.open.remote())
        assert runtime.get(blocked, timeout=30) is True
    finally:
        runtime.shutdown()
        from conftest import assert_no_orphans

        assert_no_orphans(ctx.session_dir)
