"""Actor calls, at the caller: ordered, straight to the actor's worker.

Per actor, this process keeps one :class:`ActorQueue`: calls in submission
order. A call leaves the queue only when it is at the head and its ref
arguments are resolved, so a call waiting for an argument holds back the
calls after it: one caller's calls run in the order they were made. An
actor that runs calls concurrently anyway (async, threaded, or told
``allow_out_of_order_execution``) has each call leave once its own arguments
are resolved, as in Ray. Calls go
over one long-lived stream to the actor's worker, never through a scheduler.

The actor's address comes from the gcs (``WaitActor``). When the stream
breaks (the actor's process died), calls in flight are retried on the
restarted actor within ``max_task_retries``, or fail with ActorDiedError;
the queue then waits for the actor's next incarnation or its death.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import functools
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import exceptions
from .._private import rpc, serialization
from .._private.push_stream import PushStream
from .._private.serialization import SerializedObject
from .._private.task_wire import CancelRequest, GeneratorItem, WireReply
from .._private.tasks import TaskSet
from ..protocol.rt import ActorState, GcsStub, WaitActorRequest
from ._task_spec import TaskSpec, TaskState

logger = logging.getLogger(__name__)


class QueueState(enum.Enum):
    REGISTERING = "REGISTERING"  # the creation request is on its way to the gcs
    RESOLVING = "RESOLVING"  # asking the gcs where the actor is
    CONNECTED = "CONNECTED"  # calls flow to the actor's worker
    DEAD = "DEAD"


@dataclass(eq=False)
class ActorQueue:
    key: bytes  # the id this process first knew the actor by
    actor_id: bytes
    name: str
    state: QueueState = QueueState.RESOLVING
    # Invariant: ``waiting`` is sorted by task id, i.e. by submission order.
    waiting: deque[TaskSpec] = field(default_factory=deque)
    in_flight: dict[bytes, TaskSpec] = field(default_factory=dict)
    # Calls lost with a dead incarnation, with no retries left: they fail once
    # the gcs says why the actor died (or that it restarted).
    lost: list[TaskSpec] = field(default_factory=list)
    stream: PushStream | None = None
    restarts_seen: int = 0
    worker_id: bytes = b""  # the worker of the incarnation ``stream`` reaches
    death_cause: str = ""
    # Refs nested in the constructor's arguments, held until it ran.
    creation_refs: Sequence[Any] = ()
    # Set once the gcs has the actor (or its creation failed).
    known: asyncio.Event = field(default_factory=asyncio.Event)
    # Its calls' reply callback (context: the call), made once per queue.
    on_done: Any = None
    # Calls leave as their arguments resolve, not in submission order (the
    # actor's ``allow_out_of_order_execution``; any handle's call says so).
    out_of_order: bool = False
    # An out-of-order queue's calls still resolving their arguments, kept out
    # of ``waiting`` (which then holds only calls ready to leave) until they are.
    resolving: dict[bytes, TaskSpec] = field(default_factory=dict)

    def idle(self) -> bool:
        return not self.waiting and not self.in_flight and not self.lost and not self.resolving


class ActorSubmitter:
    def __init__(
        self,
        *,
        gcs: Callable[[], GcsStub],
        on_reply: Callable[[TaskSpec, WireReply, PushStream], None],
        on_failure: Callable[[TaskSpec, SerializedObject], None],
        on_idle: Callable[[bytes], None],
        on_item: Callable[[TaskSpec, PushStream, GeneratorItem], None] = lambda *_: None,
        on_pushed: Callable[[TaskSpec, bytes], None] = lambda *_: None,
        node_id: Callable[[], bytes] = lambda: b"",
    ) -> None:
        self._on_pushed = on_pushed
        self._node_id = node_id
        self._on_item = on_item
        self._gcs = gcs
        self._on_reply = on_reply
        self._on_failure = on_failure
        self._on_idle = on_idle
        self._queues: dict[bytes, ActorQueue] = {}
        self._streams: dict[tuple[str, int], PushStream] = {}
        self._stream_nodes: dict[tuple[str, int], bytes] = {}
        self._tasks = TaskSet()

    def queue(
        self, key: bytes, actor_id: bytes, name: str, registering: bool = False
    ) -> ActorQueue:
        q = self._queues.get(key)
        if q is None:
            state = QueueState.REGISTERING if registering else QueueState.RESOLVING
            q = self._queues[key] = ActorQueue(key, actor_id, name, state)
            q.on_done = functools.partial(self._on_done, q)
            if state is QueueState.RESOLVING:
                q.known.set()
                self._tasks.spawn(self._resolve(q, 0))
        return q

    def existing(self, key: bytes) -> ActorQueue | None:
        return self._queues.get(key)

    def connected(self, q: ActorQueue) -> bool:
        return q.state is QueueState.CONNECTED and q.stream is not None

    def pending(self, key: bytes) -> int:
        q = self._queues.get(key)
        return 0 if q is None else len(q.waiting) + len(q.in_flight) + len(q.resolving)

    # -- events -----------------------------------------------------------------
    def submit(self, q: ActorQueue, spec: TaskSpec) -> None:
        if q.state is QueueState.DEAD:
            self._fail(spec, q)
            return
        waiting = q.waiting
        if not waiting or waiting[-1].task_id < spec.task_id:
            waiting.append(spec)  # the usual case: calls are submitted in order
        else:
            bisect.insort(waiting, spec, key=_task_id_of)
        self._flush(q)

    def ready(self, q: ActorQueue) -> None:
        """A waiting call's arguments are resolved."""
        self._flush(q)

    def resolving(self, q: ActorQueue, spec: TaskSpec) -> None:
        """An out-of-order queue's call waits for its arguments (outside ``waiting``)."""
        if q.state is QueueState.DEAD:
            self._fail(spec, q)
            return
        q.resolving[spec.task_id] = spec

    def resolved(self, q: ActorQueue, spec: TaskSpec, error: SerializedObject | None) -> None:
        """An out-of-order queue's call has its arguments (or one failed): it
        joins the calls ready to leave (or fails). Nothing if it was cancelled,
        or failed with its actor, meanwhile."""
        if q.resolving.pop(spec.task_id, None) is None:
            return
        if error is not None:
            self._on_failure(spec, error)
            if q.idle():
                self._on_idle(q.key)
            return
        spec.state = TaskState.QUEUED
        self.submit(q, spec)

    async def wait_registered(self, q: ActorQueue) -> None:
        await q.known.wait()

    def registered(self, q: ActorQueue, actor_id: bytes) -> None:
        q.actor_id = actor_id
        q.known.set()
        q.state = QueueState.RESOLVING
        self._tasks.spawn(self._resolve(q, 0))

    def mark_dead(self, q: ActorQueue, cause: str) -> None:
        q.creation_refs = ()
        q.known.set()
        q.state = QueueState.DEAD
        q.death_cause = cause
        lost, q.lost = q.lost, []
        for spec in lost:
            self._fail(spec, q)
        resolving, q.resolving = q.resolving, {}
        for spec in resolving.values():
            self._fail(spec, q)
        while q.waiting:
            self._fail(q.waiting.popleft(), q)
        self._on_idle(q.key)

    def killed(self, q: ActorQueue, no_restart: bool, cause: str) -> None:
        """This process killed the actor: later calls never reach the old incarnation."""
        if no_restart:
            q.death_cause = cause
            if q.state is QueueState.REGISTERING:
                return  # the gcs kills it once registered; calls fail then
            self.mark_dead(q, cause)
        elif q.state is QueueState.CONNECTED:
            q.state = QueueState.RESOLVING
            q.stream = None
            self._tasks.spawn(self._resolve(q, q.restarts_seen + 1))

    def cancel(self, q: ActorQueue, task_id: bytes) -> bool:
        """Cancels a call: dropped if it waits here, else the worker is asked."""
        for spec in q.waiting:
            if spec.task_id == task_id:
                q.waiting.remove(spec)
                spec.cancelled = True
                self._on_failure(spec, _cancelled(spec))
                self._flush(q)
                return True
        resolving = q.resolving.pop(task_id, None)
        if resolving is not None:  # still waiting for its arguments
            resolving.cancelled = True
            self._on_failure(resolving, _cancelled(resolving))
            if q.idle():
                self._on_idle(q.key)
            return True
        running = q.in_flight.get(task_id)
        if running is None or q.stream is None:
            return False
        running.cancelled = True
        q.stream.send(CancelRequest(task_id))
        return True

    # -- the synchronous core -----------------------------------------------------
    def _flush(self, q: ActorQueue) -> None:
        if not self.connected(q):
            return
        stream = q.stream
        if stream is not None and stream.broken:
            # Its incarnation died while nothing was in flight: these calls
            # never reached it, so they wait for the next one (none is lost).
            self._on_stream_broken(q)
            return
        # (An out-of-order queue's ``waiting`` holds only calls ready to leave.)
        waiting = q.waiting
        while waiting and waiting[0].state is TaskState.QUEUED:
            self._push(q, waiting.popleft())

    def _push(self, q: ActorQueue, spec: TaskSpec) -> None:
        stream = q.stream
        assert stream is not None
        spec.state = TaskState.PUSHED
        q.in_flight[spec.task_id] = spec
        self._on_pushed(spec, q.actor_id)
        on_item = functools.partial(self._on_item, spec, stream) if spec.num_returns < 0 else None
        stream.push_with(spec.wire(), q.on_done, spec, on_item)

    def _on_done(
        self,
        q: ActorQueue,
        spec: TaskSpec,
        stream: PushStream,
        reply: WireReply | None,
        error: BaseException | None,
    ) -> None:
        q.in_flight.pop(spec.task_id, None)
        if reply is None:
            self._on_lost(q, spec)
        elif (
            not reply[1]
            and spec.retries_left != 0
            and serialization.node_died_under(reply[2][0]) is not None
        ):
            self._requeue(q, spec)  # its node died under the call: to the next incarnation
        else:
            self._on_reply(spec, reply, stream)
        # (Checked here first: most replies leave calls in flight and none waiting.)
        if q.waiting:
            self._flush(q)
        if not q.in_flight and q.idle():
            self._on_idle(q.key)

    def _on_lost(self, q: ActorQueue, spec: TaskSpec) -> None:
        """The call was in flight when its actor's stream broke."""
        self._on_stream_broken(q)
        if spec.cancelled:
            self._on_failure(spec, _cancelled(spec))
        elif spec.retries_left != 0 and q.state is not QueueState.DEAD:
            self._requeue(q, spec)
        elif q.state is QueueState.DEAD:
            self._fail(spec, q)
        else:
            q.lost.append(spec)

    def _requeue(self, q: ActorQueue, spec: TaskSpec) -> None:
        """A retry of the call (counted), in its place among the waiting ones."""
        if spec.retries_left > 0:
            spec.retries_left -= 1
        spec.state = TaskState.QUEUED
        bisect.insort(q.waiting, spec, key=_task_id_of)

    def node_died(self, node_id: bytes) -> None:
        """Calls to actors on that node fail over (to the restarted actor, if any)."""
        for address, stream in list(self._streams.items()):
            if self._stream_nodes.get(address) == node_id:
                stream.abandon(f"node {node_id.hex()[:12]} died")

    def _on_stream_broken(self, q: ActorQueue) -> None:
        if q.state is QueueState.CONNECTED:
            q.state = QueueState.RESOLVING
            q.stream = None
            self._tasks.spawn(self._resolve(q, q.restarts_seen + 1))

    def _fail(self, spec: TaskSpec, q: ActorQueue) -> None:
        cause = q.death_cause or "its process died and no retries were left"
        error = exceptions.ActorDiedError(
            f"actor {q.name} is dead: {cause}", actor_id=q.actor_id.hex()
        )
        self._on_failure(spec, serialization.serialize_error(error))

    # -- I/O ------------------------------------------------------------------------
    async def _resolve(self, q: ActorQueue, min_restarts: int) -> None:
        try:
            # (The worker lost is named only when a restart is waited for.)
            gone = q.worker_id if min_restarts > q.restarts_seen else b""
            request = WaitActorRequest(
                actor_id=q.actor_id, min_restarts=min_restarts, lost_worker_id=gone
            )
            reply = await self._gcs().wait_actor(request)
        except rpc.CONNECTION_ERRORS as e:
            self.mark_dead(q, f"the gcs is unreachable ({e})")
            return
        except Exception as e:  # not left waiting: its calls would hang
            logger.exception("asking the gcs where actor %s is failed", q.name)
            self.mark_dead(q, f"asking the gcs where it is failed ({e!r})")
            return
        info = reply.actor
        if not reply.found or info is None:
            self.mark_dead(q, "the gcs does not know this actor")
            return
        if info.state is ActorState.DEAD or info.address is None:
            self.mark_dead(q, info.death_cause or "it died")
            return
        lost, q.lost = q.lost, []
        for spec in lost:
            how = f": {info.last_death}" if info.last_death else ""
            error = exceptions.ActorUnavailableError(
                f"actor {q.name} was restarted after its process died with {spec.name}() sent "
                f"to it{how}; the call may or may not have run, and is not retried "
                f"(max_task_retries={spec.max_retries})",
                actor_id=q.actor_id.hex(),
            )
            self._on_failure(spec, serialization.serialize_error(error))
        q.restarts_seen = info.num_restarts
        q.worker_id = info.address.worker_id
        q.creation_refs = ()
        address = (info.address.host, info.address.port)
        stream = self._streams.get(address)
        if stream is None or stream.broken:
            peer = (info.address.worker_id, info.address.node_id)
            local = info.address.node_id == self._node_id()
            stream = PushStream(
                info.address.host, info.address.push_port, q.name, peer=peer, local=local
            )
            self._streams[address] = stream
            self._stream_nodes[address] = info.address.node_id
        q.stream = stream
        q.state = QueueState.CONNECTED
        self._flush(q)

    async def close(self) -> None:
        await self._tasks.close()
        for stream in self._streams.values():
            await stream.close()


def _task_id_of(spec: TaskSpec) -> bytes:
    return spec.task_id


def _cancelled(spec: TaskSpec) -> SerializedObject:
    """The answer of a call cancelled before its actor ran it."""
    error = exceptions.TaskCancelledError(f"{spec.name}() was cancelled")
    return serialization.serialize_error(error)
