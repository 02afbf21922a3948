"""Turning values into bytes and back.

A serialized object is ``(metadata, data)``: ``metadata`` says whether
``data`` is a pickled value or a pickled error (a failed task's result).
Values are pickled with cloudpickle (so lambdas and classes defined in a
driver script travel), protocol 5.

While a value is pickled, every ``ObjectRef`` inside it is noted: the owner
of such a ref must learn that it escaped into another object or process,
so it is never freed while someone else may still use it.
"""

from __future__ import annotations

import pickle
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import cloudpickle

from . import exceptions

if TYPE_CHECKING:
    from ._object_ref import ObjectRef

METADATA_VALUE = 0
METADATA_ERROR = 1

# Values of these exact types pickle identically with the stdlib pickler,
# which is several times faster than cloudpickle's for small values.
_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})


class SerializedObject(NamedTuple):
    metadata: int
    data: bytes


class _Context(threading.local):
    refs: list[ObjectRef] | None = None


_context = _Context()


def note_ref(ref: ObjectRef) -> None:
    """Called by ``ObjectRef.__reduce__``: records a ref pickled inside a value."""
    refs = _context.refs
    if refs is not None:
        refs.append(ref)


def dumps_with_refs(value: Any) -> tuple[bytes, list[ObjectRef]]:
    """Pickles ``value``; returns the bytes and the refs found inside it."""
    if type(value) in _PLAIN_TYPES:
        return pickle.dumps(value, protocol=5), []
    outer = _context.refs
    refs: list[ObjectRef] = []
    _context.refs = refs
    try:
        return cloudpickle.dumps(value, protocol=5), refs
    finally:
        _context.refs = outer


def serialize(value: Any) -> tuple[SerializedObject, list[ObjectRef]]:
    data, refs = dumps_with_refs(value)
    return SerializedObject(METADATA_VALUE, data), refs


def serialize_error(error: BaseException) -> SerializedObject:
    """Pickles an error to be raised at ``get``; never fails."""
    try:
        return SerializedObject(METADATA_ERROR, cloudpickle.dumps(error, protocol=5))
    except Exception:
        pass
    if isinstance(error, exceptions.TaskError):
        # The user's exception did not pickle: keep its class and traceback.
        try:
            stripped = exceptions.TaskError(
                error.function_name,
                error.traceback_str,
                None,
                error.cause_cls,
                error.pid,
                error.host,
            )
            return SerializedObject(METADATA_ERROR, cloudpickle.dumps(stripped, protocol=5))
        except Exception:
            stripped = exceptions.TaskError(
                error.function_name, error.traceback_str, None, None, error.pid, error.host
            )
            return SerializedObject(METADATA_ERROR, cloudpickle.dumps(stripped, protocol=5))
    return SerializedObject(
        METADATA_ERROR,
        pickle.dumps(exceptions.RaySystemError(f"{type(error).__name__}: {error}")),
    )


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def deserialize(obj: SerializedObject) -> Any:
    """The value, or raises the error the object holds."""
    if obj.metadata == METADATA_VALUE:
        return pickle.loads(obj.data)
    raise error_of(obj)


def error_of(obj: SerializedObject) -> BaseException:
    error = pickle.loads(obj.data)
    if isinstance(error, exceptions.TaskError):
        return error.as_instanceof_cause()
    if not isinstance(error, BaseException):
        return exceptions.RaySystemError(f"malformed error object: {error!r}")
    return error


def is_error(obj: SerializedObject) -> bool:
    return obj.metadata == METADATA_ERROR
