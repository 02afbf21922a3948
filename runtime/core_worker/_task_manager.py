"""The owner's side of its tasks: from ``.remote()`` to a stored result.

:class:`TaskManager` keeps every pending task this process owns (normal
tasks and actor calls) and moves each through its states (``TaskState``:
RESOLVING -> QUEUED -> PUSHED -> FINISHED): it registers the task's results
and argument counts, waits for its definition's export and its ref
arguments, hands it to the submitter, and takes the replies: results stored
(and their nested refs taken over), application errors retried under
``retry_exceptions``, worker deaths retried within ``max_retries``, then
failed with the error that names the cause. Cancellation marks or withdraws
the task wherever it is.

Invariant: a task is in ``pending`` from registration until it is FINISHED;
while it is, its top-level ref arguments count as submitted at the
reference counter, and its nested refs are held by ``spec.nested``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import placement, rpc, serialization
from .._private import task_events as te
from .._private.ids import return_ids_of, task_of
from .._private.push_stream import PushStream
from .._private.serialization import SerializedObject
from .._private.task_wire import (
    KIND_ACTOR_CALL,
    KIND_ACTOR_CREATION,
    Placement,
    ReleasePins,
    WireReply,
    task_extra,
)
from ..protocol.rt import CancelTaskRequest, CoreWorkerStub
from ._arguments import serialize_args
from ._reference import Reference
from ._running import current_task_id
from ._states import State
from ._task_spec import TaskSpec, TaskState

if TYPE_CHECKING:
    from ._core_worker import CoreWorker

logger = logging.getLogger("runtime")


class TaskManager:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self.pending: dict[bytes, TaskSpec] = {}
        # "name() result", the call site of a task's results, made once per name.
        self._result_sites: dict[str, str] = {}

    # -- submission (any thread) -------------------------------------------------------
    def submit_task(
        self,
        *,
        function_id: bytes,
        function_data: bytes,
        name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        num_returns: int,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: bool | tuple[type[BaseException], ...],
        strategy: Any = None,
        max_calls: int = 0,
        placement: Placement | None = None,
        runtime_env: str = "",
        events: bool = True,
    ) -> list[Reference]:
        """Submits a task from any thread; raises at once on bad arguments."""
        worker = self._worker
        worker.check_cluster()
        args_data, arg_refs, nested = serialize_args(worker, name, args, kwargs)
        task_id = worker.ids.task_id()
        # A streaming task (num_returns < 0) returns its item count; items come apart.
        count = 1 if num_returns < 0 else num_returns
        return_ids = return_ids_of(task_id, count)
        # (Its required fields positionally, the rest set after: see TaskSpec.)
        spec = TaskSpec(
            task_id, function_id, name, args_data, arg_refs, num_returns, resources,
            max_retries, retry_exceptions, return_ids,
        )  # fmt: skip
        spec.retries_left = max_retries
        spec.owner_id = worker.worker_id
        spec.strategy = strategy
        spec.parent_id = current_task_id.get()
        spec.extra = task_extra(resources, max_calls, placement)
        spec.runtime_env = runtime_env
        spec.events = events
        out = [worker.make_ref(oid, worker.address, worker, counted=True) for oid in return_ids]
        worker.post(self._submit_on_loop, spec, nested, function_data)
        return out

    def register(self, spec: TaskSpec, nested: Sequence[Reference]) -> None:
        """On the loop: the task is pending; its results and arguments are counted."""
        worker = self._worker
        self.pending[spec.task_id] = spec
        call_sites = worker.objects.call_sites
        site = self._result_sites.get(spec.name)
        if site is None:
            if len(self._result_sites) > 10_000:  # names made per call
                self._result_sites.clear()
            site = self._result_sites[spec.name] = f"{spec.name}() result"
        for object_id in spec.return_ids:
            worker.refs.add_owned(object_id, 1)
            call_sites[object_id] = site
        if spec.arg_refs:
            worker.refs.add_submitted([r._id for r in spec.arg_refs])
        spec.nested = nested  # held until the reply: the worker registers by then
        if spec.num_returns < 0:
            worker.generators.track(spec)
        worker.task_events.submitted(spec)

    def _submit_on_loop(
        self, spec: TaskSpec, nested: Sequence[Reference], function_data: bytes
    ) -> None:
        self.register(spec, nested)
        exports = self._worker.exports
        exports.ensure(spec.function_id, function_data)
        if exports.done(spec.function_id) and self._resolved_now(spec):
            spec.state = TaskState.QUEUED
            self._to_submitter(spec)
        else:
            spec.resolver = self._worker.background.spawn(self._submit_when_ready(spec))

    def _resolved_now(self, spec: TaskSpec) -> bool:
        """True if the task's ref arguments are all here (or it has none): they
        are its resolved arguments, with no coroutine to wait for them."""
        if not spec.arg_refs:
            return True
        objs = self._worker.reader.arguments_here(spec.arg_refs)
        if objs is None:
            return False
        spec.resolved = objs
        return True

    async def _submit_when_ready(self, spec: TaskSpec) -> None:
        if await self.prepare(spec):
            self._to_submitter(spec)

    def _to_submitter(self, spec: TaskSpec) -> None:
        self._worker.task_events.assigning(spec)
        self._worker.submitter.submit(spec)

    def retry(self, spec: TaskSpec, error: BaseException | None) -> None:
        """The attempt failed and another one starts (retries were counted)."""
        events = self._worker.task_events
        events.failed(spec, error)
        spec.attempt += 1
        events.submitted(spec, te.PENDING_NODE_ASSIGNMENT_SLOT)
        if spec.kind == KIND_ACTOR_CALL:
            self._worker.actor_client.resubmit(spec)
        else:
            self._worker.submitter.submit(spec)

    def retried(self, spec: TaskSpec, reply: WireReply) -> bool:
        """True if the attempt raised an exception that its ``retry_exceptions``
        allows retrying, with retries left: the next attempt is on its way."""
        if not reply[3] or spec.retries_left == 0 or spec.cancelled:
            return False
        if not _should_retry(spec, reply[2][0]):
            return False
        if spec.retries_left > 0:
            spec.retries_left -= 1
        try:
            error: BaseException | None = serialization.error_of(reply[2][0])
        except Exception:
            error = None
        # Said as Ray says it: a retry hides the failure from get(), not from the user.
        logger.warning(
            "Task %s failed. There are %s retries remaining, so the task will be retried. "
            "Error: %s",
            spec.name,
            "infinite" if spec.retries_left < 0 else spec.retries_left + 1,
            error,
        )
        self.retry(spec, error if self._worker.task_events.enabled else None)
        return True

    async def prepare(self, spec: TaskSpec) -> bool:
        """Waits for the definition's export and the ref arguments; False if failed."""
        try:
            await self._worker.exports.wait(spec.function_id)
        except Exception as e:
            error = exceptions.RaySystemError(f"could not register {spec.name}(): {e}")
            self.fail_task(spec, serialization.serialize_error(error))
            return False
        if spec.arg_refs:
            objs = await self._worker.reader.get_serialized(spec.arg_refs, None, fetch_local=False)
            failed = serialization.first_error(objs)
            if failed is not None:
                # A failed dependency fails this task with the same error, at once
                # (passed on: read, as far as reporting it unhandled goes).
                for ref, obj in zip(spec.arg_refs, objs, strict=True):
                    if obj is failed:
                        self._worker.objects.error_read(ref)
                self.fail_task(spec, failed)
                return False
            spec.resolved = objs
        if spec.cancelled:
            self.fail_task(spec, _cancelled(spec))
            return False
        spec.state = TaskState.QUEUED
        return True

    def on_new_scheduling_key(self, spec: TaskSpec) -> None:
        watch = self._worker.cluster
        self._worker.background.spawn(
            watch.warn_if_infeasible(f"task {spec.name}()", spec.resources)
        )

    # -- cancellation --------------------------------------------------------------------
    def cancel(self, object_id: bytes, force: bool, recursive: bool) -> None:
        """Cancels the task (of this process) that makes ``object_id``.

        A task still resolving its arguments fails at once; a queued one is
        withdrawn; a pushed one is asked to stop (``recursive``: with the
        tasks it submitted), or with ``force`` its worker is killed.
        """
        spec = self.pending.get(task_of(object_id))
        if spec is not None:
            self._cancel(spec, force, recursive)

    def _cancel(self, spec: TaskSpec, force: bool, recursive: bool) -> None:
        if spec.state is TaskState.FINISHED:
            return  # finished already: nothing to cancel
        if spec.kind == KIND_ACTOR_CALL:
            if force:
                raise ValueError("force=True is not supported for actor calls; use runtime.kill()")
            self._worker.actor_client.cancel_call(spec)
            return
        spec.cancelled = True
        if spec.state is TaskState.RESOLVING:
            # Still waiting for its arguments: it fails now, not when they come.
            if spec.resolver is not None:
                spec.resolver.cancel()
            self.fail_task(spec, _cancelled(spec))
            return
        self._worker.submitter.cancel(spec, force, recursive)

    def check_cancel(self, object_id: bytes, force: bool) -> None:
        """From any thread, for the call site: a ValueError if the cancel is refused."""
        if not force:
            return
        spec = self.pending.get(task_of(object_id))
        bridge = self._worker.bridge
        if spec is None and not bridge.on_loop_thread():
            # Submitted from this thread a moment ago: registered once the loop
            # has run what was posted before.
            spec = bridge.run_blocking(self._pending_spec(object_id))
        if spec is not None and spec.kind == KIND_ACTOR_CALL:
            raise ValueError("force=True is not supported for actor calls; use runtime.kill()")

    async def _pending_spec(self, object_id: bytes) -> TaskSpec | None:
        return self.pending.get(task_of(object_id))

    async def forward_cancel(self, ref: Reference, force: bool, recursive: bool) -> None:
        """Asks the owner of a borrowed ref to cancel its task (only it knows where
        the task runs); a gone owner has taken its tasks with it."""
        host, port, _ = ref._owner
        stub = CoreWorkerStub(self._worker.channels.get(host, port))
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await stub.cancel_task(
                CancelTaskRequest(object_id=ref._id, force=force, recursive=recursive)
            )

    def cancel_children(self, parent_id: bytes) -> None:
        """Cancels the tasks that the task ``parent_id`` (run here) submitted."""
        for spec in list(self.pending.values()):
            if spec.parent_id == parent_id and spec.kind != KIND_ACTOR_CALL:
                self._cancel(spec, False, True)

    # -- completion ----------------------------------------------------------------------
    def on_task_reply(self, spec: TaskSpec, reply: WireReply, stream: PushStream) -> None:
        ok, returns = reply[1], reply[2]
        ended = self._worker.task_events.ran(spec, reply, stream)
        if not ok and self._worker.recovery.lost_argument(spec, returns[0]):
            return
        if not ok and (died := serialization.node_died_under(returns[0])) is not None:
            self.on_worker_failure(spec, died)  # its node died: retried as a worker death
            return
        if not ok:
            if not self.retried(spec, reply):
                self.fail_task(spec, returns[0])
            return
        self.store_returns(spec, reply, stream)
        self.finish_task(spec, ended=ended)

    def store_returns(self, spec: TaskSpec, reply: WireReply, stream: PushStream) -> None:
        """Keeps a task's results, and takes over the refs nested in them."""
        worker = self._worker
        returns, nested = reply[2], reply[4]
        items: list[bytes] = []
        if spec.num_returns < 0:  # a streaming generator's return: its item count
            items = worker.generators.on_end(spec, worker.objects.deserialize(returns[0]), None)
        if spec.max_retries != 0 and spec.kind != KIND_ACTOR_CREATION:
            # Lineage: a task, or an actor call its restarted actor may run again.
            in_store = [
                oid
                for oid, obj in zip(spec.return_ids, returns, strict=False)
                if obj.metadata == serialization.METADATA_IN_STORE and oid in worker.refs
            ]
            worker.lineage.record(spec, in_store + items)
        refs, store = worker.refs, worker.store
        # A reply that ran carries one value per return (result_reply), and
        # ``nested`` is empty, no list per result, unless a result holds a ref.
        for index, object_id in enumerate(spec.return_ids):
            if object_id not in refs:
                continue  # nobody wants this result any more
            store.put(object_id, returns[index])
            if nested and index < len(nested) and nested[index]:
                # Ownership rule 3: the result holds the refs it contains.
                worker.ownership.contain(
                    object_id, [Reference(oid, owner, worker) for oid, owner in nested[index]]
                )
        if nested and any(nested):
            # Rule 2: the worker held them for us until now; let it go once
            # our own registrations (for refs we do not own) are done.
            task_id = spec.task_id
            worker.ownership.after_registrations(lambda: stream.send(ReleasePins(task_id)))

    def on_worker_failure(
        self, spec: TaskSpec, error: BaseException, *, group_checked: bool = False
    ) -> None:
        if spec.state is TaskState.FINISHED:
            return  # failed already: a lost gcs or raylet fails every pending task
        if spec.cancelled:
            self.fail_task(spec, _cancelled(spec))
            return
        lost = self._worker.lost
        if lost is None and self._worker.raylet_unreachable():
            return  # the worker died with this node's raylet: on_lost failed the task
        if lost is not None:  # not the worker's fault: no retry can help
            self.fail_task(spec, serialization.serialize_error(lost[0](lost[1])))
            return
        if isinstance(error, exceptions.TaskUnschedulableError | exceptions.RuntimeEnvSetupError):
            unschedulable = type(error)(f"{spec.name}() cannot be scheduled: {error}")
            self.fail_task(spec, serialization.serialize_error(unschedulable))
            return
        if self._group_removed(spec):
            # Its group's removal ended the worker (as Ray kills what runs in one).
            removed = exceptions.TaskPlacementGroupRemoved(
                f"{spec.name}() was running in a placement group that was removed"
            )
            self.fail_task(spec, serialization.serialize_error(removed))
            return
        groups = placement.groups_in(spec.resources)
        if groups and not group_checked and self._worker.state is State.RUNNING:
            # Its group may be removed without this process having heard
            # (a worker hears no announcements): ask before spending a retry.
            check = self._after_group_check(spec, error, [bytes.fromhex(g) for g in groups])
            self._worker.background.spawn(check)
            return
        if self._worker.state is State.STOPPED:
            # This process's own shutdown ended the worker: no retry, nothing to report.
            stopped = exceptions.WorkerCrashedError(
                f"{spec.name}() was still running when the runtime shut down"
            )
            self.fail_task(spec, serialization.serialize_error(stopped))
            return
        if spec.retries_left != 0 and self._worker.state is State.RUNNING:
            if spec.retries_left > 0:
                spec.retries_left -= 1
            self._worker.cluster.report_worker_death(
                f"the worker running {spec.name}() died ({error}); retrying it"
            )
            self.retry(spec, exceptions.WorkerCrashedError(f"the worker died: {error}"))
            return
        crashed = exceptions.WorkerCrashedError(
            f"the worker running {spec.name}() died and no retries are left "
            f"(max_retries={spec.max_retries}): {error}"
        )
        self._worker.cluster.report_worker_death(str(crashed))
        self.fail_task(spec, serialization.serialize_error(crashed))

    async def _after_group_check(
        self, spec: TaskSpec, error: BaseException, groups: list[bytes]
    ) -> None:
        await self._worker.cluster.any_removed(groups)
        self.on_worker_failure(spec, error, group_checked=True)

    def _group_removed(self, spec: TaskSpec) -> bool:
        """Whether the task ran in a placement group this driver knows removed."""
        removed = self._worker.cluster.removed_groups
        return bool(removed) and any(
            bytes.fromhex(group) in removed for group in placement.groups_in(spec.resources)
        )

    def fail_task(self, spec: TaskSpec, error: SerializedObject) -> None:
        if spec.num_returns < 0:
            worker, generators = self._worker, self._worker.generators
            replayed = spec.task_id in generators.replays
            items = generators.on_end(spec, None, error)
            if replayed:  # told to the rebuild waiting on it; the first run's end stands
                worker.task_events.failed(spec, self._error(error))
                self.finish_task(spec, failed=True)
                return
            worker.lineage.record(spec, items)  # the items before the error may be rebuilt
        reported = False
        for object_id in spec.return_ids:
            if object_id in self._worker.refs:
                self._worker.store.put(object_id, error)
            elif not reported:  # nobody holds a ref to read it: say so once
                reported = True
                self._worker.objects.report_unhandled(object_id, error)
        self._worker.task_events.failed(spec, self._error(error))
        self.finish_task(spec, failed=True)

    def _error(self, obj: SerializedObject) -> BaseException | None:
        """The exception in a serialized error, for task events (None if unreadable)."""
        if not self._worker.task_events.enabled:
            return None
        try:
            return serialization.error_of(obj)
        except Exception:
            return None

    def finish_task(self, spec: TaskSpec, failed: bool = False, ended: bool = False) -> None:
        """The task is done: it no longer holds its arguments. ``ended``: its
        task events have its end already (from the reply's stamp)."""
        worker = self._worker
        if not failed and not ended:
            # An actor's creation is done here once the gcs has it: it runs later.
            creation = spec.kind == KIND_ACTOR_CREATION
            state = te.PENDING_NODE_ASSIGNMENT_SLOT if creation else te.FINISHED_SLOT
            worker.task_events.record_task(spec, state)
        spec.state = TaskState.FINISHED
        spec.resolver = None
        self.pending.pop(spec.task_id, None)
        rebuilt = None
        if worker.recovery.reconstructions:
            rebuilt = worker.recovery.reconstructions.pop(spec.task_id, None)
            if rebuilt is not None and not rebuilt.done():
                rebuilt.set_result(None)
        if spec.kind == KIND_ACTOR_CALL and rebuilt is None:  # (a rebuild was not counted)
            worker.actor_client.count_finished_call(spec.actor_key)
        if spec.arg_refs:
            for object_id, ref in worker.refs.remove_submitted([r._id for r in spec.arg_refs]):
                worker.objects.dropped(object_id, ref.owned)
            spec.arg_refs = ()
        spec.nested = ()
        spec.resolved = ()


def _cancelled(spec: TaskSpec) -> SerializedObject:
    return serialization.serialize_error(
        exceptions.TaskCancelledError(f"{spec.name}() was cancelled")
    )


def _should_retry(spec: TaskSpec, error: SerializedObject) -> bool:
    policy = spec.retry_exceptions
    if policy is True:
        return True
    if not policy:
        return False
    try:
        err = serialization.error_of(error)
    except Exception:
        return False
    cause = getattr(err, "cause_cls", type(err))
    return isinstance(cause, type) and issubclass(cause, policy)
