"""The exceptions the runtime raises, as in Ray's ``ray.exceptions``.

Every error a user can see derives from :class:`RayError`. Ray's names are
kept as aliases where ours differ (``RayTaskError`` is :class:`TaskError`),
so ``import runtime as ray`` code keeps working.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle


class RayError(Exception):
    """Base of every error raised by the runtime."""


class RaySystemError(RayError):
    """An internal failure of the runtime itself."""


class TaskError(RayError):
    """A task or actor method raised; carries the remote traceback.

    ``get`` raises an instance that is also an instance of the original
    exception's class, so ``except ValueError`` catches a remote
    ``ValueError``. ``cause`` is the original exception when it could be
    pickled and rebuilt where it is read, else ``None`` (the message then says
    why; the class is still the cause's when that can be imported there).
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None = None,
        cause_cls: type | None = None,
        pid: int = 0,
        host: str = "",
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.cause_cls: type = cause_cls or (type(cause) if cause is not None else Exception)
        self.pid = pid
        self.host = host
        # Not super(): in a derived class the next base is the user's
        # exception, whose __init__ takes other arguments.
        Exception.__init__(self, self._message())

    def _message(self) -> str:
        where = f" (pid={self.pid}, host={self.host})" if self.pid else ""
        lines = [line for line in self.traceback_str.strip().splitlines() if line.strip()]
        summary = f": {lines[-1].strip()}" if lines else ""
        # The first line says what failed and why; the remote traceback follows.
        return f"{self.function_name}(){where} failed{summary}\n{self.traceback_str.rstrip()}"

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[Any, ...]:
        # The cause and its class are pickled apart: one that cannot be rebuilt
        # where the error is read (an __init__ that takes other arguments than
        # its ``args``, a class that is not importable there) loses itself, not
        # the error and its traceback.
        return (
            _rebuild_task_error,
            (
                self.function_name,
                self.traceback_str,
                _pickled_cause(self.cause),
                _pickled(self.cause_cls),
                self.pid,
                self.host,
            ),
        )

    def as_instanceof_cause(self) -> TaskError:
        """This error as an instance of both TaskError and the cause's class."""
        cls = self.cause_cls
        if not isinstance(cls, type) or issubclass(cls, TaskError) or cls is Exception:
            return self
        derived = _derived_class(cls)
        if derived is None:
            return self
        try:
            err: TaskError = BaseException.__new__(derived)
        except TypeError:
            # A builtin with its own __new__ (OSError and its kind) must make it;
            # an exception group's takes its message and its exceptions.
            try:
                if isinstance(self.cause, BaseExceptionGroup):
                    group: Any = cls
                    err = group.__new__(derived, self.cause.message, self.cause.exceptions)
                else:
                    err = cls.__new__(derived)
            except Exception:
                return self
        TaskError.__init__(
            err,
            self.function_name,
            self.traceback_str,
            self.cause,
            self.cause_cls,
            self.pid,
            self.host,
        )
        if self.cause is not None:
            # Keep the cause's own attributes (errno, custom fields) reachable.
            try:
                for key, value in vars(self.cause).items():
                    if key not in _TASK_ERROR_FIELDS:
                        err.__dict__[key] = value
            except TypeError:
                pass
            if isinstance(self.cause, OSError) and isinstance(err, OSError):
                err.errno, err.strerror = self.cause.errno, self.cause.strerror
                err.filename = self.cause.filename
        return err


_TASK_ERROR_FIELDS = frozenset(
    {"function_name", "traceback_str", "cause", "cause_cls", "pid", "host"}
)
_DERIVED: dict[type, type | None] = {}


def _derived_class(cls: type) -> type | None:
    if cls in _DERIVED:
        return _DERIVED[cls]
    try:
        derived: type | None = type(
            f"TaskError({cls.__name__})",
            (TaskError, cls),
            {
                "__init__": TaskError.__init__,
                "__str__": TaskError.__str__,
                "__reduce__": TaskError.__reduce__,
                "__module__": cls.__module__,
            },
        )
    except TypeError:  # a layout conflict with a builtin base
        derived = None
    _DERIVED[cls] = derived
    return derived


#: How a task error pickles its cause and the cause's class: cloudpickle, until
#: the runtime's serialization sets its own pickler here (which uses the
#: serializers ``register_serializer`` gave this process; this layer cannot
#: import it).
cause_pickler: Callable[[Any], bytes] = cloudpickle.dumps


def _pickled(value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        return cause_pickler(value)
    except Exception:
        return None  # not picklable: the traceback says what it was


def _pickled_cause(cause: BaseException | None) -> bytes | None:
    """The cause, pickled; one whose ``__init__`` cannot take back its ``args``
    (``MyError(a, b)`` calling ``super().__init__(f"{a}-{b}")``) is pickled as
    its class, args and attributes, and rebuilt without calling ``__init__``."""
    data = _pickled(cause)
    if data is None or cause is None:
        return data
    try:
        pickle.loads(data)
        return data
    except Exception:
        pass
    try:
        return cause_pickler(_CauseState(type(cause), cause.args, dict(vars(cause))))
    except Exception:
        return data  # the reader says why it cannot rebuild it


class _CauseState:
    def __init__(self, cls: type, args: tuple[Any, ...], state: dict[str, Any]) -> None:
        self.cls, self.args, self.state = cls, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_cause, (self.cls, self.args, self.state))


def _rebuild_cause(cls: type, args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    error: BaseException = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def _rebuild_task_error(
    function_name: str,
    traceback_str: str,
    cause: bytes | None,
    cause_cls: bytes | None,
    pid: int,
    host: str,
) -> TaskError:
    notes = []
    rebuilt = []
    for what, data in (("exception", cause), ("exception's class", cause_cls)):
        value = None
        if data is not None:
            try:
                value = pickle.loads(data)
            except Exception as e:
                notes.append(f"(the {what} could not be rebuilt here: {type(e).__name__}: {e})")
        rebuilt.append(value)
    if notes:  # first: the message's summary is the traceback's last line
        traceback_str = f"{notes[0]}\n{traceback_str}"
    return TaskError(function_name, traceback_str, rebuilt[0], rebuilt[1], pid, host)


RayTaskError = TaskError


class TaskCancelledError(RayError):
    """The task was cancelled."""


class GetTimeoutError(RayError, TimeoutError):
    """``get`` did not finish within its timeout."""


class WorkerCrashedError(RayError):
    """The worker running the task died, and no retries were left."""


class NodeDiedError(RayError):
    """The node running the task died, and no retries were left."""


class TaskUnschedulableError(RayError):
    """No node can ever run the task as asked (a hard node affinity to a dead node)."""


class ActorUnschedulableError(RayError):
    """No node can ever host the actor as asked."""


class TaskPlacementGroupRemoved(TaskUnschedulableError):
    """The placement group the task was scheduled into was removed."""


class ActorPlacementGroupRemoved(ActorUnschedulableError):
    """The placement group the actor was scheduled into was removed."""


class RuntimeEnvSetupError(RayError):
    """The task's or actor's runtime environment could not be set up (the cause
    says why: a package missing, unreadable, or a setup past its timeout)."""


class ObjectLostError(RayError):
    """The object's value is gone and cannot be re-created."""

    def __init__(self, object_id_hex: str = "", reason: str = "") -> None:
        self.object_id_hex = object_id_hex
        self.reason = reason
        super().__init__(f"object {object_id_hex} is lost: {reason}" if reason else object_id_hex)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.object_id_hex, self.reason))


