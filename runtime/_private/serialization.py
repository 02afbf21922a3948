"""Turning values into bytes and back.

A serialized object is ``(metadata, data)``:
- ``VALUE``: ``data`` is a plain pickle;
- ``VALUE_OOB``: ``data`` is a pickle with its out-of-band buffers (protocol 5),
  laid out as in ``_layout``;
- ``IN_STORE``: the value lives in a node's shared-memory store; ``data`` is
  its object id followed by the id of the node that holds it (see
  :func:`in_store` and :func:`store_location`);
- ``ERROR``: ``data`` is a pickled error to raise (a failed task's result).

Values are pickled with cloudpickle (lambdas and classes defined in a driver
script travel). Large buffers (numpy arrays and anything else that supports
pickle protocol 5) are kept out of band, so a value bound for the store is
copied once, straight into shared memory, and read back without a copy.

While a value is pickled, every ``ObjectRef`` inside it is noted: the owner
of such a ref must learn that it escaped into another object or process,
so it is never freed while someone else may still use it.
"""

from __future__ import annotations

import gc
import io
import pickle
import threading
import types
from collections import ChainMap
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import cloudpickle

from .. import exceptions
from . import layout

METADATA_VALUE = 0
METADATA_ERROR = 1
METADATA_VALUE_OOB = 2
METADATA_IN_STORE = 3

# Values of these exact types pickle identically with the stdlib pickler,
# which is several times faster than cloudpickle's for small values.
_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})
_CONTAINERS = frozenset({list, tuple, dict})


def _is_plain(value: Any, budget: list[int]) -> bool:
    """Whether ``value`` holds only plain scalars in lists, tuples and dicts
    (at most ``budget`` items in all): then the standard pickler gives the same
    bytes as cloudpickle's, at a fraction of its cost (no class by value, no
    ref, no out-of-band buffer can be inside)."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if kind not in _CONTAINERS:
        return False
    budget[0] -= len(value)
    if budget[0] < 0:
        return False
    if kind is dict:
        return all(type(k) is str for k in value) and all(
            _is_plain(v, budget) for v in value.values()
        )
    return all(_is_plain(v, budget) for v in value)


_reduce_code = cloudpickle.Pickler.dispatch_table[types.CodeType]


def _code_with_its_file(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, with its file name kept:
    cloudpickle writes ``<dynamic-code>`` instead (for payloads that do not
    depend on where a function was defined), and a remote traceback would
    then name no file and show no line, where Ray's name the user's."""
    make, args = _reduce_code(code)
    # (str items only: comparing the code's bytes to a str warns under ``python -b``.)
    return make, tuple(
        code.co_filename if type(a) is str and a == "<dynamic-code>" else a for a in args
    )


#: Reducers registered by the user for their types (``register_serializer``):
#: this process's own, consulted before cloudpickle's.
_user_reducers: dict[type, Callable[[Any], Any]] = {}


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap(
        _user_reducers, {types.CodeType: _code_with_its_file}, cloudpickle.Pickler.dispatch_table
    )


def register_reducer(cls: type, reducer: Callable[[Any], Any]) -> None:
    """Pickles instances of ``cls`` (exactly) by ``reducer``, in this process."""
    _user_reducers[cls] = reducer


def unregister_reducer(cls: type) -> None:
    _user_reducers.pop(cls, None)


def dumps(value: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None) -> bytes:
    """``cloudpickle.dumps(value, protocol=5)``, with code keeping its file names."""
    with io.BytesIO() as out:
        _Pickler(out, protocol=5, buffer_callback=buffer_callback).dump(value)
        return out.getvalue()


# A task error's cause pickles as values do (with this process's registered serializers).
exceptions.cause_pickler = dumps

#: Node ids are this long; an IN_STORE marker's data ends with one.
NODE_ID_SIZE = 16


class SerializedObject(NamedTuple):
    metadata: int
    data: bytes

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickled by tuple.__new__, in C: a NamedTuple's own __new__ is a
        # Python function, a frame per object in every reply and argument.
        return (tuple.__new__, (SerializedObject, (self.metadata, self.data)))


def in_store(object_id: bytes, node_id: bytes) -> SerializedObject:
    """The marker of an object held in ``node_id``'s store."""
    assert len(node_id) == NODE_ID_SIZE, node_id
    return SerializedObject(METADATA_IN_STORE, object_id + node_id)


def store_location(obj: SerializedObject) -> tuple[bytes, bytes]:
    """An IN_STORE marker's (object id, node id)."""
    return obj.data[:-NODE_ID_SIZE], obj.data[-NODE_ID_SIZE:]


class Pickled(NamedTuple):
    """A value pickled with its out-of-band buffers kept apart."""

    inband: bytes
    buffers: list[memoryview]
    #: The refs pickled inside the value (``ObjectRef``s: opaque at this layer).
    refs: list[Any]

    @property
    def size(self) -> int:
        return layout.plan(len(self.inband), [b.nbytes for b in self.buffers])[0]

    def inline(self) -> SerializedObject:
        if not self.buffers:
            return SerializedObject(METADATA_VALUE, self.inband)
        return SerializedObject(METADATA_VALUE_OOB, layout.encode(self.inband, self.buffers))


