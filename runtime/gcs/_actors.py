"""The gcs's actor manager: creating, watching, restarting and killing actors.

Each actor moves through ``PENDING_CREATION -> ALIVE -> (RESTARTING ->
ALIVE)* -> DEAD``. One supervising coroutine per actor does the work: lease a
worker from a raylet, push the creation task over a task stream, then hold
that stream open. The stream breaking is how the gcs learns that the actor's
process died; it then restarts the actor (within ``max_restarts``) or marks
it dead with the cause. Callers learn of states with ``WaitActor``.

Every change of an actor's record is written through the gcs's storage
(``save``: the value is taken when the change is made, so writes land in the
order of the changes). A gcs started again ``recover``s the records: it
watches a live actor's worker again through a new stream, and places again
an actor that was being placed (giving back the half-made worker's lease).

Invariants:
- ``state is ALIVE`` iff the actor's worker ran the constructor and its
  stream to the gcs is open;
- a name maps to at most one actor that is not DEAD in its namespace; a
  dead actor's name is free again;
- ``_in_group[pg]`` holds the ids of the actors of group ``pg`` that are not
  DEAD (a group's removal kills them without looking at every actor);
- at most ``dead_kept`` dead actors are kept (for the state API, and for a
  handle's calls to say why), the oldest deaths forgotten first, here and in
  the storage; a dead actor's creation task is dropped (it never runs again).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pickle
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .. import exceptions
from .._private import rpc, worker_exit
from .._private.push_stream import PushStream
from .._private.task_wire import with_gpu_ids
from .._private.tasks import TaskSet
from ..protocol.rt import (
    ActorInfo,
    ActorReply,
    ActorState,
    ActorTableEntry,
    Address,
    CreateActorReply,
    CreateActorRequest,
    LeaseReply,
    LeaseRequest,
    LeaseStatus,
    NodeInfo,
    RayletStub,
    ReturnWorkerRequest,
)
from ._actor_nodes import constructor_error, first_node, process_died

logger = logging.getLogger(__name__)

#: Spillbacks and retries one actor placement follows.
_MAX_HOPS = 16

#: The most of an actor's ``__repr__`` kept (its worker sends at most 200 characters).
MAX_REPR_BYTES = 1024

#: How long ``WaitActor`` waits for an actor it does not know to be registered:
#: a handle can reach another process before its creator's CreateActor
#: reaches the gcs (a task that makes an actor and returns its handle).
_REGISTRATION_WAIT_S = 10.0

#: How long the death of an actor's worker whose raylet cannot say how it
#: ended waits to hear whether its node died (then its cause says so).
_NODE_FATE_WAIT_S = 2.0

#: What ends a lease request besides a reply: its raylet died (or was declared
#: dead: ``node_died`` cancels the call).
_LEASE_FAILURES: tuple[type[BaseException], ...] = (asyncio.CancelledError, *rpc.CONNECTION_ERRORS)


@dataclass(eq=False)
class ActorRecord:
    info: ActorInfo
    creation_task: bytes
    lease: tuple[tuple[str, int], bytes] | None = None  # (raylet address, lease id)
    stream: PushStream | None = None  # to its worker, while it is alive
    # The lease request in flight, and the node it waits at.
    leasing: tuple[bytes, asyncio.Future[LeaseReply]] | None = None
    stop_restarts: bool = False
    worker_id: bytes = b""  # its current worker's (set as it is leased; not persisted)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    supervisor: asyncio.Task[None] | None = None

    @property
    def dead(self) -> bool:
        return self.info.state is ActorState.DEAD


class ActorManager:
    def __init__(
        self,
        *,
        channels: rpc.ChannelPool,
        nodes: Callable[[], list[NodeInfo]],
        job_running: Callable[[int], bool],
        report_error: Callable[[int, str, str], None] = lambda *_: None,
        save: Callable[[bytes, bytes], Coroutine[Any, Any, None]] | None = None,
        forget: Callable[[bytes], Coroutine[Any, Any, None]] | None = None,
        dead_kept: int = 10_000,
    ) -> None:
        self._report_error = report_error
        self._dead_kept = dead_kept
        self._save = save
        self._forget = forget
        self._channels = channels
        self._nodes = nodes
        self._job_running = job_running
        self.actors: dict[bytes, ActorRecord] = {}
        self._names: dict[tuple[str, str], bytes] = {}
        self._in_group: dict[bytes, set[bytes]] = {}
        self._dead: collections.deque[bytes] = collections.deque()  # oldest death first
        # WaitActor calls for actors not registered yet, by actor id.
        self._registering: dict[bytes, list[asyncio.Future[None]]] = {}
        # Waiting to hear whether a node died, by node id (see _how_it_ended).
        self._node_fates: dict[bytes, list[asyncio.Future[None]]] = {}
        self._tasks = TaskSet()

    async def close(self) -> None:
        await self._tasks.close()

    # -- durability ---------------------------------------------------------------------
    def entry(self, record: ActorRecord) -> bytes:
        lease = record.lease
        return bytes(
            ActorTableEntry(
                info=record.info,
                creation_task=record.creation_task,
                lease_raylet_host=lease[0][0] if lease else "",
                lease_raylet_port=lease[0][1] if lease else 0,
                lease_id=lease[1] if lease else b"",
            )
        )

    def _persist(self, record: ActorRecord) -> None:
        """Writes the record as it is now (after the writes asked before it)."""
        if self._save is not None:
            self._tasks.spawn(self._save(record.info.actor_id, self.entry(record)))

    async def saved(self, actor_id: bytes) -> None:
        """Writes the actor's record and returns once it is durable."""
        record = self.actors.get(actor_id)
        if record is not None and self._save is not None:
            await self._save(actor_id, self.entry(record))

    def recover(self, entries: list[ActorTableEntry]) -> None:
        """The actors a previous gcs kept: supervised again from where they were."""
        for entry in entries:
            info = entry.info
            if info is None:
                continue
            lease = None
            if entry.lease_id:
                lease = ((entry.lease_raylet_host, entry.lease_raylet_port), entry.lease_id)
            record = ActorRecord(info, entry.creation_task, lease=lease)
            self.actors[info.actor_id] = record
            if record.dead:
                self._dead.append(info.actor_id)
                continue
            self._join_group(record)
            if info.name:
                self._names[(info.namespace, info.name)] = info.actor_id
            record.supervisor = self._tasks.spawn(self._resume(record))
        logger.info("recovered %d actor(s)", len(entries))

    async def _resume(self, record: ActorRecord) -> None:
        info = record.info
        address = info.address
        if info.state is ActorState.ALIVE and address is not None:
            # Its worker lived on: watch it through a new stream.
            stream = PushStream(address.host, address.push_port, info.class_name)
            await self._supervise(record, stream)
            return
        # It was being placed when the gcs went: the worker it had leased, if
        # any, may hold a half-made actor; give it back and place it again.
        await self._return_lease(record, disconnect=True)
        await self._supervise(record)

    # -- requests -------------------------------------------------------------
    def create(self, request: CreateActorRequest) -> CreateActorReply:
        info = request.actor
        assert info is not None
        known = self.actors.get(info.actor_id)
        if known is not None:  # a creation sent again (its reply was lost with a gcs)
            return CreateActorReply(ok=True, actor=known.info)
        if info.name:
            key = (info.namespace, info.name)
            existing_id = self._names.get(key)
            existing = self.actors.get(existing_id) if existing_id else None
            if existing is not None and not existing.dead:
                if request.get_if_exists:
                    return CreateActorReply(ok=True, actor=existing.info, existed=True)
                return CreateActorReply(
                    ok=False,
                    name_taken=True,
                    error=f"an actor named {info.name!r} already exists in namespace "
                    f"{info.namespace!r}",
                )
            self._names[key] = info.actor_id
        info.state = ActorState.PENDING_CREATION
        record = ActorRecord(info, request.creation_task)
        self.actors[info.actor_id] = record
        self._join_group(record)
        record.supervisor = self._tasks.spawn(self._supervise(record))
        _wake_keyed(self._registering, info.actor_id)
        return CreateActorReply(ok=True, actor=info)

    async def wait(
        self, actor_id: bytes, min_restarts: int, lost_worker_id: bytes = b""
    ) -> ActorReply:
        """The actor once it is dead, or alive after ``min_restarts`` restarts or
        on a worker other than ``lost_worker_id`` (the one the caller lost)."""
        record = self.actors.get(actor_id)
        if record is None:
            if not await _wait_keyed(self._registering, actor_id, _REGISTRATION_WAIT_S):
                return ActorReply(found=False)
            record = self.actors[actor_id]
        while not (record.dead or self._answers(record, min_restarts, lost_worker_id)):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            record.waiters.append(waiter)
            await waiter
        return ActorReply(found=True, actor=record.info)

    @staticmethod
    def _answers(record: ActorRecord, min_restarts: int, lost_worker_id: bytes) -> bool:
        info = record.info
        if info.state is not ActorState.ALIVE:
            return False
        if info.num_restarts >= min_restarts:
            return True
        # Alive elsewhere without a restart counted (a gcs that came back
        # placed it again): the caller's incarnation is gone all the same.
        return bool(lost_worker_id) and (
            info.address is None or info.address.worker_id != lost_worker_id
        )

    def get_named(self, name: str, namespace: str) -> ActorReply:
        actor_id = self._names.get((namespace, name))
        record = self.actors.get(actor_id) if actor_id else None
        if record is None or record.dead:
            return ActorReply(found=False)
        return ActorReply(found=True, actor=record.info)

    async def kill(
        self, actor_id: bytes, no_restart: bool, cause: str, exiting: bool = False
    ) -> None:
        record = self.actors.get(actor_id)
        if record is None or record.dead:
            return
        if exiting and record.stop_restarts and record.info.death_cause:
            return  # ending already, for a cause said first (its owner's, out of scope)
        if no_restart:
            record.stop_restarts = True
            record.info.death_cause = cause
            self._release_name(record)  # free at once, as in Ray: it ends for good
        if exiting:
            return  # its worker exits by itself; its end is seen as any other
        if record.lease is None:
            # Not placed yet: stop the supervisor before it leases a worker.
            if no_restart and record.supervisor is not None:
                record.supervisor.cancel()
                self._set_dead(record, cause)
            return
        await self._return_lease(record, disconnect=True)

    def node_died(self, node_id: bytes) -> None:
        """Actors on a dead node are restarted elsewhere (or die), even if their
        worker processes still run there (a hung raylet, a cut network)."""
        _wake_keyed(self._node_fates, node_id)
        for record in self.actors.values():
            if record.stream is not None and record.info.node_id == node_id:
                record.stream.abandon(f"its node {node_id.hex()[:12]} died")
            if record.leasing is not None and record.leasing[0] == node_id:
                record.leasing[1].cancel()  # a hung raylet would never answer

    def owners_died(self, dead: Callable[[Address], bool]) -> None:
        """As in Ray, an actor dies with the worker that owns it (detached
        actors have no owner)."""
        for record in list(self.actors.values()):
            owner = record.info.owner
            if owner is None or record.info.detached or record.dead or not dead(owner):
                continue
            cause = f"its owner (worker {owner.worker_id.hex()[:12]}) died"
            self._tasks.spawn(self.kill(record.info.actor_id, True, cause))

    async def group_removed(self, pg_id: bytes) -> None:
        """As in Ray, removing a placement group kills the actors in it, for good."""
        cause = "its placement group was removed"
        members = self._in_group.pop(pg_id, set())
        await asyncio.gather(*(self.kill(actor_id, True, cause) for actor_id in members))

    def job_finished(self, job_id: int) -> None:
        """The raylets kill a finished job's workers; pending actors die here."""
        for record in list(self.actors.values()):
            if record.info.job_id == job_id and not record.info.detached and not record.dead:
                record.stop_restarts = True
                record.info.death_cause = record.info.death_cause or "its owner's job finished"
                if record.lease is None and record.supervisor is not None:
                    record.supervisor.cancel()
                    self._set_dead(record, record.info.death_cause)

    # -- supervision ------------------------------------------------------------
    async def _supervise(self, record: ActorRecord, stream: PushStream | None = None) -> None:
        """Places the actor (unless ``stream`` already reaches its live worker) and
        restarts it each time its worker dies, within its ``max_restarts``."""
        info = record.info
        try:
            while True:
                if stream is None:
                    stream = await self._place(record)
                if stream is None:
                    return
                record.stream = stream
                await stream.wait_broken()
                record.stream = None
                await stream.close()
                stream = None
                how = await self._how_it_ended(record)
                await self._return_lease(record, disconnect=True)
                unasked = not record.stop_restarts
                if record.stop_restarts or not self._restartable(record):
                    cause = info.death_cause or (
                        f"the actor's {process_died(info, how)}"
                        + (
                            f" and it was restarted {info.num_restarts} time(s) already"
                            if info.max_restarts
                            else ""
                        )
                    )
                    self._set_dead(record, cause)
                    if unasked and self._job_running(info.job_id):
                        self._tell_death(info, "it will not be restarted", how)
                    return
                self._tell_death(info, f"restarting it ({info.num_restarts + 1} so far)", how)
                info.last_death = f"its {process_died(info, how)}"
                info.num_restarts += 1
                self._set_state(record, ActorState.RESTARTING)
                logger.info("restarting actor %s (%d)", info.class_name, info.num_restarts)
        except asyncio.CancelledError:
            if record.lease is not None:
                await self._return_lease(record, disconnect=True)
            raise
        except Exception as e:  # a bug: said, not left RESTARTING with callers waiting
            logger.exception("supervising actor %s failed", info.class_name)
            if not record.dead:
                self._set_dead(record, f"the gcs failed to supervise it ({e!r})")

    async def _how_it_ended(self, record: ActorRecord) -> str | None:
        """How the actor's worker process ended, as its raylet tells (None: it
        cannot), unless the actor was ended on purpose (its cause says why)."""
        address = record.info.address  # (a restarted gcs knows the worker from it)
        worker_id = record.worker_id or (address.worker_id if address is not None else b"")
        if record.lease is None or record.stop_restarts or not worker_id:
            return None
        raylet = RayletStub(self._channels.get(*record.lease[0]))
        ended = await worker_exit.how_it_ended(raylet, worker_id)
        if ended is not None:
            return ended[1]
        # Its raylet cannot tell: most likely it died with the worker, and its
        # subscription's end (which marks the node dead) is on its way.
        node_id = record.info.node_id
        if self._alive(node_id):
            await _wait_keyed(self._node_fates, node_id, _NODE_FATE_WAIT_S)
        return None if self._alive(node_id) else f"died with its node {node_id.hex()[:12]}"

    def _tell_death(self, info: ActorInfo, what_next: str, how: str | None = None) -> None:
        cause = (info.death_cause or f"its {process_died(info, how)}").splitlines()
        self._report_error(
            info.job_id,
            "ACTOR_DIED",
            f"actor {info.class_name} ({info.actor_id.hex()[:12]}) died unexpectedly: "
            f"{cause[0]}; {what_next}",
        )

    def _restartable(self, record: ActorRecord) -> bool:
        info = record.info
        if not info.detached and not self._job_running(info.job_id):
            info.death_cause = info.death_cause or "its owner's job finished"
            return False
        return info.max_restarts < 0 or info.num_restarts < info.max_restarts

    async def _place(self, record: ActorRecord) -> PushStream | None:
        """Leases a worker and runs the constructor; the open stream, or None if dead."""
        info = record.info
        reply, raylet_address = await self._lease(record)
        if reply is None or raylet_address is None:
            return None
        record.lease = (raylet_address, reply.lease_id)
        self._persist(record)  # a restarted gcs can give the worker back
        address = reply.worker
        assert address is not None
        record.worker_id = address.worker_id
        stream = PushStream(address.host, address.push_port, info.class_name)
        try:
            task = pickle.loads(record.creation_task)
            task[7]["num_restarts"] = info.num_restarts  # a fresh copy: ours to change
            if reply.gpu_ids:
                task = with_gpu_ids(task, tuple(reply.gpu_ids))
            result = await stream.push(task)
        except ConnectionError:
            # The worker died while constructing: a restart, if any remain.
            info.pid = 0  # (the last incarnation's is not this one's)
            return stream
        ok, returns = result[1], result[2]
        if not ok:
            await stream.close()
            await self._return_lease(record, disconnect=True)
            self._set_dead(record, constructor_error(returns[0].data))
            return None
        info.address = address
        info.node_id = address.node_id
        info.pid = reply.worker_pid
        # Its own __repr__, if it has one (bounded: the worker's word only).
        repr_name = returns[0].data[:MAX_REPR_BYTES] if returns else b""
        info.repr_name = repr_name.decode(errors="replace")
        # Durable before anyone is told it is alive: a gcs killed between the
        # two came back finding the actor still being placed, gave its live
        # worker back and placed it again, while its callers held a stream to
        # the worker that was killed and waited for a restart that was not one.
        if self._save is not None:
            placing, info.state = info.state, ActorState.ALIVE
            entry = self.entry(record)
            info.state = placing  # (alive to callers once that is durable)
            try:
                await asyncio.shield(self._tasks.spawn(self._save(info.actor_id, entry)))
            except Exception:  # (the storage failed: said there; not the actor's fault)
                logger.exception("writing actor %s's record failed", info.class_name)
            if record.dead:  # killed meanwhile: its stream tells the rest
                return stream
        self._set_state(record, ActorState.ALIVE, persist=False)
        return stream

    async def _lease(self, record: ActorRecord) -> tuple[LeaseReply | None, tuple[str, int] | None]:
        """A granted lease for the actor, following spillbacks; (None, None) if it died."""
        info = record.info
        # The raylet to ask next (host, port, node id); None: pick a live node.
        target: tuple[str, int, bytes] | None = None
        avoid: tuple[str, int] | None = None  # a raylet that just failed
        failure = ""  # why the last raylet asked could not answer
        spilled = False
        for _ in range(_MAX_HOPS):
            if target is None:
                node = first_node(self._nodes(), info, avoid=avoid)
                if node is None:
                    cause = f"could not lease a worker: {failure}" if failure else ""
                    self._set_dead(record, cause or "the cluster has no live node")
                    return None, None
                target, spilled = (node.host, node.raylet_port, node.node_id), False
            host, port, node_id = target
            request = LeaseRequest(
                job_id=info.job_id,
                resources=dict(info.resources),
                task_name=info.class_name,
                detached=info.detached,
                strategy=info.strategy,
                spilled=spilled,
                runtime_env=info.runtime_env,
            )
            stub = RayletStub(self._channels.get(host, port))
            call = asyncio.ensure_future(stub.request_worker_lease(request))
            record.leasing = (node_id, call)
            try:
                reply = await call
            except _LEASE_FAILURES as e:
                current = asyncio.current_task()
                if isinstance(e, asyncio.CancelledError) and (
                    current is None or current.cancelling()
                ):
                    raise  # our own cancellation, not the node's death (node_died)
                # That node died meanwhile: choose again among the live ones.
                failure = str(e) or f"node {node_id.hex()[:12]} died"
                logger.info(
                    "leasing for actor %s at %s:%d failed: %s", info.class_name, host, port, failure
                )
                target, avoid = None, (host, port)
                continue
            finally:
                record.leasing = None
            retry_at = reply.retry_at
            if reply.status is LeaseStatus.SPILLBACK and retry_at is not None:
                if self._alive(retry_at.node_id):
                    target, spilled = (retry_at.host, retry_at.port, retry_at.node_id), True
                else:
                    # The raylet has not heard of that node's death yet: choose again.
                    await asyncio.sleep(0.05)
                    target, avoid, failure = None, None, ""
                continue
            if reply.status is LeaseStatus.FAILED:
                error = exceptions.ActorUnschedulableError(
                    f"actor {info.class_name} cannot be scheduled: {reply.error}"
                )
                self._set_dead(record, str(error))
                return None, None
            if reply.status is not LeaseStatus.GRANTED or reply.worker is None:
                self._set_dead(record, info.death_cause or "its owner's job finished")
                return None, None
            return reply, (host, port)
        self._set_dead(record, "its lease request was passed between nodes too many times")
        return None, None

    def _alive(self, node_id: bytes) -> bool:
        return any(n.node_id == node_id and n.alive for n in self._nodes())

    async def _return_lease(self, record: ActorRecord, disconnect: bool) -> None:
        lease, record.lease = record.lease, None
        if lease is None:
            return
        address, lease_id = lease
        try:
            # Bounded: the raylet may be on a machine that is gone.
            await asyncio.wait_for(
                RayletStub(self._channels.get(*address)).return_worker(
                    ReturnWorkerRequest(lease_id=lease_id, disconnect=disconnect)
                ),
                5.0,
            )
        except rpc.CONNECTION_ERRORS:
            pass

    def _set_state(self, record: ActorRecord, state: ActorState, persist: bool = True) -> None:
        record.info.state = state
        if persist:
            self._persist(record)
        waiters, record.waiters = record.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _set_dead(self, record: ActorRecord, cause: str) -> None:
        info = record.info
        died_now = not record.dead  # (counted once among the dead)
        info.death_cause = info.death_cause or cause
        info.address = None
        self._release_name(record)
        logger.info("actor %s is dead: %s", info.class_name, info.death_cause.splitlines()[0])
        record.creation_task = b""
        members = self._in_group.get(info.placement_group_id)
        if members is not None:
            members.discard(info.actor_id)
            if not members:
                del self._in_group[info.placement_group_id]
        self._set_state(record, ActorState.DEAD)
        if died_now:
            self._dead.append(info.actor_id)
        while len(self._dead) > self._dead_kept:
            forgotten = self._dead.popleft()
            self.actors.pop(forgotten, None)
            if self._forget is not None:
                self._tasks.spawn(self._forget(forgotten))

    def _release_name(self, record: ActorRecord) -> None:
        info = record.info
        if info.name and self._names.get((info.namespace, info.name)) == info.actor_id:
            del self._names[(info.namespace, info.name)]

    def _join_group(self, record: ActorRecord) -> None:
        pg_id = record.info.placement_group_id
        if pg_id:
            self._in_group.setdefault(pg_id, set()).add(record.info.actor_id)


async def _wait_keyed(
    waiters: dict[bytes, list[asyncio.Future[None]]], key: bytes, timeout: float
) -> bool:
    """Waits for ``_wake_keyed(waiters, key)``, at most ``timeout``; whether it came."""
    woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    listed = waiters.setdefault(key, [])
    listed.append(woken)
    try:
        await asyncio.wait({woken}, timeout=timeout)
    finally:
        if woken in listed:
            listed.remove(woken)
        if not listed and waiters.get(key) is listed:
            del waiters[key]
    return woken.done()


def _wake_keyed(waiters: dict[bytes, list[asyncio.Future[None]]], key: bytes) -> None:
    for woken in waiters.pop(key, []):
        if not woken.done():
            woken.set_result(None)