class OwnerDiedError(ObjectLostError):
    """The worker that owned the object died, so its value is gone."""


class ObjectFreedError(ObjectLostError):
    """The object was freed by its owner."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object is lost and its task may not run again to rebuild it (it
    allowed no retries)."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    """The object is lost and its task used up its retries rebuilding it."""


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    """The object is lost and its lineage was dropped (``max_lineage_bytes``)."""


class StreamingGeneratorReplayInconsistentError(RaySystemError, ObjectLostError):
    """A streaming generator task run again to rebuild a lost item yielded
    fewer items than its first run: the lost item cannot be made again (the
    generator's output is not deterministic)."""


class ObjectFetchTimedOutError(ObjectLostError):
    """Ray's, for an object that could not be fetched in time; not raised here
    (a ``get`` past its timeout raises :class:`GetTimeoutError`), kept so that
    Ray code catching it runs."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """Ray's, for a reference counting bug; not raised here, kept so that Ray
    code catching it runs."""


class OufOfBandObjectRefSerializationException(RayError):
    """A ref was pickled outside the runtime's own serialization while
    ``allow_out_of_band_object_ref_serialization`` is off (Ray's name, its
    spelling kept)."""


class RayActorError(RayError):
    """Base of the errors of a call whose actor could not run it (as in Ray).

    ``actor_id``: the actor's hex id where the caller knew it, else None."""

    actor_id: str | None = None

    @property
    def error_msg(self) -> str:
        """Ray's name for the message."""
        return str(self)


class ActorDiedError(RayActorError):
    """The actor died; the message says why. ``intended``: this is the result
    of the very call that ended it (``exit_actor()``, ``__ray_terminate__``),
    which its caller asked for: not reported when nobody reads it."""

    def __init__(
        self, message: str = "", intended: bool = False, actor_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.intended = intended
        self.actor_id = actor_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.intended, self.actor_id))