class _Context(threading.local):
    refs: list[Any] | None = None


_context = _Context()


def note_ref(ref: Any) -> bool:
    """Called by ``ObjectRef.__reduce__``: records a ref pickled inside a value
    the runtime serializes; False when the pickling is someone else's (out of
    band: user code calling a pickler itself)."""
    refs = _context.refs
    if refs is None:
        return False
    refs.append(ref)
    return True


def small_scalar(value: Any, limit: int) -> SerializedObject | None:
    """A plain scalar's inline object when it is under ``limit`` bytes in all
    (a small result's path: no Pickled, no layout plan), else None."""
    kind = type(value)
    if kind not in _PLAIN_TYPES or (kind in (str, bytes) and len(value) >= limit):
        return None  # (a long one is not pickled here only to be pickled again)
    data = pickle.dumps(value, protocol=5)
    if layout.plan(len(data), ())[0] >= limit:  # (Pickled.size, with no buffers)
        return None
    return SerializedObject(METADATA_VALUE, data)


def pickle_value(value: Any) -> Pickled:
    """Pickles ``value``, keeping large buffers out of band and noting its refs."""
    if type(value) in _PLAIN_TYPES or _is_plain(value, [64]):
        return Pickled(pickle.dumps(value, protocol=5), [], [])
    outer = _context.refs
    refs: list[Any] = []
    buffers: list[pickle.PickleBuffer] = []
    _context.refs = refs
    try:
        inband = dumps(value, buffers.append)
    finally:
        _context.refs = outer
    return Pickled(inband, [b.raw() for b in buffers], refs)


#: Said by errors of values that do not pickle.
INSPECT_HINT = "runtime.util.inspect_serializability() shows which part does not pickle"


def serialize_error(error: BaseException) -> SerializedObject:
    """Pickles an error to be raised at ``get``; never fails."""
    try:
        return SerializedObject(METADATA_ERROR, dumps(error))
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
            return SerializedObject(METADATA_ERROR, dumps(stripped))
        except Exception:
            stripped = exceptions.TaskError(
                error.function_name, error.traceback_str, None, None, error.pid, error.host
            )
            return SerializedObject(METADATA_ERROR, dumps(stripped))
    return SerializedObject(
        METADATA_ERROR,
        pickle.dumps(exceptions.RaySystemError(f"{type(error).__name__}: {error}")),
    )


StoreReader = Callable[[bytes], Any]


#: Pickles this large (in band) are read with the cyclic collector paused.
#: Unpickling many small objects (a list of 10,000 refs) otherwise triggers
#: collections that find them all alive, promote them, and so bring on full
#: collections: 45% of reading such a list went to the collector.
GC_PAUSE_BYTES = 64 * 1024
_gc_lock = threading.Lock()
# Invariant: _gc_paused[0] is the number of loads in progress with the
# collector paused; _gc_paused[1] whether the first of them found it enabled
# (only then does the last one enable it again).
_gc_paused: list[Any] = [0, False]


def loads(data: bytes | memoryview, buffers: Iterable[Any] | None = None) -> Any:
    """``pickle.loads``, with the collector paused while a large pickle is read."""
    if len(data) < GC_PAUSE_BYTES:
        return pickle.loads(data, buffers=buffers)
    with _gc_lock:
        if _gc_paused[0] == 0:
            _gc_paused[1] = gc.isenabled()
            gc.disable()
        _gc_paused[0] += 1
    try:
        return pickle.loads(data, buffers=buffers)
    finally:
        with _gc_lock:
            _gc_paused[0] -= 1
            if _gc_paused[0] == 0 and _gc_paused[1]:
                gc.enable()


def deserialize(obj: SerializedObject, store: StoreReader | None = None) -> Any:
    """The value, or raises the error the object holds.

    ``store`` reads an ``IN_STORE`` value from this node's object store.
    """
    metadata = obj.metadata
    if metadata == METADATA_VALUE:
        return loads(obj.data)
    if metadata == METADATA_VALUE_OOB:
        inband, buffers = layout.read(memoryview(obj.data))
        return loads(inband, buffers)
    if metadata == METADATA_IN_STORE:
        if store is None:
            raise exceptions.RaySystemError("an object in the store was read with no store client")
        return store(obj.data[:-NODE_ID_SIZE])
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


def node_died_under(obj: SerializedObject) -> BaseException | None:
    """The error, if a task's error reply says the raylet of the node it ran on
    died under it (its worker dies too): a system failure of the worker, to be
    retried as one, not the task's own error."""
    if not is_error(obj) or b"LocalRayletDiedError" not in obj.data:
        return None
    try:
        error = error_of(obj)
    except Exception:
        return None
    cause = getattr(error, "cause", error)
    return cause if isinstance(cause, exceptions.LocalRayletDiedError) else None


def first_error(objs: Sequence[SerializedObject | None]) -> SerializedObject | None:
    """The first error among objects read (in list order), if any."""
    for obj in objs:
        if obj is not None and is_error(obj):
            return obj
    return None
