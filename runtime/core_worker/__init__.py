"""The core worker: ownership, reference counting, submission and execution.

What the API layer uses: :class:`CoreWorker` (the composition root), its
modes, :class:`Reference` (the base of the public ``ObjectRef``) with the
:class:`RefFactory` it is given, and ``current_task_id`` (the task running
in this context), ``check_blocking_allowed``, and ``ActorExitRequest`` (what
``exit_actor()`` raises), ``failure_object`` (an error as an object that
raises it at ``get``), ``mark_task_output`` (a worker's stdout and stderr
mark each task's output), ``object_locations`` (where objects are),
``put_owned_by`` (``put(value, _owner=actor)``), and a
worker process's main thread: ``LaneHost`` (it runs the sync tasks) and
``install_interrupts`` (cancelling reaches them).
"""

from ._adoption import put_owned_by
from ._core_worker import CoreWorker
from ._executor import read_start_environment
from ._foreign import await_future, in_asyncio
from ._interrupt import install as install_interrupts
from ._lane import LaneHost
from ._locations import locations as object_locations
from ._loop import check_blocking_allowed
from ._output import install as mark_task_output
from ._reference import NO_OWNER, OwnerAddress, Reference, RefFactory
from ._running import (
    ActorExitRequest,
    current_task,
    current_task_id,
    failure_object,
    logging_context,
    thread_state,
)
from ._states import WorkerMode

__all__ = [
    "NO_OWNER",
    "ActorExitRequest",
    "CoreWorker",
    "LaneHost",
    "OwnerAddress",
    "RefFactory",
    "Reference",
    "WorkerMode",
    "await_future",
    "check_blocking_allowed",
    "current_task",
    "current_task_id",
    "failure_object",
    "in_asyncio",
    "install_interrupts",
    "logging_context",
    "mark_task_output",
    "object_locations",
    "put_owned_by",
    "read_start_environment",
    "thread_state",
]
