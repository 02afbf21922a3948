"""The core worker's parts, fed events in one process: no cluster, no connection.

A core worker that is built and bound to the test's loop but never started
has its tables and parts and nothing else; the submitter is replaced by a
recorder (what would go to a raylet is only noted), so each test drives a
part through its states by calling it as its neighbours do.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest
from conftest import wait_until

from runtime import exceptions
from runtime._private import serialization
from runtime._private.config import Config
from runtime._private.serialization import SerializedObject
from runtime.api import ObjectRef
from runtime.core_worker import CoreWorker, WorkerMode
from runtime.core_worker._loop import HAND_OVER_AT, LoopBridge
from runtime.core_worker._task_spec import TaskSpec, TaskState
from runtime.protocol.rt import NodeInfo

pytestmark = pytest.mark.timeout(30)


class RecordingSubmitter:
    """Stands in for the lease-and-push machinery: records what it is given."""

    def __init__(self) -> None:
        self.submitted: list[TaskSpec] = []
        self.cancelled: list[tuple[TaskSpec, bool]] = []
        self.dead_nodes: list[bytes] = []

    def submit(self, spec: TaskSpec) -> None:
        spec.state = TaskState.PUSHED
        self.submitted.append(spec)

    def cancel(self, spec: TaskSpec, force: bool, recursive: bool) -> None:
        self.cancelled.append((spec, force))

    def node_died(self, node_id: bytes) -> None:
        self.dead_nodes.append(node_id)

    async def close(self) -> None:
        pass


@pytest.fixture
async def worker() -> Any:
    w = CoreWorker(
        mode=WorkerMode.DRIVER,
        config=Config.load(),
        host="127.0.0.1",
        gcs_address=("127.0.0.1", 1),
        raylet_address=("127.0.0.1", 1),
        make_ref=ObjectRef,
    )
    w.bind(asyncio.get_running_loop())
    w.submitter = RecordingSubmitter()  # type: ignore[assignment]
    assert w._started is not None
    w._started.set_result(None)  # as if connected: nothing here needs the gcs
    try:
        yield w
    finally:
        await w.background.close()
        w._sock.close()


def _spec(worker: CoreWorker, **fields: Any) -> TaskSpec:
    task_id = worker.ids.task_id()
    defaults: dict[str, Any] = {
        "task_id": task_id,
        "function_id": b"f" * 16,
        "name": "f",
        "args_data": serialization.pickle_value(((), {})).inline(),
        "arg_refs": [],
        "num_returns": 1,
        "resources": {"CPU": 1.0},
        "max_retries": 0,
        "retry_exceptions": False,
        "return_ids": [task_id + b"\x00\x00\x00\x00"],
        "owner_id": worker.worker_id,
    }
    defaults.update(fields)
    defaults.setdefault("retries_left", defaults["max_retries"])
    return TaskSpec(**defaults)


def _value(value: Any) -> SerializedObject:
    return serialization.pickle_value(value).inline()


def _error(error: BaseException) -> SerializedObject:
    return serialization.serialize_error(error)


async def test_put_then_get_reads_the_memory_store(worker: CoreWorker) -> None:
    ref = worker.objects.put({"a": 1})
    assert isinstance(ref, ObjectRef)
    assert worker.reader.get([ref], timeout=0) == [{"a": 1}]
    assert "put at test_core_worker_parts.py" in worker.objects.call_sites[ref.binary()]


async def test_dropping_the_last_ref_frees_the_object(worker: CoreWorker) -> None:
    ref = worker.objects.put(b"x" * 10)
    object_id = ref.binary()
    assert object_id in worker.store and object_id in worker.refs
    del ref
    gc.collect()
    assert object_id not in worker.store
    assert object_id not in worker.refs
    assert object_id not in worker.objects.call_sites


async def test_a_reply_stores_the_result_and_finishes_the_task(worker: CoreWorker) -> None:
    arg = worker.objects.put(7)
    spec = _spec(worker, arg_refs=[arg])
    result_ref = ObjectRef(spec.return_ids[0], worker.address, worker, counted=True)
    worker.tasks.register(spec, [])
    assert spec.task_id in worker.tasks.pending
    entry = worker.refs.get(arg.binary())
    assert entry is not None and entry.submitted == 1

    worker.tasks.on_task_reply(spec, (spec.task_id, True, [_value(49)], False, [[]], None), None)  # type: ignore[arg-type]

    assert spec.state is TaskState.FINISHED
    assert spec.task_id not in worker.tasks.pending
    assert worker.reader.get([result_ref], timeout=0) == [49]
    entry = worker.refs.get(arg.binary())
    assert entry is not None and entry.submitted == 0  # the argument is released


async def test_an_application_error_is_retried_only_as_allowed(worker: CoreWorker) -> None:
    spec = _spec(worker, max_retries=1, retry_exceptions=(ValueError,))
    ref = ObjectRef(spec.return_ids[0], worker.address, worker, counted=True)
    worker.tasks.register(spec, [])
    failure = exceptions.TaskError("f", "tb", ValueError("bad"), ValueError, 1, "h")
    reply = (spec.task_id, False, [_error(failure)], True, [], None)

    worker.tasks.on_task_reply(spec, reply, None)  # type: ignore[arg-type]
    assert worker.submitter.submitted == [spec]  # type: ignore[attr-defined]
    assert spec.retries_left == 0

    worker.tasks.on_task_reply(spec, reply, None)  # type: ignore[arg-type]
    assert len(worker.submitter.submitted) == 1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"f\(\) \(pid=1, host=h\) failed"):
        worker.reader.get([ref], timeout=0)


async def test_an_error_not_listed_is_not_retried(worker: CoreWorker) -> None:
    spec = _spec(worker, max_retries=3, retry_exceptions=(KeyError,))
    worker.tasks.register(spec, [])
    failure = exceptions.TaskError("f", "tb", ValueError("bad"), ValueError, 1, "h")
    worker.tasks.on_task_reply(spec, (spec.task_id, False, [_error(failure)], True, [], None), None)  # type: ignore[arg-type]
    assert worker.submitter.submitted == []  # type: ignore[attr-defined]
    assert spec.state is TaskState.FINISHED


async def test_a_worker_death_is_retried_then_reported(worker: CoreWorker) -> None:
    worker.state = worker.state.RUNNING
    spec = _spec(worker, max_retries=1)
    ref = ObjectRef(spec.return_ids[0], worker.address, worker, counted=True)
    worker.tasks.register(spec, [])

    worker.tasks.on_worker_failure(spec, ConnectionError("stream broke"))
    assert worker.submitter.submitted == [spec]  # type: ignore[attr-defined]
    worker.tasks.on_worker_failure(spec, ConnectionError("stream broke"))
    with pytest.raises(exceptions.WorkerCrashedError, match="max_retries=1"):
        worker.reader.get([ref], timeout=0)


async def test_cancelling_a_resolving_task_fails_it_at_once(worker: CoreWorker) -> None:
    spec = _spec(worker)
    ref = ObjectRef(spec.return_ids[0], worker.address, worker, counted=True)
    worker.tasks.register(spec, [])

    worker.tasks.cancel(ref.binary(), force=False, recursive=True)
    assert spec.cancelled and spec.state is TaskState.FINISHED
    with pytest.raises(exceptions.TaskCancelledError):
        worker.reader.get([ref], timeout=0)
    assert worker.submitter.cancelled == []  # type: ignore[attr-defined]


async def test_a_dead_node_reaches_the_submitter(worker: CoreWorker) -> None:
    alive = NodeInfo(node_id=b"n" * 16, alive=True, host="10.0.0.2", raylet_port=7)
    worker.cluster.on_node(alive)
    assert worker.cluster.node_address(b"n" * 16) == ("10.0.0.2", 7)
    worker.cluster.on_node(NodeInfo(node_id=b"n" * 16, alive=False, host="10.0.0.2"))
    assert worker.submitter.dead_nodes == [b"n" * 16]  # type: ignore[attr-defined]
    assert worker.cluster.node_address(b"n" * 16) is None


async def test_a_wait_for_some_keeps_the_order_and_leaves_no_callbacks(
    worker: CoreWorker,
) -> None:
    specs = [_spec(worker) for _ in range(4)]
    refs = [ObjectRef(s.return_ids[0], worker.address, worker, counted=True) for s in specs]
    for spec in specs:
        worker.tasks.register(spec, [])

    def finish(spec: TaskSpec) -> None:
        reply = (spec.task_id, True, [_value(1)], False, [[]], None)
        worker.tasks.on_task_reply(spec, reply, None)  # type: ignore[arg-type]

    finish(specs[2])
    finish(specs[0])
    wait = worker.reader.wait
    assert wait(refs, 1, 0, False) == ([refs[0]], refs[1:])
    assert wait(refs, 2, 0, False) == ([refs[0], refs[2]], [refs[1], refs[3]])
    assert wait(refs, 3, 0, False) == ([refs[0], refs[2]], [refs[1], refs[3]])

    # Not enough ready: the waiting thread registers a callback per missing
    # object, and withdraws those not called when it is done.
    callbacks = worker.store._callbacks
    waiting = asyncio.ensure_future(asyncio.to_thread(wait, refs, 3, 10.0, False))
    await asyncio.to_thread(
        wait_until, lambda: specs[3].return_ids[0] in callbacks, what="the callbacks"
    )
    finish(specs[3])
    assert await waiting == ([refs[0], refs[2], refs[3]], [refs[1]])
    assert not callbacks  # refs[1]'s is withdrawn
    assert await asyncio.to_thread(wait, [refs[1]], 1, 0.01, False) == ([], [refs[1]])
    assert not callbacks


async def test_posts_from_other_threads_run_in_order_on_the_loop(worker: CoreWorker) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    def post_many() -> None:
        for i in range(100):
            worker.post(seen.append, i)
        worker.post(done.set)

    await asyncio.to_thread(post_many)
    await asyncio.wait_for(done.wait(), 5)
    assert seen == list(range(100))


def test_posts_to_a_closed_loop_wait_for_no_drain_and_run_at_teardown() -> None:
    """A burst past ``HAND_OVER_AT`` hands the loop its turn only while a
    drain is due; with the loop gone the items wait for teardown's drain."""
    bridge = LoopBridge()
    loop = asyncio.new_event_loop()
    bridge.bind(loop)
    loop.close()
    seen: list[int] = []

    def post_many() -> None:
        for i in range(HAND_OVER_AT * 4):
            bridge.post(seen.append, i)

    poster = threading.Thread(target=post_many)
    poster.start()
    poster.join(30)
    assert not poster.is_alive() and seen == []
    bridge.drain()
    assert seen == list(range(HAND_OVER_AT * 4))


