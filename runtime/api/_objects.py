"""Objects: ``put``, ``get``, ``wait`` (sync and asyncio) and ``cancel``.

Arguments are checked here, at the call site, with errors that name the
call; the current core worker does the rest.
"""

from __future__ import annotations

import asyncio
import functools
import operator
from collections.abc import Sequence
from typing import Any, TypeVar, cast, overload

from .. import exceptions
from ..core_worker import CoreWorker, check_blocking_allowed, put_owned_by, thread_state
from . import _context
from ._actor_handle import ActorHandle
from ._generator import ObjectRefGenerator, wait_ready
from ._object_ref import ObjectRef

T = TypeVar("T")

_GET_ALT = "await ref` or `await runtime.get_async(refs)"
_WAIT_ALT = "await runtime.wait_async(refs)"
# The checks of long lists run per type, not per item, when all are plain refs
# (``single client wait 1k refs`` checks a list of up to 1,000 refs per call).
_REF_TYPES = frozenset({ObjectRef})
_WAIT_TYPES = frozenset({ObjectRef, ObjectRefGenerator})
_ID = operator.attrgetter("_id")


def _refs_arg(object_refs: Any, call: str) -> tuple[list[ObjectRef], bool]:
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, list | tuple):
        if not _REF_TYPES.issuperset(map(type, object_refs)):
            for i, ref in enumerate(object_refs):
                if not isinstance(ref, ObjectRef):
                    raise TypeError(
                        f"{call}(): item {i} of the list is a {type(ref).__name__}, "
                        f"not an ObjectRef{_hint(ref)}"
                    )
        return list(object_refs), False
    raise exceptions.ArgumentTypeError(
        f"{call}() takes an ObjectRef or a list of ObjectRefs, got "
        f"{type(object_refs).__name__}{_hint(object_refs)}"
    )


def _hint(value: Any) -> str:
    """What was likely meant, for a remote function or method passed uncalled."""
    if getattr(value, "__name__", None) == "remote" and callable(value):
        return " (the .remote method itself: call it, .remote(...), to get a ref)"
    if callable(getattr(value, "remote", None)):
        return " (call .remote(...) on it to get a ref)"
    return ""


def _check_timeout(timeout: Any, call: str) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"{call}(): timeout must be a number of seconds or None")
    if timeout < 0:
        raise ValueError(f"{call}(): timeout must be >= 0, got {timeout}")


def put(value: T, *, _owner: ActorHandle[Any] | None = None) -> ObjectRef[T]:
    """Stores ``value`` in the object store; returns its ref (this process owns it).

    ``_owner`` (Ray's experimental option): the actor that owns the object
    instead, so that it outlives this process while the actor lives; pass the
    actor a ref to it before this process lets go of its own. Blocks until the
    actor (once it is alive) has the object.
    """
    if _owner is None:
        return cast(ObjectRef[T], _context.current_or_init().objects.put(value))
    if not isinstance(_owner, ActorHandle):
        raise exceptions.ArgumentTypeError(
            f"put(_owner=...) takes an actor handle, got {type(_owner).__name__}"
        )
    check_blocking_allowed("put(_owner=...)", _PUT_OWNER_ALT, _context.runtime_loop())
    worker = _context.current_or_init()
    ref = put_owned_by(worker, value, _owner._key, _owner._class_name)
    return cast(ObjectRef[T], ref)


_PUT_OWNER_ALT = "await asyncio.to_thread(runtime.put, value, _owner=actor)"


