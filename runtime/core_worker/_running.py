"""Running one task or actor call: its arguments in, its reply out.

Shared by the task executor and the actor executor: arguments are unpickled
and results pickled on the thread that runs the function; an exception
becomes a ``TaskError`` reply carrying the traceback (without the runtime's
own frames); a large result goes into this node's store under its return
id; refs nested in results stay pinned here until the owner took them over.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import threading
import traceback
from collections.abc import Awaitable, Callable, Generator, Iterable
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import serialization
from .._private.ids import job_hex, return_id
from .._private.serialization import SerializedObject
from .._private.task_wire import WireReply, WireTask
from ._task_spec import ArgSlot

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

#: Sends a task's reply back to its owner.
#: Sends a task's reply (or, for a streaming task, one of its items first).
Reply = Callable[[Any], None]

#: The id of the task running in this context (thread or coroutine).
current_task_id: contextvars.ContextVar[bytes | None] = contextvars.ContextVar(
    "runtime_current_task_id", default=None
)
#: The task running in this context, as it came (its name marks its output;
#: ``get_runtime_context`` reads its names).
current_task: contextvars.ContextVar[WireTask | None] = contextvars.ContextVar(
    "runtime_current_task", default=None
)

logger = logging.getLogger(__name__)

_HOST = socket.gethostname()


class ActorExitRequest(BaseException):
    """Raised by ``exit_actor()`` in an actor's method: the actor ends after
    this call. A BaseException, so that ``except Exception`` in user code
    does not swallow it (and not SystemExit, which would stop an event loop)."""


class _ThreadState(threading.local):
    #: True on a thread while it runs a sync task: a blocking ``get`` there
    #: lends the task's CPU back to the raylet.
    in_sync_task = False


thread_state = _ThreadState()

#: Raised by a task's code, these end its actor or its worker (SystemExit: the
#: process exits, as in Ray) rather than fail the task. Any other exception,
#: a BaseException of the user's included, is the task's failure: uncaught, it
#: would end the loop's task that serves this worker, and every call would hang.
ENDS_WORKER = (ActorExitRequest, SystemExit)
#: On the loop, a CancelledError is the task's cancellation, not its failure.
ENDS_ASYNC = (ActorExitRequest, SystemExit, asyncio.CancelledError)


def run_sync(worker: CoreWorker, fn: Callable[..., Any], task: WireTask) -> WireReply:
    try:
        args, kwargs = load_args(worker, task)
        result = fn(*args, **kwargs)
    except KeyboardInterrupt:  # how a running sync task is cancelled, as in Ray
        return cancelled_reply(task[0], task[2])
    except ENDS_WORKER:
        raise
    except BaseException as e:
        return error_reply(task[0], task[2], e)
    return result_reply(worker, task, result)


async def run_async(
    worker: CoreWorker, fn: Callable[..., Awaitable[Any]], task: WireTask
) -> WireReply:
    try:
        args, kwargs = load_args(worker, task)
        result = await fn(*args, **kwargs)
    except ENDS_ASYNC:
        raise
    except BaseException as e:
        return error_reply(task[0], task[2], e)
    return result_reply(worker, task, result)


def result_reply(worker: CoreWorker, task: WireTask, result: Any) -> WireReply:
    task_id, name, num_returns = task[0], task[2], task[5]
    values: Iterable[Any] | None
    if type(result) is GeneratorType:
        return _generator_reply(worker, task, result)
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
            return error_reply(task_id, name, err)
    returns: list[SerializedObject] = []
    nested: list[list[tuple[bytes, tuple[str, int, bytes]]]] = []
    pins: list[Any] = []
    try:
        for index, value in enumerate(values):
            try:
                # A large result goes into this node's store under the return's id.
                obj, refs = worker.objects.serialize_value(
                    value, return_id(task_id, index), owner=task[8]
                )
            except Exception as e:
                return error_reply(task_id, name, e, "could not serialize the result: ")
            returns.append(obj)
            nested.append([(r.binary(), r.owner_address) for r in refs])
            pins.extend(refs)
    except ENDS_WORKER:
        raise
    except BaseException as e:  # raised by iterating the result
        return error_reply(task_id, name, e)
    if pins:
        # Held until the result's owner has taken the refs over (ReleasePins).
        worker.post(worker.ownership.pin, task_id, pins)
    # (An empty tuple when no result holds a ref: the usual reply carries no lists.)
    return (task_id, True, returns, False, nested if pins else (), None)


#: The runtime package's directory: its frames lead into a task's own.
_RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def format_remote_error(error: BaseException) -> str:
    """The error with its traceback from the first frame of user code on (all
    of it when it has none: a failure in the runtime itself), as Ray shows a
    task's or an actor constructor's: the executor's frames say nothing."""
    first = frames = error.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(error), error, frames or first))