class ActorUnavailableError(RayActorError):
    """The actor's process died with the call sent to it, and the actor was
    restarted: the call may or may not have run, and is not retried
    (``max_task_retries``). Calls made while it restarts wait for it."""

    def __init__(self, message: str = "", actor_id: str | None = None) -> None:
        super().__init__(message)
        self.actor_id = actor_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.actor_id))


class AsyncioActorExit(RayError):
    """Ray's, raised inside an async actor by ``exit_actor()``; here that ends
    the actor the same way with ``ActorExitRequest``; kept so that Ray code
    catching it runs."""


class OutOfMemoryError(RayError):
    """Ray's, for a task killed by its node's memory monitor; not raised here
    (there is no memory monitor), kept so that Ray code catching it runs."""


class OutOfDiskError(RayError):
    """Ray's, for a node whose disk is full; not raised here (spilling fails
    with :class:`ObjectStoreFullError`), kept so that Ray code catching it runs."""


class ObjectStoreFullError(RayError):
    """The object store has no room for the object, even after spilling."""


class ActorAlreadyExistsError(ValueError, RayError):
    """An actor was created with a name its namespace already holds for a
    live actor (a ValueError, as in Ray; ``get_if_exists=True`` returns it)."""


class PendingCallsLimitExceededError(RayError):
    """An actor's ``max_pending_calls`` limit was reached."""


#: Ray's name for it.
PendingCallsLimitExceeded = PendingCallsLimitExceededError


class AuthenticationError(RayError, ConnectionError):
    """The cluster refused this process: it lacks the cluster's token (a
    ConnectionError too, as any failure to reach the cluster)."""


class ActorHandleNotFoundError(ValueError, RayError):
    """An actor handle's actor is unknown here (Ray's name, for except clauses)."""


class RpcError(RayError):
    """A call between the runtime's processes failed (Ray's name, for except clauses)."""


class UserCodeException(RayError):
    """The user's code failed where no task error carries it (Ray's name)."""


class UnserializableException(RayError):
    """An error whose class could not be rebuilt here (Ray's name; ours arrive
    as a TaskError with the cause's text and traceback instead)."""


class ObjectRefStreamEndOfStreamError(RayError):
    """A streaming generator has no more items (Ray's name; iteration ends with
    StopIteration / StopAsyncIteration, as Python's)."""


class GcsLostError(RaySystemError, ConnectionError):
    """The cluster's control service (the gcs) is gone: the cluster has ended,
    and calls that need it fail with this, naming it."""


class LocalRayletDiedError(RaySystemError, ConnectionError):
    """This node's raylet (its scheduler and object store) is gone: the
    process cannot run tasks or move objects any more, and says so, naming it."""


class ArgumentTypeError(TypeError, ValueError):
    """An API call's argument has the wrong type where Ray raises ValueError
    for it (``get(1)``, ``kill(ref)``): both ``except TypeError`` and Ray's
    ``except ValueError`` catch it."""


class RuntimeNotInitializedError(RayError, RuntimeError):
    """An API call was made before ``runtime.init()``."""


class BlockingCallOnLoopError(RayError, RuntimeError):
    """A blocking call was made on an event loop thread; use its ``await`` form."""


__all__ = [
    "ActorAlreadyExistsError",
    "ActorDiedError",
    "ActorHandleNotFoundError",
    "ActorPlacementGroupRemoved",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "ArgumentTypeError",
    "AsyncioActorExit",
    "AuthenticationError",
    "BlockingCallOnLoopError",
    "GcsLostError",
    "GetTimeoutError",
    "LocalRayletDiedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedLineageEvictedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectRefStreamEndOfStreamError",
    "ObjectStoreFullError",
    "OufOfBandObjectRefSerializationException",
    "OutOfDiskError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "PendingCallsLimitExceededError",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "ReferenceCountingAssertionError",
    "RpcError",
    "RuntimeEnvSetupError",
    "RuntimeNotInitializedError",
    "StreamingGeneratorReplayInconsistentError",
    "TaskCancelledError",
    "TaskError",
    "TaskPlacementGroupRemoved",
    "TaskUnschedulableError",
    "UnserializableException",
    "UserCodeException",
    "WorkerCrashedError",
]