async def test_a_task_set_closes_with_tasks_finished_but_not_yet_discarded() -> None:
    """Awaiting a gather of finished tasks need not yield to the loop (Python
    3.12+), so close() must not count on their done callbacks having run."""
    import asyncio

    from runtime._private.tasks import TaskSet

    tasks = TaskSet()

    async def quick() -> int:
        return 1

    tasks.spawn(quick())
    await asyncio.sleep(0)  # it finishes; its done callback is only scheduled
    await asyncio.wait_for(tasks.close(), 5)
    assert len(tasks) == 0
    late = tasks.spawn(quick())  # spawned while closed: cancelled, not kept
    assert len(tasks) == 0
    await asyncio.gather(late, return_exceptions=True)
    assert late.cancelled()


def test_a_remote_oserror_is_caught_as_one_with_its_errno() -> None:
    """OSError and its kind have their own __new__: the TaskError made to look
    like one is still built, and keeps errno, strerror and filename."""
    from runtime import exceptions

    cause = FileNotFoundError(2, "No such file", "/nowhere")
    error = exceptions.TaskError("read", "Traceback\nFileNotFoundError: ...", cause)
    raised = error.as_instanceof_cause()
    assert isinstance(raised, FileNotFoundError) and isinstance(raised, exceptions.TaskError)
    assert (raised.errno, raised.strerror, raised.filename) == (2, "No such file", "/nowhere")
    assert "read()" in str(raised)


def test_large_pickles_read_with_the_collector_paused_leave_it_as_found() -> None:
    """Reads on several threads at once: the collector is off while any reads
    a large pickle, back on after the last, and left off if it was off."""
    import gc
    import threading

    big = serialization.pickle_value(list(range(200_000))).inline()
    assert len(big.data) >= serialization.GC_PAUSE_BYTES
    seen_enabled = _SEEN
    seen_enabled.clear()

    class Probe:
        def __reduce__(self) -> tuple[Any, ...]:
            return (_collector_state, ())

    probe = serialization.pickle_value([Probe(), list(range(200_000))]).inline()

    def read() -> None:
        for _ in range(5):
            assert len(serialization.deserialize(big)) == 200_000
            serialization.deserialize(probe)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert gc.isenabled() and seen_enabled and not any(seen_enabled)
    gc.disable()
    try:
        read()
        assert not gc.isenabled()
    finally:
        gc.enable()


_SEEN: list[bool] = []  # what a probe unpickled during a large read saw


def _collector_state() -> None:
    import gc

    _SEEN.append(gc.isenabled())