def error_reply(task_id: bytes, name: str, error: BaseException, note: str = "") -> WireReply:
    tb = note + format_remote_error(error)
    cause: BaseException | None = error
    cause_cls: type = type(error)
    if isinstance(error, exceptions.TaskError):
        # Re-raised from a task this one called: keep the original class at
        # every hop (the message shows each hop's traceback).
        cause, cause_cls = error.cause, error.cause_cls
    err = exceptions.TaskError(name, tb, cause, cause_cls, os.getpid(), _HOST)
    return (task_id, False, [serialization.serialize_error(err)], True, [], None)


def failure_object(error: BaseException) -> SerializedObject:
    """``error`` as an object that raises it at ``get`` (a TaskError of the task
    running here, with its traceback), as a failed task's returns hold it."""
    task = current_task.get()
    return error_reply(b"", task[2] if task is not None else "task", error)[2][0]


def cancelled_reply(task_id: bytes, name: str) -> WireReply:
    """A task cancelled on its worker: as in Ray, its error is a TaskError whose
    cause is a TaskCancelledError (``except RayTaskError`` and ``except
    TaskCancelledError`` both catch it). One cancelled before it reached a
    worker fails with a plain TaskCancelledError, also as in Ray."""
    cause = exceptions.TaskCancelledError(f"{name}() was cancelled")
    error = exceptions.TaskError(
        name, f"TaskCancelledError: {cause}", cause, None, os.getpid(), _HOST
    )
    return (task_id, False, [serialization.serialize_error(error)], False, [], None)


def _generator_reply(
    worker: CoreWorker, task: WireTask, items: Generator[Any, None, None]
) -> WireReply:
    """Ray's generator with a fixed ``num_returns``: item i is return i, each
    stored as it comes (they need not all be in memory at once). As in Ray,
    the returns it did not make hold its error (what it raised, or a
    ValueError when it stopped early), and what comes after the last return
    (another item, or an exception) is logged, not made the task's failure."""
    task_id, name, count = task[0], task[2], task[5]
    returns: list[SerializedObject] = []
    nested: list[list[tuple[bytes, tuple[str, int, bytes]]]] = []
    pins: list[Any] = []
    failure: WireReply | None = None
    try:
        for item in items:
            if len(returns) == count:
                items.close()
                logger.error(
                    "%s() was declared with num_returns=%d but its generator yielded more "
                    "values: those after the first %d are dropped", name, count, count,
                )  # fmt: skip
                break
            try:
                obj, refs = worker.objects.serialize_value(
                    item, return_id(task_id, len(returns)), owner=task[8]
                )
            except Exception as e:
                failure = error_reply(task_id, name, e, "could not serialize the result: ")
                break
            returns.append(obj)
            nested.append([(r.binary(), r.owner_address) for r in refs])
            pins.extend(refs)
    except ENDS_WORKER:
        raise
    except BaseException as e:
        if len(returns) < count:
            failure = error_reply(task_id, name, e)
        else:
            logger.error(
                "%s() raised after its %d returns were made: %s",
                name, count, format_remote_error(e).rstrip(),
            )  # fmt: skip
    if failure is None and len(returns) < count:
        stopped = ValueError(
            f"{name}() was declared with num_returns={count} but its generator "
            f"yielded {len(returns)} value(s)"
        )
        failure = error_reply(task_id, name, stopped)
    if failure is not None:
        if not returns:
            return failure  # it made nothing: the task failed
        missing = count - len(returns)
        returns.extend([failure[2][0]] * missing)
        nested.extend([] for _ in range(missing))
    if pins:
        worker.post(worker.ownership.pin, task_id, pins)
    return (task_id, True, returns, False, nested if pins else (), None)


def _len_of(value: Any) -> str:
    try:
        return f"of length {len(value)}"
    except TypeError:
        return "(not a sequence)"


def load_args(worker: CoreWorker, task: WireTask) -> tuple[list[Any], dict[str, Any]]:
    args_data, resolved = task[3], task[4]
    args, kwargs = worker.objects.deserialize(args_data)
    if resolved:
        values = [worker.objects.deserialize(obj) for obj in resolved]
        args = [values[a.index] if type(a) is ArgSlot else a for a in args]
        kwargs = {k: values[v.index] if type(v) is ArgSlot else v for k, v in kwargs.items()}
    return list(args), kwargs


def logging_context(worker: CoreWorker) -> dict[str, str]:
    """What a job's LoggingConfig adds to each log record, here and now."""
    out = {
        "job_id": job_hex(worker.job_id),
        "worker_id": worker.worker_id.hex(),
        "node_id": worker.node_id.hex(),
    }
    hosted = worker.actor_client.hosted
    if hosted is not None:
        out["actor_id"] = hosted["actor_id"].hex()
        out["actor_name"] = hosted.get("name", "")
    task_id = current_task_id.get()
    if task_id is not None:
        out["task_id"] = task_id.hex()
    task = current_task.get()
    if task is not None:
        out["task_name"] = task[2]
        if worker.executor is not None:
            out["task_func_name"] = worker.executor.function_name(task) or ""
    return out
