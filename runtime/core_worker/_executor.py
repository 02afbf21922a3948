"""Running tasks in a worker process.

Normal tasks run one at a time, in the order they arrive (a lease is one
CPU's worth of work). A sync function runs on the executor thread, so the
loop keeps serving RPCs (object requests, new pushes) meanwhile; an
``async def`` function runs on the loop itself. Arguments are unpickled and
results pickled on the thread that runs the function.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import os
import pickle
import socket
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .. import _serialization, exceptions
from .._serialization import SerializedObject
from ._task_spec import ArgSlot, WireReply, WireTask

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger(__name__)

#: The id of the task running in this context (thread or coroutine).
current_task_id: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "runtime_current_task_id", default=None
)


class _ThreadState(threading.local):
    #: True on the executor thread while it runs a sync task: a blocking
    #: ``get`` there lends the task's CPU back to the raylet.
    in_sync_task = False


thread_state = _ThreadState()


class TaskExecutor:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self._queue: asyncio.Queue[tuple[WireTask, Callable[[WireReply], None]]] = asyncio.Queue()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="runtime-task")
        self._functions: dict[bytes, Callable[..., Any]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._host = socket.gethostname()

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except BaseException:
                pass
        self._thread.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, task: WireTask, reply: Callable[[WireReply], None]) -> None:
        self._queue.put_nowait((task, reply))

    async def _run(self) -> None:
        while True:
            task, reply = await self._queue.get()
            try:
                result = await self._execute(task)
            except Exception as e:  # the runtime's own failure, not the task's
                logger.exception("executing task %s failed", task[2])
                error = _serialization.serialize_error(exceptions.RaySystemError(repr(e)))
                result = (task[0], False, [error], False)
            reply(result)

    async def _load(self, function_id: bytes) -> Callable[..., Any]:
        cached = self._functions.get(function_id)
        if cached is not None:
            return cached
        data = await self._worker.fetch_function(function_id)
        loop = asyncio.get_running_loop()
        fn: Callable[..., Any] = await loop.run_in_executor(self._thread, pickle.loads, data)
        self._functions[function_id] = fn
        return fn

    async def _execute(self, task: WireTask) -> WireReply:
        task_id, function_id, name, _, _, _ = task
        try:
            fn = await self._load(function_id)
        except Exception as e:
            return self._error_reply(task_id, name, e)
        token = current_task_id.set(task_id)
        try:
            if inspect.iscoroutinefunction(fn):
                return await self._execute_async(fn, task)
            loop = asyncio.get_running_loop()
            ctx = contextvars.copy_context()
            return await loop.run_in_executor(self._thread, ctx.run, self._execute_sync, fn, task)
        finally:
            current_task_id.reset(token)

    def _execute_sync(self, fn: Callable[..., Any], task: WireTask) -> WireReply:
        thread_state.in_sync_task = True
        try:
            try:
                args, kwargs = _load_args(task)
                result = fn(*args, **kwargs)
            except Exception as e:
                return self._error_reply(task[0], task[2], e)
            return self._result_reply(task, result)
        finally:
            thread_state.in_sync_task = False

    async def _execute_async(self, fn: Callable[..., Awaitable[Any]], task: WireTask) -> WireReply:
        try:
            args, kwargs = _load_args(task)
            result = await fn(*args, **kwargs)
        except Exception as e:
            return self._error_reply(task[0], task[2], e)
        return self._result_reply(task, result)

    def _result_reply(self, task: WireTask, result: Any) -> WireReply:
        task_id, _, name, _, _, num_returns = task
        values: list[Any] | None
        if num_returns == 1:
            values = [result]
        elif num_returns == 0:
            values = []
        else:
            try:
                values = list(result)
            except TypeError:
                values = None
            if values is None or len(values) != num_returns:
                err = ValueError(
                    f"{name}() was declared with num_returns={num_returns} "
                    f"but returned {type(result).__name__} {_len_of(result)}"
                )
                return self._error_reply(task_id, name, err)
        returns: list[SerializedObject] = []
        assert values is not None
        for value in values:
            try:
                obj, refs = _serialization.serialize(value)
            except Exception as e:
                return self._error_reply(task_id, name, e, "could not serialize the result: ")
            self._worker.note_escaped(refs)
            returns.append(obj)
        return (task_id, True, returns, False)

    def _error_reply(
        self, task_id: bytes, name: str, error: BaseException, note: str = ""
    ) -> WireReply:
        # Skip the executor's own frame: the traceback starts in user code.
        frames = error.__traceback__.tb_next if error.__traceback__ is not None else None
        tb = note + "".join(traceback.format_exception(type(error), error, frames))
        err = exceptions.TaskError(name, tb, error, type(error), os.getpid(), self._host)
        return (task_id, False, [_serialization.serialize_error(err)], True)


def _len_of(value: Any) -> str:
    try:
        return f"of length {len(value)}"
    except TypeError:
        return "(not a sequence)"


def _load_args(task: WireTask) -> tuple[list[Any], dict[str, Any]]:
    _, _, _, args_data, resolved, _ = task
    args, kwargs = pickle.loads(args_data)
    if resolved:
        values = [_serialization.deserialize(obj) for obj in resolved]
        args = [values[a.index] if type(a) is ArgSlot else a for a in args]
        kwargs = {k: values[v.index] if type(v) is ArgSlot else v for k, v in kwargs.items()}
    return list(args), kwargs
