"""Running an actor's methods in the worker that hosts it.

Three kinds, chosen from the class when the actor is created:
- **sync**: one call at a time, in arrival order, on one thread (the same
  thread that ran the constructor);
- **threaded**: a sync class with ``max_concurrency > 1``; calls start in
  arrival order on that many threads;
- **async**: a class with any ``async def`` method. Its coroutines run on the
  worker's loop, at most ``max_concurrency`` (default 1000) at once, started
  in arrival order; its sync methods run on the loop too, as in Ray, so the
  actor's state is only ever touched by one thread (a blocking runtime call
  there raises, naming its ``await`` form). An ``async def __init__`` is
  awaited before the first call. On Python 3.12+ a call's first step runs
  eagerly, as it arrives (in its own task).

Concurrency groups (``concurrency_groups={"io": 2}`` on the class, a
method's ``concurrency_group``, or a call's) limit calls per group: a group
is a lane (``_lane.py``) of that many threads (sync and threaded actors; a
sync class with groups is threaded) or a semaphore (async actors). The default group ("")
keeps ``max_concurrency``.

Calls from one caller arrive in submission order (one ordered stream per
caller), so starting calls in arrival order keeps each caller's order.

An actor ends itself with ``exit_actor()`` in a method (or a
``__ray_terminate__`` call, queued like any other, or ``sys.exit(0)``): that
call fails with ActorDiedError, later ones at once, and the worker tells the
gcs (no restart) and exits its own graceful way, so atexit handlers run.
``sys.exit(n)`` with another code is a crash, as in Ray.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import inspect
import logging
import os
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import serialization
from .._private.task_wire import WireReply, WireTask, method_of
from ._lane import Lane
from ._running import (
    ActorExitRequest,
    Reply,
    cancelled_reply,
    current_task,
    current_task_id,
    error_reply,
    load_args,
    run_async,
    run_sync,
    thread_state,
)
from ._streaming import GeneratorRun, run_async_stream, run_sync_stream

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger(__name__)

DEFAULT_ASYNC_CONCURRENCY = 1000


#: Python 3.12+ can start a task eagerly (``eager_start``).
_EAGER = sys.version_info >= (3, 12)


def _start(coro: Coroutine[Any, Any, WireReply]) -> asyncio.Task[WireReply]:
    """A call's task, its first step run at once where Python can (3.12+: an
    eager task, with itself as the current task): a method that finishes
    without waiting replies in the same loop iteration, with no trip through
    the loop's queue for its start and its end."""
    loop = asyncio.get_running_loop()
    if _EAGER:
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro)


class ActorKind(enum.Enum):
    SYNC = "sync"
    THREADED = "threaded"
    ASYNC = "async"


def is_async_class(cls: type) -> bool:
    return any(
        inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        for _, member in inspect.getmembers(cls, inspect.isfunction)
    )


class _Group:
    """A concurrency group: a lane of its size (sync, threaded) or a semaphore (async)."""

    def __init__(self, name: str, size: int, kind: ActorKind, lane: Lane | None = None) -> None:
        """``lane``: the one to share (a sync actor's: its worker's main thread)."""
        self.name = name
        self.size = size
        threads = size if kind is ActorKind.THREADED else 1
        # An async actor's default lane runs only its sync constructor.
        self.lane: Lane | None = lane
        if lane is None and (kind is not ActorKind.ASYNC or not name):
            loop = asyncio.get_running_loop()
            self.lane = Lane(loop, f"runtime-actor{'-' + name if name else ''}", threads)
        self.gate = Gate(size)