@overload
def get(object_refs: ObjectRef[T], *, timeout: float | None = None) -> T: ...
@overload
def get(object_refs: Sequence[ObjectRef[T]], *, timeout: float | None = None) -> list[T]: ...
def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value(s) of one ref or a list of refs; blocks until ready.

    Raises the task's error (a :class:`~runtime.exceptions.TaskError` that is
    also an instance of the user's exception class) and
    :class:`~runtime.exceptions.GetTimeoutError` after ``timeout`` seconds.
    An ``ObjectRefGenerator`` is its own value, as in Ray (``get`` of a
    ``num_returns="dynamic"`` task's ref gives a generator too).
    """
    if isinstance(object_refs, ObjectRefGenerator):
        return object_refs
    refs, single = _refs_arg(object_refs, "get")
    _check_timeout(timeout, "get")
    check_blocking_allowed("get", _GET_ALT, _context.runtime_loop())
    values = _context.current_or_init().reader.get(refs, timeout)
    return values[0] if single else values


@overload
async def get_async(
    object_refs: ObjectRef[T], *, timeout: float | None = None, cancel_remote: bool = False
) -> T: ...
@overload
async def get_async(
    object_refs: Sequence[ObjectRef[T]],
    *,
    timeout: float | None = None,
    cancel_remote: bool = False,
) -> list[T]: ...
async def get_async(
    object_refs: Any, *, timeout: float | None = None, cancel_remote: bool = False
) -> Any:
    """``get`` for asyncio (and trio) code: awaits instead of blocking.

    Cancelling the awaiting task cancels only this wait, as in Ray; with
    ``cancel_remote=True`` it also cancels the tasks that make the refs (and
    the tasks they submitted): an opt-in, for this await only.
    """
    if isinstance(object_refs, ObjectRefGenerator):
        return object_refs  # (as get())
    refs, single = _refs_arg(object_refs, "get_async")
    _check_timeout(timeout, "get_async")
    if not isinstance(cancel_remote, bool):
        raise TypeError("get_async(): cancel_remote must be a bool")
    try:
        values = await _context.current_or_init().reader.get_async(refs, timeout)
    except BaseException as e:
        if cancel_remote and _is_cancellation(e):
            for ref in refs:
                cancel(ref)
        raise
    return values[0] if single else values


def _is_cancellation(error: BaseException) -> bool:
    """asyncio's CancelledError, or trio's Cancelled."""
    kind = type(error)
    return isinstance(error, asyncio.CancelledError) or (
        kind.__name__ == "Cancelled" and kind.__module__.startswith("trio")
    )


def _wait_args(
    object_refs: Any, num_returns: Any, timeout: Any, call: str
) -> tuple[list[Any], bool]:
    """The refs (and ObjectRefGenerators, ready when their next item is) to
    wait for, and whether there are generators among them."""
    if isinstance(object_refs, ObjectRef | ObjectRefGenerator):
        raise TypeError(f"{call}() takes a list of ObjectRefs, not a single one")
    if not isinstance(object_refs, list | tuple):
        raise TypeError(
            f"{call}() takes a list of ObjectRefs, got "
            f"{type(object_refs).__name__}{_hint(object_refs)}"
        )
    refs = list(object_refs)
    kinds = set(map(type, refs))
    if not _WAIT_TYPES.issuperset(kinds):
        for i, ref in enumerate(refs):
            if not isinstance(ref, ObjectRef | ObjectRefGenerator):
                raise TypeError(
                    f"{call}(): item {i} of the list is a {type(ref).__name__}, "
                    f"not an ObjectRef{_hint(ref)}"
                )
    plain = kinds <= _REF_TYPES
    distinct = set(map(_ID, refs)) if plain else {_identity(r) for r in refs}
    if len(distinct) != len(refs):
        raise ValueError(f"{call}(): the list of ObjectRefs has duplicates")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int):
        raise TypeError(f"{call}(): num_returns must be an int")
    _check_timeout(timeout, call)
    if not refs:
        return refs, False  # as in Ray: nothing to wait for, ([], []) whatever num_returns says
    if num_returns < 1:
        raise ValueError(f"{call}(): num_returns must be at least 1, got {num_returns}")
    if num_returns > len(refs):
        raise ValueError(
            f"{call}(): num_returns={num_returns} is more than the {len(refs)} "
            f"ObjectRef{'s' if len(refs) != 1 else ''} given"
        )
    return refs, any(issubclass(kind, ObjectRefGenerator) for kind in kinds)


def wait(
    object_refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Splits refs into (ready, not ready) once ``num_returns`` are ready or time is up."""
    refs, generators = _wait_args(object_refs, num_returns, timeout, "wait")
    if not refs:
        return [], []
    check_blocking_allowed("wait", _WAIT_ALT, _context.runtime_loop())
    worker = _context.current_or_init()
    if generators:
        lend_cpu = thread_state.in_sync_task
        return worker.bridge.run_blocking(wait_ready(worker, refs, num_returns, timeout, lend_cpu))
    result = worker.reader.wait(refs, num_returns, timeout, fetch_local=bool(fetch_local))
    return cast(tuple[list[ObjectRef], list[ObjectRef]], result)


async def wait_async(
    object_refs: Sequence[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """``wait`` for asyncio code."""
    refs, generators = _wait_args(object_refs, num_returns, timeout, "wait_async")
    if not refs:
        return [], []
    worker = _context.current_or_init()
    if generators:
        return await worker.bridge.on_own_loop(wait_ready(worker, refs, num_returns, timeout))
    result = await worker.reader.wait_async(
        refs, num_returns, timeout, fetch_local=bool(fetch_local)
    )
    return cast(tuple[list[ObjectRef], list[ObjectRef]], result)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancels the task (or actor call) that makes ``object_ref``.

    A task waiting for its arguments or for a worker is dropped; a running
    ``async def`` task or async actor call gets ``asyncio.CancelledError``; a
    running sync task gets ``KeyboardInterrupt`` raised in its thread, or
    with ``force=True`` its worker is killed. ``get`` then raises
    ``TaskCancelledError``. With ``recursive`` (the default) the tasks it
    submitted are cancelled too. Any process holding the ref may cancel it:
    the request goes to the ref's owner. Cancelling an asyncio task that
    awaits a ref does not cancel the remote task: call this for that.
    """
    if isinstance(object_ref, ObjectRefGenerator):
        object_ref = object_ref.completed()  # the generator's task
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() takes an ObjectRef, got {type(object_ref).__name__}")
    for name, value in (("force", force), ("recursive", recursive)):
        if not isinstance(value, bool):
            raise TypeError(f"cancel(): {name} must be a bool, got {type(value).__name__}")
    worker = _context.current()
    if object_ref.owner_address[2] == worker.worker_id:
        worker.tasks.check_cancel(object_ref.binary(), force)
        worker.post(worker.tasks.cancel, object_ref.binary(), force, recursive)
    else:
        worker.post(_spawn_on, worker, worker.tasks.forward_cancel(object_ref, force, recursive))


def _identity(ref: ObjectRef | ObjectRefGenerator) -> Any:
    return ref.binary() if isinstance(ref, ObjectRef) else ("generator", ref.task_id())


def _spawn_on(worker: CoreWorker, coro: Any) -> None:
    task = worker.background.spawn(coro)
    task.add_done_callback(functools.partial(_context.log_failure, "a background request failed"))
