"""A call's arguments, pickled on the caller's thread.

Shared by tasks, actor creations and actor calls: every top-level ref is
set aside (an :class:`ArgSlot` stands in its place; the owner resolves it
before the task runs), refs nested inside values are noted (held until the
reply), and arguments too large to travel inline are put into the store
first and passed by ref, so the worker reads them from shared memory.
A value that cannot be pickled raises a ``TypeError`` naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._private import serialization
from .._private.serialization import SerializedObject
from ._reference import Reference
from ._task_spec import ArgSlot

if TYPE_CHECKING:
    from ._core_worker import CoreWorker


def serialize_args(
    worker: CoreWorker, name: str, args: Sequence[Any], kwargs: dict[str, Any]
) -> tuple[SerializedObject, Sequence[Reference], Sequence[Reference]]:
    """The pickled ``(args, kwargs)``, the top-level refs and the nested refs
    (an empty tuple for none: no list per call)."""
    if not args and not kwargs:
        return _NO_ARGS, (), ()
    arg_refs: list[Reference] = []

    def slot(value: Any) -> Any:
        if isinstance(value, Reference):
            arg_refs.append(value)
            return ArgSlot(len(arg_refs) - 1)
        return value

    plain_args = [slot(a) for a in args]
    plain_kwargs = {k: slot(v) for k, v in kwargs.items()}
    try:
        pickled = serialization.pickle_value((plain_args, plain_kwargs))
    except Exception as e:
        raise _argument_error(name, args, kwargs, e) from e
    limit = worker.config.max_inline_object_size
    if pickled.size >= limit and worker.store_client is not None:
        plain_args = [slot(_maybe_put(worker, a, limit)) for a in plain_args]
        plain_kwargs = {k: slot(_maybe_put(worker, v, limit)) for k, v in plain_kwargs.items()}
        pickled = serialization.pickle_value((plain_args, plain_kwargs))
    return pickled.inline(), arg_refs or (), pickled.refs or ()


#: A call without arguments (many are): pickled once.
_NO_ARGS = serialization.pickle_value(([], {})).inline()


def _maybe_put(worker: CoreWorker, value: Any, limit: int) -> Any:
    """A large argument becomes a ref to it in the store."""
    if isinstance(value, ArgSlot) or type(value) in (int, float, bool, type(None)):
        return value
    if serialization.pickle_value(value).size < limit:
        return value
    return worker.objects.put(value)


def _argument_error(
    name: str, args: Sequence[Any], kwargs: dict[str, Any], error: Exception
) -> TypeError:
    """Names the argument that could not be pickled."""
    labelled = [(f"argument {i}", a) for i, a in enumerate(args)]
    labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in labelled:
        if isinstance(value, Reference):
            continue
        try:
            serialization.pickle_value(value)
        except Exception as e:
            return TypeError(
                f"{name}(): could not serialize {label} of type {type(value).__name__}: {e} "
                f"({serialization.INSPECT_HINT})"
            )
    return TypeError(f"{name}(): could not serialize the arguments: {error}")
