"""Task events: this process's task state changes, sent to the gcs in batches.

The owner of a task records its definition and its way to a worker
(PENDING_ARGS_AVAIL, PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER), then,
from the reply, when the worker ran it (RUNNING, the end) and how it ended
(FINISHED, FAILED, with the error): one row per attempt reaches the gcs. The
worker that runs a task only stamps its reply with (start, end, pid), and
reports the attempts still running when a batch leaves (a long task shows as
RUNNING while it runs), and actor creations (whose owner, the gcs, records
nothing). The row layout is ``_private/task_events.py``'s. An attempt's
states before its reply wait on its spec (``DEFERRED_ROW``): the usual
attempt's row is made whole from its reply, in one call.

Invariants: rows are recorded on the loop only (executor threads only add to
and remove from ``_running``, one dict operation each), in a
``te.RowBuffer`` (columns: no object per row for the cyclic collector); the
encoding into JSON happens once per period, off the path of the task; at
most ``task_events_max_buffer_size`` attempts wait between batches; more
are dropped and counted, and the count travels with the next batch. A
spec whose ``event_row`` is ``DEFERRED_ROW`` in the open batch is pending
(``TaskManager.pending``): ``flush`` makes its row before the batch leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import rpc
from .._private import task_events as te
from .._private.task_wire import KIND_ACTOR_CALL, KIND_ACTOR_CREATION, WireReply, WireTask
from ..protocol.rt import AddTaskEventsRequest
from ._task_spec import DEFERRED_ROW

if TYPE_CHECKING:
    from .._private.push_stream import PushStream
    from ._core_worker import CoreWorker
    from ._task_spec import TaskSpec

logger = logging.getLogger(__name__)

_TYPES = {KIND_ACTOR_CALL: te.ACTOR_TASK, KIND_ACTOR_CREATION: te.ACTOR_CREATION_TASK}

_N = te.NUM_STATES
_pack_times = te.ROW_TIMES.pack


class TaskEvents:
    def __init__(self, worker: CoreWorker) -> None:
        config = worker.config
        self._worker = worker
        self.enabled = config.enable_task_events
        self._interval = config.task_events_report_interval_s
        self._max = config.task_events_max_buffer_size
        # Rows are merged as events come: one per attempt between batches.
        self._rows = te.RowBuffer(self._max)
        self._batch = 0  # the open batch's number (TaskSpec.event_batch)
        # Attempts running here (a worker's), with their start, and those of
        # them already reported as running.
        self._running: dict[tuple[bytes, int], int] = {}
        self._reported: set[tuple[bytes, int]] = set()
        self._pid = os.getpid()
        # Who ran an attempt, by (worker id, node id, pid): one shared info each.
        self._ran_by: dict[tuple[bytes, bytes, int], dict[str, Any]] = {}
        self._flusher: asyncio.Task[None] | None = None
        # The definitions' info, shared by the tasks of one function (the hot
        # path builds no dict for them), and actor calls' info by actor.
        self._definitions: dict[tuple[bytes, str, int, bytes | None], dict[str, Any]] = {}
        self._actors: dict[bytes, dict[str, Any]] = {}

    # -- recording (the loop) -------------------------------------------------------------
    def record(
        self, task_id: bytes, attempt: int, state: str, info: dict[str, Any] | None = None
    ) -> None:
        if self.enabled:
            self._record_at(self._rows.row(task_id, attempt), te.STATE_ORDER[state], info)

    def _record_at(self, i: int, state: int, info: dict[str, Any] | None) -> None:
        if i < 0:
            return
        rows = self._rows
        slot = i * _N + state
        if not rows.times[slot]:  # the earliest report of a state wins
            rows.times[slot] = time.time_ns() // 1000
        if info:
            rows.add_info(i, info)

    def _row_of(self, spec: TaskSpec) -> int:
        """The task's attempt's row in the open batch, made if need be (-1: the
        batch is full, or the task's events are off)."""
        if not spec.events:
            return -1
        if spec.event_batch == self._batch:
            i = spec.event_row
            return self._make_row(spec) if i == DEFERRED_ROW else i
        i = spec.event_row = self._rows.row(spec.task_id, spec.attempt)
        spec.event_batch = self._batch
        return i

    def _make_row(self, spec: TaskSpec) -> int:
        """A deferred attempt's row, from what its spec kept (merged into the
        attempt's row if something else made one)."""
        rows = self._rows
        i = spec.event_row = rows.row(spec.task_id, spec.attempt)
        if i < 0:
            return i
        times, base = rows.times, i * _N
        for slot, at in (
            (te.PENDING_ARGS_AVAIL_SLOT, spec.event_first),
            (te.PENDING_NODE_ASSIGNMENT_SLOT, spec.event_assigned),
            (te.SUBMITTED_TO_WORKER_SLOT, spec.event_pushed),
        ):
            if at and not times[base + slot]:
                times[base + slot] = at
        rows.add_info(i, spec.event_info)
        if spec.event_actor is not None:
            rows.add_info(i, spec.event_actor)
        return i

    def record_task(self, spec: TaskSpec, state: int, info: dict[str, Any] | None = None) -> None:
        """The owner's record of a state of its task's current attempt."""
        if self.enabled:
            self._record_at(self._row_of(spec), state, info)

    # -- the worker's side (the loop or an executor thread) -----------------------------
    def started(self, task: WireTask) -> int:
        """A task starts running here: its start (unix us), kept until :meth:`forget`;
        0 if its events are off (nothing is reported of it)."""
        if not self.enabled or not task[10]:
            return 0
        now = time.time_ns() // 1000
        self._running[(task[0], task[9])] = now
        return now

    def forget(self, task: WireTask) -> None:
        """The task stopped running here."""
        if self._running:
            self._running.pop((task[0], task[9]), None)

    def stamp(self, reply: WireReply, start: int) -> WireReply:
        """The reply, saying when the task ran here (its owner records it);
        ``start``: what :meth:`started` gave (0: not stamped)."""
        if not start:
            return reply
        return (
            reply[0],
            reply[1],
            reply[2],
            reply[3],
            reply[4],
            (start, time.time_ns() // 1000, self._pid),
        )

    # -- the owner's side ----------------------------------------------------------------
    def ran(self, spec: TaskSpec, reply: WireReply, stream: PushStream) -> bool:
        """A reply came on ``stream``: when and where the attempt ran, from its
        stamp. True if that recorded the attempt's end (the owner's own record
        of it would only repeat it)."""
        stamp = reply[5]
        if not self.enabled or stamp is None:
            return False
        start, end, pid = stamp
        peer = stream.peer
        key = (peer[0], peer[1], pid)
        info = self._ran_by.get(key)
        if info is None:
            if len(self._ran_by) > 10_000:
                self._ran_by.clear()
            info = self._ran_by[key] = {
                "node_id": peer[1].hex(),
                "worker_id": peer[0].hex(),
                "worker_pid": pid,
            }
        rows = self._rows
        if spec.event_row == DEFERRED_ROW and spec.event_batch == self._batch and reply[1]:
            # The usual attempt: its row made whole, at once.
            defined, actor, pushed = spec.event_info, spec.event_actor, spec.event_pushed
            i = rows.whole(
                spec.task_id,
                spec.attempt,
                _pack_times(spec.event_first, spec.event_assigned, pushed, start, end, 0),
                (defined, info) if actor is None else (defined, actor, info),
                (id(defined), id(actor), id(info)),
            )
            if i != -2:
                spec.event_row = i
                return True
        i = self._row_of(spec)
        if i < 0:
            return False
        times, base = rows.times, i * _N
        if not times[base + te.RUNNING_SLOT]:
            times[base + te.RUNNING_SLOT] = start
        times[base + (te.FINISHED_SLOT if reply[1] else te.FAILED_SLOT)] = end
        rows.add_info(i, info)
        return True

    def submitted(self, spec: TaskSpec, state: int = te.PENDING_ARGS_AVAIL_SLOT) -> None:
        """The owner registers a task (or retries it): its definition and first state."""
        if not self.enabled or not spec.events:
            return
        # Shared by the tasks of one definition: plain tasks (one CPU, no
        # group) and an actor's calls of one method.
        shared = spec.extra is None or spec.kind == KIND_ACTOR_CALL
        key = (spec.function_id, spec.name, spec.kind, spec.parent_id)
        info = self._definitions.get(key) if shared else None
        if info is None:
            info = self._definition(spec)
            if shared:
                if len(self._definitions) > 10_000:
                    self._definitions.clear()
                self._definitions[key] = info
        # A new attempt (or a retry): its states wait on its spec, and its row
        # is made whole from its reply (in the usual case, one call instead of
        # a row lookup and an info per state), or when anything else happens
        # to it, or when the batch leaves (``flush``).
        now = time.time_ns() // 1000
        spec.event_batch = self._batch
        spec.event_row = DEFERRED_ROW
        if state == te.PENDING_ARGS_AVAIL_SLOT:
            spec.event_first, spec.event_assigned = now, 0
        else:  # (a retry: PENDING_NODE_ASSIGNMENT)
            spec.event_first, spec.event_assigned = 0, now
        spec.event_pushed = 0
        spec.event_info = info
        spec.event_actor = None

    def assigning(self, spec: TaskSpec) -> None:
        """The task is handed to the submitter: PENDING_NODE_ASSIGNMENT."""
        if spec.event_row == DEFERRED_ROW and spec.event_batch == self._batch:
            if not spec.event_assigned:
                spec.event_assigned = time.time_ns() // 1000
            return
        self.record_task(spec, te.PENDING_NODE_ASSIGNMENT_SLOT)

    def _definition(self, spec: TaskSpec) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": spec.name,
            "func_or_class_name": spec.name,
            "type": _TYPES.get(spec.kind, te.NORMAL_TASK),
            "required_resources": spec.resources,
        }
        if spec.parent_id:
            info["parent_task_id"] = spec.parent_id.hex()
        if spec.kind == KIND_ACTOR_CREATION:
            info["actor_id"] = spec.extra["actor_id"].hex()
            placement = spec.extra.get("placement")
        elif spec.kind == KIND_ACTOR_CALL:
            placement = None  # (its extra is the method: the actor's group is its creation's)
        else:
            placement = spec.extra[3] if spec.extra and len(spec.extra) > 3 else None
        if placement:
            info["placement_group_id"] = placement[0]
        return info

    def failed(self, spec: TaskSpec, error: BaseException | None) -> None:
        """The attempt failed (the owner's word): with the error's type and message."""
        if not self.enabled or not spec.events:
            return
        info = {"error_type": error_type(error), "error_message": str(error)[: te.MAX_MESSAGE]}
        self.record_task(spec, te.FAILED_SLOT, info)

    def pushed(self, spec: TaskSpec, worker_id: bytes) -> None:
        """Sent to a worker (which tells where it runs when it starts it)."""
        if spec.event_row == DEFERRED_ROW and spec.event_batch == self._batch:
            if not spec.event_pushed:
                spec.event_pushed = time.time_ns() // 1000
            return
        self.record_task(spec, te.SUBMITTED_TO_WORKER_SLOT)

    def actor_call_pushed(self, spec: TaskSpec, actor_id: bytes) -> None:
        if not self.enabled or not spec.events:
            return
        info = self._actors.get(actor_id)
        if info is None:
            if len(self._actors) > 10_000:
                self._actors.clear()
            info = self._actors[actor_id] = {"actor_id": actor_id.hex()}
        if spec.event_row == DEFERRED_ROW and spec.event_batch == self._batch:
            if not spec.event_pushed:
                spec.event_pushed = time.time_ns() // 1000
            spec.event_actor = info
            return
        self.record_task(spec, te.SUBMITTED_TO_WORKER_SLOT, info)

    # -- sending (the loop) -----------------------------------------------------------
    def start(self) -> None:
        if self.enabled and self._flusher is None:
            self._flusher = self._worker.background.spawn(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Sends what was recorded since the last batch (a lost gcs loses it)."""
        # The attempts still on their way: their rows, with their states so far
        # (``list_tasks`` shows a long-pending task as pending).
        open_batch = self._batch
        for spec in self._worker.tasks.pending.values():
            if spec.event_row == DEFERRED_ROW and spec.event_batch == open_batch:
                self._make_row(spec)
        rows, self._rows = self._rows, te.RowBuffer(self._max)
        self._batch += 1
        if self._running or self._reported:
            running = list(self._running.items())
            self._reported &= {key for key, _ in running}
            for key, start in running:
                if key not in self._reported and rows.find(*key) is None:
                    self._reported.add(key)
                    i = rows.row(*key)
                    if i >= 0:
                        rows.times[i * _N + te.RUNNING_SLOT] = start
        if not rows and not rows.dropped:
            return
        worker = self._worker
        batch = rows.encode()
        request = AddTaskEventsRequest(
            job_id=worker.job_id,
            worker_id=worker.worker_id,
            node_id=worker.node_id,
            pid=os.getpid(),
            rows=batch.rows,
            dropped=rows.dropped,
            ids=batch.ids,
            attempts=batch.attempts,
            times=batch.times,
        )
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await asyncio.wait_for(worker.gcs.add_task_events(request), 5.0)


def error_type(error: BaseException | None) -> str:
    """Ray's ``error_type`` for the exception a task failed with."""
    table: list[tuple[type[BaseException], str]] = [
        (exceptions.TaskCancelledError, "TASK_CANCELLED"),
        (exceptions.WorkerCrashedError, "WORKER_DIED"),
        (exceptions.ActorDiedError, "ACTOR_DIED"),
        (exceptions.RuntimeEnvSetupError, "RUNTIME_ENV_SETUP_FAILED"),
        (exceptions.TaskUnschedulableError, "TASK_UNSCHEDULABLE_ERROR"),
        (exceptions.ObjectLostError, "OBJECT_LOST"),
        (exceptions.LocalRayletDiedError, "LOCAL_RAYLET_DIED"),
        (exceptions.NodeDiedError, "NODE_DIED"),
        (exceptions.TaskError, "TASK_EXECUTION_EXCEPTION"),
    ]
    for kind, name in table:
        if isinstance(error, kind):
            return name
    return "SYSTEM_ERROR"
