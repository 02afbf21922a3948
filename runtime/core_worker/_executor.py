"""Running tasks in a worker process.

Normal tasks run one at a time, in the order they arrive (a lease is one
CPU's worth of work). A sync function runs on the executor thread, so the
loop keeps serving RPCs (object requests, new pushes) meanwhile; an
``async def`` function runs on the loop itself. Arguments are unpickled and
results pickled on the thread that runs the function.

A plain sync task (its function loaded, its arguments here, no stream, no
``max_calls``) is handed to the thread as soon as it is dequeued (as it
arrives, when nothing is queued before it), so that
tasks queued together run back to back on the thread without a round trip
through the loop each; the loop replies as their results come back. Until
the thread starts one, ``release_queued`` can still take it back.

An actor creation task turns the worker into that actor's host: from then
on, actor calls go to its :class:`ActorExecutor`.

Invariants: tasks start in the order they arrive; a task of any other kind
starts only once no task is ahead on the thread; an ahead task is QUEUED
until its thread starts it (then STARTED) or ``release_queued`` hands it
back (then RELEASED), the change made under ``_ahead_lock``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import logging
import os
import pickle
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import placement, serialization
from .._private import task_events as te
from .._private.task_wire import (
    DEFAULT_TASK_RESOURCES,
    KIND_ACTOR_CALL,
    KIND_ACTOR_CREATION,
    KIND_TASK,
    WORKER_EXITING,
    CancelRequest,
    GeneratorAck,
    Placement,
    ReleasePins,
    WireReply,
    WireTask,
    backpressure_of,
    gpu_ids_of,
    method_of,
    placement_of,
)
from . import _accelerators, _interrupt
from ._accelerators import VisibleDevices
from ._actor_executor import ActorExecutor, ActorKind
from ._lane import Lane
from ._running import (
    ENDS_ASYNC,
    Reply,
    cancelled_reply,
    current_task,
    current_task_id,
    error_reply,
    format_remote_error,
    run_async,
    run_sync,
    thread_state,
)
from ._streaming import GeneratorRun, run_async_stream, run_sync_stream

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger(__name__)


class AheadState(enum.Enum):
    QUEUED = "QUEUED"  # on the thread's queue
    STARTED = "STARTED"  # its thread took it
    RELEASED = "RELEASED"  # handed back before it started


@dataclass(eq=False)
class _Ahead:
    task: WireTask
    reply: Reply
    fn: Callable[..., Any]
    state: AheadState = AheadState.QUEUED
    start: int = 0


class TaskExecutor:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self._queue: asyncio.Queue[tuple[WireTask, Reply]] = asyncio.Queue()
        # Sync tasks' lane (a worker's main thread; a sync actor's calls too).
        self.lane = Lane(asyncio.get_running_loop(), "runtime-task", host=worker.lane_host)
        self._functions: dict[bytes, Any] = {}
        self._runner: asyncio.Task[None] | None = None
        self._cancelled: set[bytes] = set()
        # The task being run: its id, and how to interrupt it.
        self._running: bytes | None = None
        self._running_async: asyncio.Task[Any] | None = None
        self._running_thread: int | None = None
        self.actor: ActorExecutor | None = None
        # Running tasks now waiting for objects: while any is, new tasks are
        # handed back at once (see release_queued).
        self.waiting = 0
        # Tasks run per function that has a ``max_calls``; once one reaches
        # it, the worker retires: it hands every other task back and exits.
        self._calls: dict[bytes, int] = {}
        self.retiring = False
        # The resources of the task running here (or of the actor it hosts).
        self.assigned: dict[str, float] = {}
        # The placement group of the task running here (or of the actor).
        self.placement: Placement | None = None
        self.devices = VisibleDevices()
        # Streaming tasks (and actor calls) not finished yet, by task id.
        self.streams: dict[bytes, GeneratorRun] = {}
        # Plain sync tasks handed to the thread, in order, until their results
        # come back (see the module); set while there is none.
        self._ahead: collections.deque[_Ahead] = collections.deque()
        self._ahead_lock = threading.Lock()
        self._none_ahead = asyncio.Event()
        self._none_ahead.set()
        # Invariant: True exactly while _run waits for the queue (it then
        # handles nothing, and anything queued wakes it before the check in
        # enqueue sees an empty queue).
        self._idle = False

    @property
    def busy(self) -> bool:
        return self._running is not None or not self._queue.empty() or bool(self._ahead)

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except BaseException:
                pass
        if self.actor is not None:
            await self.actor.close()
        self.lane.close()

    def enqueue(
        self, item: WireTask | CancelRequest | ReleasePins | GeneratorAck, reply: Reply
    ) -> None:
        if isinstance(item, GeneratorAck):
            run = self.streams.get(item.task_id)
            if run is not None:
                run.ack(item.consumed)
            return
        if isinstance(item, CancelRequest):
            if item.recursive:
                # Its children first: a parent that is waiting on them sees them cancelled.
                self._worker.tasks.cancel_children(item.task_id)
            self.cancel(item.task_id)
            return
        if isinstance(item, ReleasePins):
            self._worker.ownership.unpin(item.task_id)
            return
        if item[5] < 0:
            reply = self._stream_started(item, reply)
        if item[6] == KIND_ACTOR_CALL:
            if self.actor is None:
                error = exceptions.RaySystemError("this worker hosts no actor")
                reply((item[0], False, [serialization.serialize_error(error)], False, [], None))
            else:
                self.actor.submit(item, reply)
            return
        if self.waiting or self.retiring:
            if self.retiring:
                reply(WORKER_EXITING)
            reply((item[0], False, [], False, None, None))
            return
        if self._idle and self._queue.empty() and item[0] not in self._cancelled:
            # Nothing is queued or being dequeued: a plain sync task goes to
            # the thread now, as _run would (no loop iteration in between).
            fn = self._plain_sync(item)
            if fn is not None:
                self._run_ahead(item, reply, fn)
                return
        self._queue.put_nowait((item, reply))

    def end_batch(self) -> None:
        """The items of one read are all enqueued: an async actor's calls start."""
        actor = self.actor
        if actor is not None and actor.kind is ActorKind.ASYNC:
            actor.start_arrived()

    def _stream_started(self, task: WireTask, reply: Reply) -> Reply:
        """A streaming task arrives: its items go out through ``reply`` too,
        and its run is known here until its own reply is sent."""
        task_id = task[0]
        backpressure = backpressure_of(task[5]) or 0
        run = self.streams[task_id] = GeneratorRun(reply, backpressure)

        def done(result: Any) -> None:
            if self.streams.get(task_id) is run:
                del self.streams[task_id]
            reply(result)

        return done

    def release_queued(self) -> None:
        """Hands tasks not started yet back to their owners (to run elsewhere).

        Called when the running task waits for an object: a task queued behind
        it might be the one that makes that object.
        """
        while not self._queue.empty():
            task, reply = self._queue.get_nowait()
            reply((task[0], False, [], False, None, None))
        with self._ahead_lock:
            taken = [e for e in self._ahead if e.state is AheadState.QUEUED]
            for entry in taken:
                entry.state = AheadState.RELEASED
        for entry in taken:  # (they leave _ahead when the thread skips them)
            entry.reply((entry.task[0], False, [], False, None, None))

    def is_canceled(self, task_id: bytes) -> bool:
        """Whether the task running here by that id was asked to stop."""
        return task_id in self._cancelled or (
            self.actor is not None and self.actor.is_canceled(task_id)
        )

    def cancel(self, task_id: bytes) -> None:
        run = self.streams.get(task_id)
        if run is not None:
            run.cancel()  # stops it between items
        if self.actor is not None and self.actor.cancel(task_id):
            return
        # Read by a queued task when it is dequeued, by one between dequeuing and
        # starting on its thread, and by is_canceled(); dropped when it ends.
        self._cancelled.add(task_id)
        if self._running == task_id:
            if self._running_async is not None:
                self._running_async.cancel()
            elif self._running_thread is not None:
                thread = self._running_thread
                _interrupt.interrupt(
                    thread, lambda: self._running_thread == thread and self._running == task_id
                )

    async def _run(self) -> None:
        while True:
            self._idle = True
            task, reply = await self._queue.get()
            self._idle = False
            task_id = task[0]
            if task_id in self._cancelled:
                self._cancelled.discard(task_id)
                reply(cancelled_reply(task_id, task[2]))
                continue
            fn = self._plain_sync(task)
            if fn is not None:
                self._run_ahead(task, reply, fn)
                continue
            if self._ahead:
                await self._none_ahead.wait()  # in order: those ahead first
            self._running = task_id
            events = self._worker.task_events
            # An actor's creation is recorded here (its owner, the gcs, records
            # nothing); a task's run is stamped on its reply for its owner.
            creation = task[6] == KIND_ACTOR_CREATION
            if creation and task[10]:
                events.record(task_id, task[9], te.RUNNING)
            start = events.started(task)
            try:
                result = await self._execute(task)
            except (SystemExit, asyncio.CancelledError):
                raise  # the worker exits, or stops serving
            except BaseException as e:  # never ends the serving task: calls would hang
                result = _system_error(task, e)
            finally:
                self._running = None
                self._running_async = None
                self._running_thread = None
                events.forget(task)
            result = self._unless_cancelled(task, result)
            if creation and task[10]:
                events.record(task_id, task[9], te.FINISHED if result[1] else te.FAILED)
            else:
                result = events.stamp(result, start)
            max_calls = task[7][0] if task[6] == KIND_TASK and task[7] else None
            if max_calls:
                calls = self._calls[task[1]] = self._calls.get(task[1], 0) + 1
                if calls >= max_calls:
                    reply(WORKER_EXITING)  # ahead of the reply: its owner pushes no more
                    reply(result)
                    self._retire(task[2], max_calls)
                    return
            reply(result)

    # -- plain sync tasks, run ahead -------------------------------------------------
    def _plain_sync(self, task: WireTask) -> Callable[..., Any] | None:
        """The task's function if the task may run ahead (see the module)."""
        if task[6] != KIND_TASK or task[5] < 0 or (task[7] and task[7][0]):
            return None
        fn = self._functions.get(task[1])
        if fn is None or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            return None
        if self._worker.recovery.remote_markers(task[4]):
            return None  # its arguments are pulled first, on the loop
        return fn

    def _run_ahead(self, task: WireTask, reply: Reply, fn: Callable[..., Any]) -> None:
        entry = _Ahead(task, reply, fn)
        self._ahead.append(entry)
        self._none_ahead.clear()
        self.lane.submit(lambda: self._start_ahead(entry), lambda r, e: self._ahead_done(r, e))

    def _start_ahead(self, entry: _Ahead) -> WireReply | None:
        """On the thread: runs the task unless it was handed back."""
        with self._ahead_lock:
            if entry.state is AheadState.RELEASED:
                return None
            entry.state = AheadState.STARTED
        task = entry.task
        task_id = task[0]
        self._running = task_id
        entry.start = self._worker.task_events.started(task)
        # (This call's own context: the lane runs each in a copy.)
        current_task_id.set(task_id)
        current_task.set(task)
        self.devices.set(gpu_ids_of(task))
        self.placement = placement_of(task)
        self.assigned = task[7][1] if task[7] else DEFAULT_TASK_RESOURCES
        _set_omp_threads(self.assigned)
        try:
            return self._execute_sync(entry.fn, task)
        finally:
            self._running = None
            self._worker.task_events.forget(task)

    def _ahead_done(self, result: WireReply | None, error: BaseException | None) -> None:
        """On the loop, in order: the head task's result goes to its owner."""
        entry = self._ahead.popleft()
        if not self._ahead:
            self._none_ahead.set()
        if entry.state is AheadState.RELEASED:
            return  # answered when it was handed back
        if error is not None or result is None:
            result = _system_error(entry.task, error)
        result = self._unless_cancelled(entry.task, result)
        entry.reply(self._worker.task_events.stamp(result, entry.start))

    def _unless_cancelled(self, task: WireTask, result: WireReply) -> WireReply:
        """The result, or the cancellation if the task was cancelled while it ran
        (even if it caught the interrupt and returned, as in Ray)."""
        if task[0] in self._cancelled:
            self._cancelled.discard(task[0])
            if result[1]:
                return cancelled_reply(task[0], task[2])
        return result

    def _retire(self, name: str, max_calls: int) -> None:
        logger.info("%s() ran max_calls=%d times here: this worker exits", name, max_calls)
        self.retiring = True
        self.release_queued()
        self._worker.background.spawn(self._worker.retire())

    async def load(self, function_id: bytes) -> Any:
        """The function (or class) with this id, fetched from the gcs once."""
        cached = self._functions.get(function_id)
        if cached is not None:
            return cached
        data = await self._worker.exports.fetch(function_id)
        fn = await self.lane.run(pickle.loads, data)
        self._functions[function_id] = fn
        return fn

    async def _execute(self, task: WireTask) -> WireReply:
        task_id, function_id, name = task[0], task[1], task[2]
        try:
            fn = await self.load(function_id)
        except Exception as e:
            return error_reply(task_id, name, e)
        try:
            await self._worker.recovery.localize(task[4])  # arguments other nodes hold
        except exceptions.ObjectStoreFullError as e:
            return error_reply(task_id, name, e)
        self.devices.set(gpu_ids_of(task))
        self.placement = placement_of(task)
        if task[6] == KIND_ACTOR_CREATION:
            return await self._create_actor(fn, task)
        token = current_task_id.set(task_id)
        name_token = current_task.set(task)
        self.assigned = task[7][1] if task[7] else DEFAULT_TASK_RESOURCES
        _set_omp_threads(self.assigned)
        try:
            if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                self._running_async = asyncio.ensure_future(self._execute_async(fn, task))
                try:
                    return await self._running_async
                except asyncio.CancelledError:
                    if self._runner is not None and self._runner.cancelling():
                        raise
                    return cancelled_reply(task_id, name)
            return await self.lane.run(self._execute_sync, fn, task)
        finally:
            current_task_id.reset(token)
            current_task.reset(name_token)

    def function_name(self, task: WireTask) -> str | None:
        """Ray's task function name: ``module.function``, ``module.Class.method``."""
        if task[6] == KIND_TASK:
            fn = self._functions.get(task[1])
            return None if fn is None else _qualified(fn)
        actor = self.actor.instance if self.actor is not None else None
        if actor is None:
            return None
        method = "__init__" if task[6] == KIND_ACTOR_CREATION else method_of(task)
        return f"{_qualified(type(actor))}.{method}"

    def _execute_sync(self, fn: Callable[..., Any], task: WireTask) -> WireReply:
        self._running_thread = threading.get_ident()
        if task[0] in self._cancelled:
            self._cancelled.discard(task[0])
            self._running_thread = None
            return cancelled_reply(task[0], task[2])
        thread_state.in_sync_task = True
        try:
            run = self.streams.get(task[0]) if task[5] < 0 else None
            if run is not None:
                return run_sync_stream(self._worker, fn, task, run)
            return run_sync(self._worker, fn, task)
        except KeyboardInterrupt:  # interrupted outside the task's own code
            return cancelled_reply(task[0], task[2])
        finally:
            thread_state.in_sync_task = False
            self._running_thread = None
            # An interrupt aimed at the task that is only now arriving is dropped.
            _interrupt.withdraw()

    async def _execute_async(self, fn: Callable[..., Awaitable[Any]], task: WireTask) -> WireReply:
        run = self.streams.get(task[0]) if task[5] < 0 else None
        if run is not None:
            return await run_async_stream(self._worker, fn, task, run)
        return await run_async(self._worker, fn, task)

    async def _create_actor(self, cls: type, task: WireTask) -> WireReply:
        options = task[7]
        token = current_task_id.set(task[0])
        name_token = current_task.set(task)
        try:
            actor = await ActorExecutor.create(self._worker, cls, task, options)
        except ENDS_ASYNC:
            raise
        except BaseException as e:  # (a BaseException of the user's too: see ENDS_WORKER)
            # Told as text: the gcs, which reads it, may not import the user's classes.
            tb = format_remote_error(e)
            error = exceptions.ActorDiedError(
                f"the constructor of actor {options.get('class_name', '?')} raised "
                f"(pid={os.getpid()}):\n{tb.rstrip()}"
            )
            return (task[0], False, [serialization.serialize_error(error)], True, [], None)
        finally:
            current_task_id.reset(token)
            current_task.reset(name_token)
        self.actor = actor
        self.assigned = options.get("resources") or {}
        _set_omp_threads(self.assigned)
        await self._worker.actor_client.on_actor_created(actor, options)
        # Its own __repr__, as text, goes to the gcs with the reply (Ray's repr_name).
        name = actor.repr_name.encode()
        named = [serialization.SerializedObject(0, name)] if name else []
        return (task[0], True, named, False, [], None)


