"""The caller's side of actors: creating them, calling them, and their handles' lifetime.

An :class:`ActorClient` belongs to a core worker (``worker.actor_client``) and
runs on its loop, except the methods user threads call (``create_actor``,
``submit_actor_call``), which pickle on the caller's thread and post the
rest, as the worker's own task submission does.

Lifetime, as in Ray: the creator owns a non-detached actor, and every handle
to it holds a reference to one object the creator owns (its *handle
object*). Handles passed to other processes are borrowed refs to it, counted
by the reference counting protocol that objects use; a process's calls in
flight hold its handle's reference too. When the handle object's last count
is gone, the creator kills the actor. The gcs kills the actors of an owner
that dies.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import os
import pickle
import signal
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from .. import exceptions
from .._private import rpc, serialization
from .._private.ids import random_id, return_id, return_ids_of
from .._private.push_stream import PushStream
from .._private.task_wire import KIND_ACTOR_CALL, KIND_ACTOR_CREATION, Placement, WireReply
from ..protocol.rt import (
    ActorInfo,
    Address,
    CreateActorReply,
    CreateActorRequest,
    Empty,
    GetNamedActorRequest,
    KillActorRequest,
    SchedulingStrategy,
    WorkerLabelRequest,
)
from ._actor_submitter import ActorQueue, ActorSubmitter
from ._arguments import serialize_args
from ._reference import Reference
from ._states import State, WorkerMode
from ._task_spec import TaskSpec, TaskState

if TYPE_CHECKING:
    from ._core_worker import CoreWorker


class ActorClient:
    def __init__(self, worker: CoreWorker) -> None:
        self._worker = worker
        self.actors = ActorSubmitter(
            gcs=lambda: worker.gcs,
            on_reply=self._on_actor_reply,
            on_failure=worker.tasks.fail_task,
            on_idle=self._on_actor_idle,
            on_item=worker.generators.on_item,
            on_pushed=worker.task_events.actor_call_pushed,
            node_id=lambda: worker.node_id,
        )
        # A handle's reference held while this process has calls to it pending,
        # by the handle's key (a process's calls keep the actor alive).
        self._held: dict[bytes, Reference] = {}
        self._actor_calls: dict[bytes, _ActorCalls] = {}
        # A handle's key -> the gcs's actor id (they differ for get_if_exists).
        self._actor_ids: dict[bytes, bytes] = {}
        # Kills this process sent the gcs, not answered yet: a name lookup or a
        # named creation from here waits for them (the names they free are free).
        self._kills: set[asyncio.Task[None]] = set()
        # In a worker hosting an actor: its creation options (actor_id,
        # class_name, name, handle_state, num_restarts, ...).
        self.hosted: dict[str, Any] | None = None

    async def close(self) -> None:
        await self.actors.close()

    def cancel_call(self, spec: TaskSpec) -> None:
        key = spec.actor_key
        self.actors.cancel(self.actors.queue(key, self.actor_id_of(key), ""), spec.task_id)

    def create_actor(
        self,
        *,
        class_name: str,
        class_id: bytes,
        class_data: bytes,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        options: dict[str, Any],
        resources: dict[str, float],
        strategy: SchedulingStrategy | None,
        handle_state: bytes,
        placement: Placement | None = None,
        runtime_env: str = "",
    ) -> tuple[bytes, Reference | None]:
        """Creates an actor from any thread; returns its handle's key and the
        reference to its handle object (None if not owned here: detached, or
        an existing actor by ``get_if_exists``), which its handles hold.

        ``handle_state`` is what ``get_actor`` gives back to make a handle
        elsewhere (opaque here). A named actor is registered before this returns
        (off a loop thread), so a name clash raises here and ``get_if_exists``
        gives the existing actor. On a loop thread it cannot wait: a clash shows
        at the first call.
        """
        self._worker.check_cluster()
        args_data, arg_refs, nested = serialize_args(self._worker, class_name, args, kwargs)
        key = random_id(16)
        detached = options.get("lifetime") == "detached"
        info = ActorInfo(
            actor_id=key,
            class_name=class_name,
            name=options.get("name") or "",
            namespace=options.get("namespace") or "",
            detached=detached,
            max_restarts=options.get("max_restarts", 0),
            resources=resources,
            strategy=strategy,
            handle_state=handle_state,
            placement_group_id=bytes.fromhex(placement[0]) if placement else b"",
            runtime_env=runtime_env,
        )
        spec = TaskSpec(
            task_id=self._worker.ids.task_id(),
            function_id=class_id,
            name=f"{class_name}.__init__",
            args_data=args_data,
            arg_refs=arg_refs,
            num_returns=0,
            resources=dict(info.resources),
            max_retries=0,
            retry_exceptions=False,
            return_ids=[],
            kind=KIND_ACTOR_CREATION,
            extra={
                "actor_id": key,
                "class_name": class_name,
                "max_concurrency": options.get("max_concurrency"),
                "concurrency_groups": dict(options.get("concurrency_groups") or {}),
                "resources": dict(resources),
                "name": info.name,
                "handle_state": handle_state,
                "placement": placement,
            },
            events=options.get("enable_task_events", True),
        )
        registered: concurrent.futures.Future[CreateActorReply] = concurrent.futures.Future()
        get_if_exists = bool(options.get("get_if_exists"))
        self._worker.post(
            self._create_actor_on_loop, spec, info, get_if_exists, nested, class_data, registered
        )
        owned = not detached
        if info.name and not on_a_loop_thread():
            reply = registered.result()
            if not reply.ok:
                taken = reply.name_taken
                raise (exceptions.ActorAlreadyExistsError if taken else ValueError)(reply.error)
            if reply.existed and reply.actor is not None:
                # The live actor's own id: its handle is the one get_actor gives
                # (equal to it, and its calls share one queue with them).
                return reply.actor.actor_id, None
        if not owned:
            return key, None
        worker = self._worker
        handle_object = return_id(spec.task_id, 0)  # creation tasks return nothing
        ref = Reference(handle_object, worker.address, worker)
        worker.post(self._track_handle_object, key, handle_object, class_name)
        return key, ref

    def _track_handle_object(self, key: bytes, handle_object: bytes, class_name: str) -> None:
        self._worker.objects.call_sites[handle_object] = f"actor {class_name} handle"
        self._worker.objects.on_free[handle_object] = lambda: self._out_of_scope(key)

    def _out_of_scope(self, key: bytes) -> None:
        """No handle to an actor owned here is left anywhere, and no call is
        pending: it ends gracefully once reachable (its ``__ray_shutdown__``
        runs, as in Ray), else (not placed yet, or unreachable) the gcs ends it."""
        if self._worker.state is not State.RUNNING:
            return
        cause = "all handles to it went out of scope"
        queue = self.actors.existing(key)
        if queue is None or not self.actors.connected(queue):
            self._send_kill(self._kill_actor(key, True, cause))
            return
        # The gcs first: the death's cause is ours (not the terminate call's),
        # and no restart follows.
        request = KillActorRequest(
            actor_id=queue.actor_id, no_restart=True, cause=cause, exiting=True
        )
        told = self._send_kill(self._tell_gcs(request))
        self._worker.background.spawn(self._end_gracefully(key, queue, cause, told))

    def _send_kill(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._worker.background.spawn(coro)
        self._kills.add(task)
        task.add_done_callback(self._kills.discard)
        return task

    async def _tell_gcs(self, request: KillActorRequest) -> None:
        """Sends a kill to the gcs (one that is gone has no actor left to kill)."""
        with contextlib.suppress(*rpc.CONNECTION_ERRORS):
            await self._worker.gcs.kill_actor(request)

    @staticmethod
    async def _kills_done(kills: set[asyncio.Task[None]]) -> None:
        """Returns once the gcs has ``kills`` (a snapshot of ``_kills``, taken
        when the lookup or creation was asked: a kill of the actor a creation
        makes waits for its registration)."""
        if kills:
            await asyncio.wait(kills)  # (not cancelled with the caller)

    async def _end_gracefully(
        self, key: bytes, queue: ActorQueue, cause: str, told: asyncio.Task[None]
    ) -> None:
        await asyncio.wait({told})
        (ending,) = self.submit_actor_call(
            key,
            queue.name,
            "__ray_terminate__",
            (),
            {},
            num_returns=1,
            name=f"{queue.name}.__ray_terminate__",
            max_task_retries=0,
            max_pending_calls=-1,
            events=False,
        )
        # Its answer (the actor's intended death, or that it had died already)
        # is nobody's error to report. An actor that does not answer in time
        # (its cleanup hung) is ended by the gcs.
        grace = self._worker.config.actor_graceful_shutdown_timeout_s + GRACE_MARGIN_S
        try:
            await self._worker.reader.get_serialized([ending], time.monotonic() + grace)
        except exceptions.GetTimeoutError:
            await self._kill_actor(key, True, cause)
        finally:
            self._worker.objects.errors_read.add(ending._id)

    def _create_actor_on_loop(
        self,
        spec: TaskSpec,
        info: ActorInfo,
        get_if_exists: bool,
        nested: Sequence[Reference],
        class_data: bytes,
        registered: concurrent.futures.Future[CreateActorReply],
    ) -> None:
        key = info.actor_id
        queue = self.actors.queue(key, key, info.class_name, registering=True)
        worker = self._worker
        worker.tasks.register(spec, [])
        queue.creation_refs = nested  # held until the constructor ran
        worker.exports.ensure(spec.function_id, class_data)
        # (Only a named creation waits for kills: a name they free is free.)
        kills = set(self._kills) if info.name else set()
        worker.background.spawn(
            self._register_actor(spec, info, get_if_exists, queue, registered, kills)
        )
        if info.resources:
            what = f"actor {info.class_name}"
            worker.background.spawn(worker.cluster.warn_if_infeasible(what, dict(info.resources)))

    async def _register_actor(
        self,
        spec: TaskSpec,
        info: ActorInfo,
        get_if_exists: bool,
        queue: ActorQueue,
        registered: concurrent.futures.Future[CreateActorReply],
        kills_before: set[asyncio.Task[None]],
    ) -> None:
        reply = CreateActorReply(ok=False, error="the actor could not be created")
        try:
            await self._worker.wait_started()
            worker = self._worker
            info.job_id = worker.job_id
            info.namespace = info.namespace or worker.namespace
            if not info.detached:
                host, port, worker_id = worker.address
                info.owner = Address(
                    host=host, port=port, worker_id=worker_id, node_id=worker.node_id
                )
            if not await self._worker.tasks.prepare(spec):
                reply.error = "its constructor's arguments could not be resolved"
                self.actors.mark_dead(queue, reply.error)
                return
            wire = pickle.dumps(spec.wire(), protocol=5)
            self._worker.tasks.finish_task(spec)
            await self._kills_done(kills_before)
            reply = await self._worker.gcs.create_actor(
                CreateActorRequest(actor=info, get_if_exists=get_if_exists, creation_task=wire)
            )
            if not reply.ok or reply.actor is None:
                self.actors.mark_dead(queue, reply.error)
                return
            self._actor_ids[queue.key] = reply.actor.actor_id
            self.actors.registered(queue, reply.actor.actor_id)
        except rpc.CONNECTION_ERRORS as e:
            reply = CreateActorReply(ok=False, error=f"the gcs is unreachable: {e}")
            self.actors.mark_dead(queue, reply.error)
        finally:
            if not registered.done():
                registered.set_result(reply)

    def actor_id_of(self, key: bytes) -> bytes:
        """The gcs's id of the actor a handle names (they differ for get_if_exists)."""
        return self._actor_ids.get(key, key)

    def submit_actor_call(
        self,
        key: bytes,
        class_name: str,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        num_returns: int,
        name: str,
        max_task_retries: int,
        max_pending_calls: int,
        handle_ref: Reference | None = None,
        concurrency_group: str | None = None,
        retry_exceptions: bool | tuple[type[BaseException], ...] = False,
        events: bool = True,
        out_of_order: bool = False,
    ) -> list[Reference]:
        """Submits a call from any thread (``key``: the handle's, ``handle_ref``:
        the reference it holds, kept while calls are pending); returns its refs."""
        self._worker.check_cluster()
        calls = self._actor_calls.get(key)
        if calls is None:
            calls = self._actor_calls.setdefault(key, _ActorCalls())
        limit = max_pending_calls
        index = next(calls.submitted)
        if limit >= 0 and index - calls.finished >= limit:
            self._worker.post(self.count_finished_call, key)
            raise exceptions.PendingCallsLimitExceededError(
                f"actor {class_name} has {limit} unfinished calls from this process "
                f"(max_pending_calls={limit}); wait for some to finish before making more"
            )
        try:
            args_data, arg_refs, nested = serialize_args(self._worker, name, args, kwargs)
        except BaseException:
            self._worker.post(self.count_finished_call, key)
            raise
        task_id = self._worker.ids.task_id()
        # A streaming call (num_returns < 0) returns its item count; items come apart.
        count = 1 if num_returns < 0 else num_returns
        return_ids = return_ids_of(task_id, count)
        # (Its required fields positionally, the rest set after: see TaskSpec.)
        spec = TaskSpec(
            task_id, b"", name, args_data, arg_refs, num_returns, {},
            max_task_retries, retry_exceptions, return_ids,
        )  # fmt: skip
        spec.retries_left = max_task_retries
        spec.kind = KIND_ACTOR_CALL
        spec.extra = method if concurrency_group is None else (method, concurrency_group)
        spec.actor_key = key
        spec.owner_id = self._worker.worker_id
        spec.events = events
        worker = self._worker
        out = [worker.make_ref(oid, worker.address, worker, counted=True) for oid in return_ids]
        worker.post(
            self._submit_actor_call_on_loop, class_name, spec, nested, handle_ref, out_of_order
        )
        return out

    def count_finished_call(self, key: bytes) -> None:
        calls = self._actor_calls.get(key)
        if calls is not None:
            calls.finished += 1

    def _submit_actor_call_on_loop(
        self,
        class_name: str,
        spec: TaskSpec,
        nested: Sequence[Reference],
        handle_ref: Reference | None,
        out_of_order: bool = False,
    ) -> None:
        self._worker.tasks.register(spec, nested)  # nested: held until the reply
        key = spec.actor_key
        if handle_ref is not None:
            self._held.setdefault(key, handle_ref)
        queue = self.actors.existing(key) or self.actors.queue(
            key, self.actor_id_of(key), class_name
        )
        if out_of_order:
            queue.out_of_order = True
        # A call made after this process removed a placement group waits for
        # the removal's answer (the group's actors are dead by then), as its
        # arguments: removing returns before the gcs answers.
        removing = self._worker.gcs.removals
        if spec.arg_refs or removing:
            objs = None if removing else self._worker.reader.arguments_here(spec.arg_refs)
            if objs is None:  # some to wait for, or one failed: in its turn
                if queue.out_of_order:
                    self.actors.resolving(queue, spec)
                else:
                    self.actors.submit(queue, spec)
                self._worker.background.spawn(self._resolve_actor_call(queue, spec))
                return
            spec.resolved = objs
        spec.state = TaskState.QUEUED
        self.actors.submit(queue, spec)

    def resubmit(self, spec: TaskSpec) -> None:
        """A call's next attempt (its exception is retried): back in its queue,
        ahead of the calls made after it that have not left yet."""
        key = spec.actor_key
        spec.state = TaskState.QUEUED
        self.actors.submit(self.actors.queue(key, self.actor_id_of(key), ""), spec)

    async def _resolve_actor_call(self, queue: ActorQueue, spec: TaskSpec) -> None:
        await self._worker.gcs.removals_landed()
        objs = await self._worker.reader.get_serialized(spec.arg_refs, None, fetch_local=False)
        error = serialization.first_error(objs)
        if queue.out_of_order:
            if error is None:
                spec.resolved = objs
            self.actors.resolved(queue, spec, error)
            return
        if error is not None:
            if spec in queue.waiting:
                queue.waiting.remove(spec)
            self._worker.tasks.fail_task(spec, error)
            self.actors.ready(queue)
            return
        spec.resolved = objs
        spec.state = TaskState.QUEUED
        self.actors.ready(queue)

    def _on_actor_reply(self, spec: TaskSpec, reply: WireReply, stream: PushStream) -> None:
        ended = self._worker.task_events.ran(spec, reply, stream)
        if not reply[1]:
            if self._worker.recovery.lost_argument(spec, reply[2][0]):
                return
            if not self._worker.tasks.retried(spec, reply):
                self._worker.tasks.fail_task(spec, reply[2][0])
            return
        self._worker.tasks.store_returns(spec, reply, stream)
        self._worker.tasks.finish_task(spec, ended=ended)

    def _on_actor_idle(self, key: bytes) -> None:
        """No call of this process to the actor is pending: its handle's
        reference is no longer held for them."""
        self._held.pop(key, None)

    async def _kill_actor(self, key: bytes, no_restart: bool, cause: str) -> None:
        queue = self.actors.queue(key, self.actor_id_of(key), "")
        await self.actors.wait_registered(queue)
        await self._tell_gcs(
            KillActorRequest(actor_id=queue.actor_id, no_restart=no_restart, cause=cause)
        )

    def kill_actor(self, key: bytes, no_restart: bool) -> None:
        """On the loop: later calls from here see the kill at once; the gcs does it."""
        self._start_kill(key, no_restart)

    async def kill_and_wait(self, key: bytes, no_restart: bool) -> None:
        """``kill_actor``, returning once the gcs has done it."""
        await asyncio.wait({self._start_kill(key, no_restart)})

    def _start_kill(self, key: bytes, no_restart: bool) -> asyncio.Task[None]:
        cause = "it was killed by runtime.kill()"
        queue = self.actors.queue(key, self.actor_id_of(key), "")
        self.actors.killed(queue, no_restart, cause)
        return self._send_kill(self._kill_actor(key, no_restart, cause))

    async def exit_actor(self, cause: str) -> None:
        """This worker's actor ends by its own will: the gcs learns it is no
        crash (no restart; ``cause`` for its callers), the atexit handlers run,
        then the process exits its graceful way (SIGTERM)."""
        actor_id = self._worker.actor_id
        if actor_id is not None:
            await self._tell_gcs(
                KillActorRequest(actor_id=actor_id, no_restart=True, cause=cause, exiting=True)
            )
        executor = self._worker.executor
        if executor is not None and executor.actor is not None:
            await executor.actor.shutdown_hook()
        # Now rather than at interpreter exit: once this process's connections
        # close, its raylet may stop it before it gets that far.
        await asyncio.get_running_loop().run_in_executor(None, atexit._run_exitfuncs)
        os.kill(os.getpid(), signal.SIGTERM)

    async def get_actor(self, name: str, namespace: str | None) -> ActorInfo:
        """The named actor's record; ValueError if there is none."""
        kills = set(self._kills)  # (those asked before this lookup)
        await self._worker.wait_started()
        self._worker.check_cluster()
        await self._kills_done(kills)  # an actor killed from here is not found
        space = namespace or self._worker.namespace
        reply = await self._worker.gcs.get_named_actor(
            GetNamedActorRequest(name=name, namespace=space)
        )
        if not reply.found or reply.actor is None:
            raise ValueError(f"no actor named {name!r} in namespace {space!r}")
        return reply.actor

    async def list_actors(self) -> list[ActorInfo]:
        await self._worker.wait_started()
        return list((await self._worker.gcs.list_actors(Empty())).actors)

    async def on_actor_created(self, actor: Any, options: dict[str, Any]) -> None:
        """In a worker that now hosts an actor: label its output lines, by the
        actor's own ``__repr__`` if its class defines one (as in Ray)."""
        self._worker.actor_id = options.get("actor_id")
        self.hosted = options
        if self._worker.mode is WorkerMode.WORKER:
            name = actor.repr_name or options.get("class_name", actor.name)
            label = f"{name} pid={os.getpid()}"
            with contextlib.suppress(*rpc.CONNECTION_ERRORS):
                await self._worker.raylet.set_worker_label(
                    WorkerLabelRequest(worker_id=self._worker.worker_id, label=label)
                )


#: What an actor ending gracefully gets beyond its ``__ray_shutdown__``'s time
#: (its atexit handlers, its exit) before the gcs ends it.
GRACE_MARGIN_S = 10.0


def on_a_loop_thread() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _ActorCalls:
    """Per-actor count of this process's unfinished calls, for max_pending_calls.

    ``submitted`` advances on the calling thread (itertools.count is atomic
    under the GIL); ``finished`` only on the loop. Their difference is the
    number of calls not finished yet, without a lock.
    """

    def __init__(self) -> None:
        self.submitted = itertools.count()
        self.finished = 0