class Gate:
    """At most ``size`` async calls of a group run at once; the rest wait in
    arrival order, each handed the slot of a call that ends (a semaphore
    whose waiters queue when their calls arrive, not when they first run).

    Invariant: ``free > 0`` only while no live waiter is queued. A waiter's
    future is resolved when it is handed a slot, cancelled when its call is
    (and then skipped by :meth:`release`).
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def admit(self) -> asyncio.Future[None] | None:
        """None: a slot is taken now; else the future that hands one over."""
        if self.free > 0:
            self.free -= 1
            return None
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(handed)
        return handed

    def release(self) -> None:
        while self.waiting:
            handed = self.waiting.popleft()
            if not handed.done():
                handed.set_result(None)
                return
        self.free += 1


class _Ticket:
    """One call's place at its gate; given back once, however the call ends
    (a call cancelled before its first step never runs its own ``finally``)."""

    __slots__ = ("gate", "given_back", "handed")

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.handed = gate.admit()
        self.given_back = False

    def give_back(self) -> None:
        if self.given_back:
            return
        self.given_back = True
        handed = self.handed
        if handed is None or (handed.done() and not handed.cancelled()):
            self.gate.release()  # a slot it held (or was handed and will not use)
        else:
            handed.cancel()  # still waiting: the gate skips it


class ActorExecutor:
    def __init__(
        self,
        worker: CoreWorker,
        kind: ActorKind,
        max_concurrency: int,
        name: str,
        groups: dict[str, int] | None = None,
    ) -> None:
        self._worker = worker
        self.kind = kind
        self.name = name
        self.max_concurrency = max_concurrency
        # A sync actor's calls (an async actor's sync constructor) run where its
        # worker runs sync tasks (the main thread, as in Ray: signals reach
        # them), on that same lane.
        tasks = worker.executor
        shared = tasks.lane if tasks is not None and kind is not ActorKind.THREADED else None
        self._groups = {"": _Group("", max_concurrency, kind, shared)}
        for group, size in (groups or {}).items():
            self._groups[group] = _Group(group, size, kind)
        default_lane = self._groups[""].lane
        assert default_lane is not None
        self._lane = default_lane
        # Each method's own group ("" for the default), and whether it is a
        # coroutine function, learnt on first call.
        self._method_groups: dict[str, str] = {}
        self._coroutines: dict[str, bool] = {}
        # Calls not finished yet: an asyncio task (async actor) or None (a
        # sync or threaded actor's, on a lane).
        self._calls: dict[bytes, asyncio.Task[Any] | None] = {}
        # Calls asked to stop (for is_canceled()); a subset of ``_calls``' keys.
        self._cancelled: set[bytes] = set()
        # Async calls that arrived in the batch being read, admitted (or queued
        # at their group's gate) but not started: all of a batch are admitted
        # before any runs, so that a call a batch's earlier call frees a slot for
        # waits behind coroutines that call woke (as calls arriving one by one do).
        self._arrived: list[tuple[WireTask, Coroutine[Any, Any, WireReply], _Ticket, Reply]] = []
        # Sync calls queued on a lane and not started yet, with their reply.
        # Invariant: an entry is popped once, by its lane when the call starts
        # or by ``cancel``, and only the popper answers the call.
        self._queued: dict[bytes, tuple[WireTask, Reply]] = {}
        self.instance: Any = None
        self.repr_name = ""  # its own __repr__, if its class defines one
        # Why the actor is ending by its own will ("" while it is not).
        self.exiting = ""
        # Written by the call that ends the actor, on the thread it ran on (a
        # lane's, or the loop), before its result reaches the loop: calls that
        # start after it (queued on the lane meanwhile) do not run. One str write.
        self._ended = ""

    @classmethod
    async def create(
        cls, worker: CoreWorker, actor_cls: type, task: WireTask, options: dict[str, Any]
    ) -> ActorExecutor:
        is_async = is_async_class(actor_cls)
        requested = options.get("max_concurrency")
        groups = options.get("concurrency_groups") or {}
        if is_async:
            kind = ActorKind.ASYNC
            concurrency = requested or DEFAULT_ASYNC_CONCURRENCY
        else:
            concurrency = requested or 1
            threaded = concurrency > 1 or groups
            kind = ActorKind.THREADED if threaded else ActorKind.SYNC
        executor = cls(worker, kind, concurrency, actor_cls.__name__, groups)
        init = getattr(actor_cls, "__init__", None)
        if inspect.iscoroutinefunction(init):
            args, kwargs = load_args(worker, task)
            instance: Any = object.__new__(actor_cls)
            await init(instance, *args, **kwargs)
            executor.repr_name = own_repr(instance)  # (its code runs on the loop)
        else:
            instance, executor.repr_name = await executor._lane.run(
                _construct, worker, actor_cls, task
            )
        executor.instance = instance
        return executor

    async def close(self) -> None:
        for call in list(self._calls.values()):
            if call is not None:
                call.cancel()
        for group in self._groups.values():
            if group.lane is not None:
                group.lane.close()

    def submit(self, task: WireTask, reply: Reply) -> None:
        task_id, extra = task[0], task[7]
        # The method's name, or (name, concurrency group) when the call names one.
        method_name, group_name = (extra, None) if type(extra) is str else extra
        if self.exiting:
            reply(self._died_reply(task))
            return
        method = _BUILTIN_METHODS.get(method_name)
        if method is None:
            method = getattr(self.instance, method_name, None)
        elif method is _call_on:
            method = self._call_on_async if self.kind is ActorKind.ASYNC else self._call_on
        if method is None:
            missing = AttributeError(f"actor {self.name} has no method {method_name!r}")
            reply(error_reply(task_id, task[2], missing))
            return
        group = self._groups.get(self._group_of(method_name) if group_name is None else group_name)
        if group is None:
            error = ValueError(f"actor {self.name} has no concurrency group {group_name!r}")
            reply(error_reply(task_id, task[2], error))
            return
        if self.kind is ActorKind.ASYNC:
            is_coroutine = self._is_coroutine(method_name, method)
            ticket = _Ticket(group.gate)
            run = self._run_async(method, is_coroutine, task, ticket)
            self._calls[task_id] = None  # (known to cancel() before it starts)
            self._arrived.append((task, run, ticket, reply))
            return
        assert group.lane is not None
        self._calls[task_id] = None
        self._queued[task_id] = (task, reply)
        group.lane.submit(
            lambda: self._run_sync(method, task),
            lambda result, error: self._finish_sync(task, result, error, reply),
        )

    def start_arrived(self) -> None:
        """Starts the async calls of the batch just read, in arrival order."""
        arrived, self._arrived = self._arrived, []
        for task, run, ticket, reply in arrived:
            if task[0] in self._cancelled:  # cancelled in the same batch: never runs
                run.close()
                ticket.give_back()
                self._calls.pop(task[0], None)
                self._cancelled.discard(task[0])
                reply(cancelled_reply(task[0], task[2]))
                continue
            call = _start(run)
            if call.done():  # it finished in its first step, run eagerly
                self._finish_async(task, call, ticket, reply)
                continue
            self._calls[task[0]] = call
            call.add_done_callback(functools.partial(self._finished_later, task, ticket, reply))

    def _finished_later(
        self, task: WireTask, ticket: _Ticket, reply: Reply, call: asyncio.Task[WireReply]
    ) -> None:
        self._finish_async(task, call, ticket, reply)

    def cancel(self, task_id: bytes) -> bool:
        """Cancels a call of this actor; False if it has none by that id.

        A queued call is dropped, and answered at once; a running coroutine
        sees CancelledError; a running sync method cannot be interrupted and
        finishes (``is_canceled()`` tells it).
        """
        if task_id not in self._calls:
            return False
        self._cancelled.add(task_id)
        queued = self._queued.pop(task_id, None)
        if queued is not None:  # not started on its lane (which now skips it)
            task, reply = queued
            reply(cancelled_reply(task_id, task[2]))
            return True
        call = self._calls[task_id]
        if call is not None:
            call.cancel()
        return True

    def is_canceled(self, task_id: bytes) -> bool:
        return task_id in self._cancelled

    def _run_sync(self, method: Any, task: WireTask) -> WireReply | None:
        # Claimed here or by ``cancel``, whichever comes first (one atomic pop).
        if self._queued.pop(task[0], None) is None:
            return None  # cancelled while it was queued, and answered then
        if self._ended:  # a call before it ended the actor
            return self._died_reply(task)
        events = self._worker.task_events
        start = events.started(task)
        token = current_task_id.set(task[0])
        name_token = current_task.set(task)
        thread_state.in_sync_task = True
        try:
            self._worker.recovery.localize_blocking(task[4])  # arguments other nodes hold
            run = self._stream_of(task)
            if run is not None:
                result = run_sync_stream(self._worker, method, task, run)
            else:
                result = run_sync(self._worker, method, task)
        except (ActorExitRequest, SystemExit) as e:
            raise self._ending(task, e) from None
        finally:
            events.forget(task)
            thread_state.in_sync_task = False
            current_task_id.reset(token)
            current_task.reset(name_token)
        return events.stamp(result, start)

    def _finish_sync(
        self, task: WireTask, result: WireReply | None, error: BaseException | None, reply: Reply
    ) -> None:
        self._calls.pop(task[0], None)
        self._cancelled.discard(task[0])
        if result is None and error is None:
            return  # cancelled while it was queued: answered then
        if isinstance(error, ActorExitRequest):
            self._exit(task, reply)
        elif error is not None or result is None:
            failure = exceptions.RaySystemError(repr(error))
            reply(error_reply(task[0], task[2], failure))
        else:
            reply(result)

    def _stream_of(self, task: WireTask) -> GeneratorRun | None:
        executor = self._worker.executor
        if task[5] >= 0 or executor is None:
            return None
        return executor.streams.get(task[0])

    def _group_of(self, method_name: str) -> str:
        group = self._method_groups.get(method_name)
        if group is None:
            fn = getattr(type(self.instance), method_name, None)
            options = getattr(fn, "__runtime_method_options__", None) or {}
            group = self._method_groups[method_name] = options.get("concurrency_group") or ""
        return group

    async def _run_async(
        self,
        method: Any,
        is_coroutine: bool,
        task: WireTask,
        ticket: _Ticket,
    ) -> WireReply:
        try:
            handed = ticket.handed
            if handed is not None:  # no slot was free when it arrived
                if handed.done():
                    # Handed one before this first step: wait behind what the
                    # loop was told to run before then (as a woken waiter does).
                    await asyncio.sleep(0)
                else:
                    await handed
            if self._ended:  # a call before it ended the actor
                return self._died_reply(task)
            worker = self._worker
            events = worker.task_events
            start = events.started(task)
            token = current_task_id.set(task[0])
            name_token = current_task.set(task)
            try:
                if task[4] and worker.recovery.remote_markers(task[4]):
                    await worker.recovery.localize(task[4])  # arguments other nodes hold
                run = self._stream_of(task)
                if run is not None:  # a generator method: on the loop, sync or async
                    result = await run_async_stream(worker, method, task, run)
                elif is_coroutine:
                    result = await run_async(worker, method, task)
                else:  # a sync method of an async actor: on the loop, as in Ray
                    result = run_sync(worker, method, task)
            except (ActorExitRequest, SystemExit) as e:  # (SystemExit would stop the loop)
                raise self._ending(task, e) from None
            finally:
                events.forget(task)
                current_task_id.reset(token)
                current_task.reset(name_token)
            return events.stamp(result, start)
        finally:
            ticket.give_back()

    def _call_on(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``__ray_call__``: ``fn(instance, ...)`` in the actor, as a method is."""
        return fn(self.instance, *args, **kwargs)

    async def _call_on_async(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """An async actor's ``__ray_call__``, on its loop: a coroutine ``fn`` is awaited."""
        result = fn(self.instance, *args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    def _is_coroutine(self, method_name: str, method: Any) -> bool:
        """Whether a method is ``async def`` (learnt on its first call)."""
        known = self._coroutines.get(method_name)
        if known is None:
            known = self._coroutines[method_name] = inspect.iscoroutinefunction(method)
        return known

    def _finish_async(
        self, task: WireTask, call: asyncio.Task[WireReply], ticket: _Ticket, reply: Reply
    ) -> None:
        ticket.give_back()  # (a no-op unless it was cancelled before its first step)
        self._calls.pop(task[0], None)
        cancelled = task[0] in self._cancelled
        self._cancelled.discard(task[0])
        if call.cancelled() or (cancelled and not call.exception() and call.result()[1]):
            reply(cancelled_reply(task[0], task[2]))
        elif isinstance(call.exception(), ActorExitRequest):
            self._exit(task, reply)
        elif call.exception() is not None:
            reply(error_reply(task[0], task[2], exceptions.RaySystemError(repr(call.exception()))))
        else:
            reply(call.result())

    async def shutdown_hook(self) -> None:
        """The actor's ``__ray_shutdown__``, if its class has one, as it ends
        gracefully (Ray's cleanup hook; not on ``kill`` or a crash): on the
        thread that ran its constructor (awaited on the loop if ``async def``),
        for at most ``actor_graceful_shutdown_timeout_s``; its errors are logged."""
        hook = getattr(self.instance, "__ray_shutdown__", None)
        if not callable(hook):
            return
        timeout = self._worker.config.actor_graceful_shutdown_timeout_s
        try:
            if inspect.iscoroutinefunction(hook):
                await asyncio.wait_for(hook(), timeout)
            else:
                await asyncio.wait_for(self._lane.run(hook), timeout)
        except TimeoutError:
            logger.error(
                "%s.__ray_shutdown__ did not return within %s s; the actor exits anyway",
                self.name,
                timeout,
            )
        except Exception:
            logger.exception("%s.__ray_shutdown__ raised; the actor exits anyway", self.name)

    def _exit(self, task: WireTask, reply: Reply) -> None:
        """The call ``task`` asked the actor to end: it is the last to run."""
        if not self.exiting:
            self.exiting = self._ended or self._exit_message(task)
            self._worker.background.spawn(self._worker.actor_client.exit_actor(self.exiting))
        reply(self._died_reply(task, intended=True))

    def _exit_message(self, task: WireTask, how: str = "") -> str:
        method = method_of(task)
        if not how:
            how = "__ray_terminate__" if method == "__ray_terminate__" else "exit_actor()"
        return f"the actor exited intentionally ({how} in {self.name}.{method})"

    def _ending(self, task: WireTask, error: ActorExitRequest | SystemExit) -> ActorExitRequest:
        """The call ends the actor (on its own thread: calls that start after it
        do not run). ``sys.exit()``, as in Ray: a success code (0 or none) ends it
        as ``exit_actor()`` does; any other is a crash (the process exits with
        it, and the actor restarts if it may)."""
        if isinstance(error, ActorExitRequest):
            self._ended = self._exit_message(task)
            return error
        if error.code is None or error.code == 0:
            self._ended = self._exit_message(task, f"sys.exit({error.code or ''})")
            return ActorExitRequest()
        method = method_of(task)
        print(
            f"{self.name}.{method} raised SystemExit({error.code!r}): the actor's process exits",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(error.code if isinstance(error.code, int) else 1)

    def _died_reply(self, task: WireTask, intended: bool = False) -> WireReply:
        # Not an application error: no retry_exceptions retries it.
        error = exceptions.ActorDiedError(self.exiting or self._ended, intended)
        return (task[0], False, [serialization.serialize_error(error)], False, [], None)


def _terminate() -> None:
    raise ActorExitRequest


def _call_on(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``__ray_call__``'s marker: :meth:`ActorExecutor._call_on` runs it."""
    raise AssertionError("replaced by the executor's own")


def _ready() -> bool:
    return True


#: Methods every actor has, as in Ray.
_BUILTIN_METHODS: dict[str, Any] = {
    "__ray_terminate__": _terminate,
    "__ray_ready__": _ready,
    "__ray_call__": _call_on,
}


def _construct(worker: CoreWorker, actor_cls: type, task: WireTask) -> tuple[Any, str]:
    """On the actor's thread: the instance, and its own ``__repr__``."""
    args, kwargs = load_args(worker, task)
    instance = actor_cls(*args, **kwargs)
    return instance, own_repr(instance)


#: At most this much of an actor's ``__repr__`` names it (its output lines, its
#: row in the state API).
MAX_REPR = 200


def own_repr(instance: Any) -> str:
    """``repr(instance)`` if its class defines ``__repr__`` ("" if not, or if it
    fails): Ray's ``repr_name``."""
    if type(instance).__repr__ is object.__repr__:
        return ""
    try:
        return repr(instance)[:MAX_REPR]
    except Exception:
        return ""