def _qualified(fn: Any) -> str:
    return f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', fn)}"


def _system_error(task: WireTask, error: BaseException | None) -> WireReply:
    """The reply to a task that the runtime itself failed to run (not the
    task's own failure, which its reply carries as a TaskError)."""
    logger.error("executing task %s failed", task[2], exc_info=error)
    failure = serialization.serialize_error(exceptions.RaySystemError(repr(error)))
    return (task[0], False, [failure], False, [], None)


# OMP_NUM_THREADS as the worker started: the user's, if they set one.
_USER_OMP = os.environ.get("OMP_NUM_THREADS")


def read_start_environment() -> None:
    """What task code sees of the environment the worker started with, read
    again: a worker forked by the template imported these modules before its
    own environment was set."""
    global _USER_OMP, _omp_last
    _USER_OMP = os.environ.get("OMP_NUM_THREADS")
    _omp_last = None
    _accelerators.read_start_environment()


#: The last resources sized and their thread count (most tasks of a worker
#: ask for the same ones: their names are parsed once).
_omp_last: tuple[dict[str, float], str] | None = None


def _set_omp_threads(resources: dict[str, float]) -> None:
    """As in Ray: native thread pools sized to the task's CPUs (at least one),
    unless the user set OMP_NUM_THREADS themselves."""
    global _omp_last
    if _USER_OMP is not None:
        return
    last = _omp_last
    if last is not None and (last[0] is resources or last[0] == resources):
        threads = last[1]
    else:
        threads = str(max(1, int(placement.base_amounts(resources).get("CPU", 1))))
        _omp_last = (resources, threads)
    if os.environ.get("OMP_NUM_THREADS") != threads:
        os.environ["OMP_NUM_THREADS"] = threads
