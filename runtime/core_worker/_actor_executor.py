"""Running an actor's methods in the worker that hosts it.

Three kinds, chosen from the class when the actor is created:
- **sync**: one call at a time, in arrival order, on one thread (the same
  thread that ran the constructor);
- **threaded**: a sync class with ``max_concurrency > 1``; calls start in
  arrival order on that many threads;
- **async**: a class with any ``async def`` method. Its coroutines run on the
  worker's loop, at most ``max_concurrency`` (default 1000) at once, started
  in arrival order; its sync methods run on one thread off the loop, so they
  never block it. An ``async def __init__`` is awaited before the first call.

Calls from one caller arrive in submission order (one ordered stream per
caller), so starting calls in arrival order keeps each caller's order.

An actor ends itself with ``exit_actor()`` in a method (or a
``__ray_terminate__`` call, queued like any other): that call fails with
ActorDiedError, later ones at once, and the worker tells the gcs (no
restart) and exits its own graceful way, so atexit handlers run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import enum
import inspect
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import serialization
from .._private.task_wire import WireReply, WireTask
from ._running import (
    ActorExitRequest,
    Reply,
    cancelled_reply,
    current_task_id,
    error_reply,
    load_args,
    run_async,
    run_sync,
    thread_state,
)

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

DEFAULT_ASYNC_CONCURRENCY = 1000


class ActorKind(enum.Enum):
    SYNC = "sync"
    THREADED = "threaded"
    ASYNC = "async"


def is_async_class(cls: type) -> bool:
    return any(
        inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
        for _, member in inspect.getmembers(cls, inspect.isfunction)
    )


class ActorExecutor:
    def __init__(
        self, worker: CoreWorker, kind: ActorKind, max_concurrency: int, name: str
    ) -> None:
        self._worker = worker
        self.kind = kind
        self.name = name
        self.max_concurrency = max_concurrency
        threads = max_concurrency if kind is ActorKind.THREADED else 1
        self._pool = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="runtime-actor"
        )
        self._slots = asyncio.Semaphore(max_concurrency)
        # Calls not finished yet: an asyncio task (async actor) or the
        # thread pool's future (sync and threaded actors).
        self._calls: dict[bytes, asyncio.Task[Any] | concurrent.futures.Future[WireReply]] = {}
        # Calls asked to stop (for is_canceled()); a subset of ``_calls``' keys.
        self._cancelled: set[bytes] = set()
        self.instance: Any = None
        # Why the actor is ending by its own will ("" while it is not).
        self.exiting = ""

    @classmethod
    async def create(
        cls, worker: CoreWorker, actor_cls: type, task: WireTask, options: dict[str, Any]
    ) -> ActorExecutor:
        is_async = is_async_class(actor_cls)
        requested = options.get("max_concurrency")
        if is_async:
            kind = ActorKind.ASYNC
            concurrency = requested or DEFAULT_ASYNC_CONCURRENCY
        else:
            concurrency = requested or 1
            kind = ActorKind.THREADED if concurrency > 1 else ActorKind.SYNC
        executor = cls(worker, kind, concurrency, actor_cls.__name__)
        loop = asyncio.get_running_loop()
        init = getattr(actor_cls, "__init__", None)
        if inspect.iscoroutinefunction(init):
            args, kwargs = load_args(worker, task)
            instance: Any = object.__new__(actor_cls)
            await init(instance, *args, **kwargs)
        else:
            ctx = contextvars.copy_context()
            instance = await loop.run_in_executor(
                executor._pool, ctx.run, _construct, worker, actor_cls, task
            )
        executor.instance = instance
        return executor

    async def close(self) -> None:
        for call in list(self._calls.values()):
            call.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def submit(self, task: WireTask, reply: Reply) -> None:
        task_id, method_name = task[0], task[7]
        if self.exiting:
            reply(self._died_reply(task))
            return
        method = _BUILTIN_METHODS.get(method_name) or getattr(self.instance, method_name, None)
        if method is None:
            error = AttributeError(f"actor {self.name} has no method {method_name!r}")
            reply(error_reply(task_id, task[2], error))
            return
        if self.kind is ActorKind.ASYNC:
            call = asyncio.get_running_loop().create_task(self._run_async(method, task))
            self._calls[task_id] = call
            call.add_done_callback(lambda c: self._finish_async(task, c, reply))
            return
        ctx = contextvars.copy_context()
        future = self._pool.submit(ctx.run, self._run_sync, method, task)
        self._calls[task_id] = future
        loop = asyncio.get_running_loop()
        future.add_done_callback(
            lambda f: loop.call_soon_threadsafe(self._finish_sync, task, f, reply)
        )

    def cancel(self, task_id: bytes) -> bool:
        """Cancels a call of this actor; False if it has none by that id.

        A queued call is dropped; a running coroutine sees CancelledError; a
        running sync method cannot be interrupted and finishes.
        """
        call = self._calls.get(task_id)
        if call is None:
            return False
        self._cancelled.add(task_id)
        call.cancel()
        return True

    def is_canceled(self, task_id: bytes) -> bool:
        return task_id in self._cancelled

    def _run_sync(self, method: Any, task: WireTask) -> WireReply:
        token = current_task_id.set(task[0])
        thread_state.in_sync_task = True
        try:
            self._worker.recovery.localize_blocking(task[4])  # arguments other nodes hold
            return run_sync(self._worker, method, task)
        finally:
            thread_state.in_sync_task = False
            current_task_id.reset(token)

    def _finish_sync(
        self, task: WireTask, future: concurrent.futures.Future[WireReply], reply: Reply
    ) -> None:
        self._calls.pop(task[0], None)
        self._cancelled.discard(task[0])
        if future.cancelled():
            reply(cancelled_reply(task[0], task[2]))
        elif isinstance(future.exception(), ActorExitRequest):
            self._exit(task, reply)
        else:
            reply(future.result())

    async def _run_async(self, method: Any, task: WireTask) -> WireReply:
        async with self._slots:
            token = current_task_id.set(task[0])
            try:
                if inspect.iscoroutinefunction(method):
                    await self._worker.recovery.localize(task[4])
                    return await run_async(self._worker, method, task)
                # A sync method of an async actor: off the loop, one at a time.
                loop = asyncio.get_running_loop()
                ctx = contextvars.copy_context()
                return await loop.run_in_executor(self._pool, ctx.run, self._run_sync, method, task)
            finally:
                current_task_id.reset(token)

    def _finish_async(self, task: WireTask, call: asyncio.Task[WireReply], reply: Reply) -> None:
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

    def _exit(self, task: WireTask, reply: Reply) -> None:
        """The call ``task`` asked the actor to end: it is the last to run."""
        if not self.exiting:
            method = task[7]
            how = "__ray_terminate__" if method == "__ray_terminate__" else "exit_actor()"
            self.exiting = f"the actor exited intentionally ({how} in {self.name}.{method})"
            self._worker.background.spawn(self._worker.actor_client.exit_actor(self.exiting))
        reply(self._died_reply(task))

    def _died_reply(self, task: WireTask) -> WireReply:
        error = exceptions.ActorDiedError(self.exiting)
        return (task[0], False, [serialization.serialize_error(error)], True, [])


def _terminate() -> None:
    raise ActorExitRequest


def _ready() -> bool:
    return True


#: Methods every actor has, as in Ray.
_BUILTIN_METHODS: dict[str, Any] = {"__ray_terminate__": _terminate, "__ray_ready__": _ready}


def _construct(worker: CoreWorker, actor_cls: type, task: WireTask) -> Any:
    args, kwargs = load_args(worker, task)
    return actor_cls(*args, **kwargs)
