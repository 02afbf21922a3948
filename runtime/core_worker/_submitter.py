"""Lease-based task submission, at the owner (design, section 5).

Tasks wait in one queue per *scheduling key* (their resource shape). For a
non-empty queue the submitter asks the local raylet for worker leases (at
most ``max_pending_lease_requests`` at once), pushes queued tasks to the
leased workers over their long-lived streams, and reuses a lease for the
next queued task of the same key. A lease with nothing left to run lingers
briefly (a sync ``get`` loop resubmits at once), then goes back to the
raylet. Lease requests that are no longer needed are cancelled.

All of it runs on the core worker's loop; the queue logic (``_pump``) is
synchronous and the I/O (lease RPCs, stream pushes) hangs off it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import exceptions
from .._private import rpc
from .._private.config import Config
from .._private.push_stream import PushStream
from .._private.serialization import METADATA_IN_STORE, store_location
from .._private.task_wire import CancelRequest, GeneratorItem, WireReply, with_gpu_ids
from .._private.tasks import TaskSet
from .._private.worker_exit import WorkerEnded, worker_ended
from ..protocol.rt import (
    CancelLeaseRequest,
    LeaseRequest,
    LeaseStatus,
    RayletStub,
    ReturnWorkerRequest,
    SchedulingStrategy,
)
from ._task_spec import SchedulingKey, TaskSpec, TaskState

logger = logging.getLogger(__name__)

#: Spillbacks one lease request follows before it waits where it is.
MAX_SPILLBACKS = 8


@dataclass(eq=False)
class Lease:
    lease_id: bytes
    worker_id: bytes
    stream: PushStream
    raylet: RayletStub  # the raylet that granted it (not always the local one)
    in_flight: int = 0
    linger: asyncio.TimerHandle | None = None
    # Its worker's running task waits for an object and hands tasks back:
    # push nothing more to it until one of its tasks finishes.
    stalled: bool = False
    gpu_ids: tuple[int, ...] = ()  # its worker's visible GPUs
    # Its tasks' reply callback (context: the task), made once per lease.
    on_done: Any = None
    # How its worker ended, once asked (see ``_fail_explained``).
    ended: asyncio.Task[WorkerEnded | None] | None = None


@dataclass(eq=False)
class KeyQueue:
    key: tuple[SchedulingKey, bytes]
    resources: dict[str, float]
    strategy: SchedulingStrategy | None
    locality: bytes  # the node that holds most arguments ("" : none, or this one)
    runtime_env: str = ""
    queue: deque[TaskSpec] = field(default_factory=deque)
    leases: list[Lease] = field(default_factory=list)
    # Lease requests waiting at the raylet, by our id for them; ``withdrawn``:
    # those we asked the raylet to drop (their reply still comes, and a lease
    # granted meanwhile is returned).
    requests: dict[bytes, asyncio.Task[Any]] = field(default_factory=dict)
    withdrawn: set[bytes] = field(default_factory=set)
    # The raylet each waiting request is at now (spillbacks move it), and that
    # raylet's node ("" for this node's own).
    request_at: dict[bytes, tuple[RayletStub, bytes]] = field(default_factory=dict)
    # Set while the queue is empty and requests wait: they are withdrawn when
    # it fires (work often comes back at once: a loop of batches).
    withdrawal: asyncio.TimerHandle | None = None


class TaskSubmitter:
    def __init__(
        self,
        *,
        config: Config,
        job_id: Callable[[], int],
        raylet: Callable[[], RayletStub],
        raylet_at: Callable[[str, int], RayletStub],
        node_id: Callable[[], bytes] = lambda: b"",
        node_address: Callable[[bytes], tuple[str, int] | None] = lambda _: None,
        on_reply: Callable[[TaskSpec, WireReply, PushStream], None],
        on_worker_failure: Callable[[TaskSpec, BaseException], None],
        on_new_key: Callable[[TaskSpec], None],
        on_item: Callable[[TaskSpec, PushStream, GeneratorItem], None] = lambda *_: None,
        on_raylet_lost: Callable[[BaseException], None] = lambda _: None,
        owner_id: bytes = b"",
        on_pushed: Callable[[TaskSpec, bytes], None] = lambda *_: None,
    ) -> None:
        self._on_pushed = on_pushed
        self._on_raylet_lost = on_raylet_lost
        self._on_item = on_item
        self._owner_id = owner_id
        self._config = config
        self._job_id = job_id
        self._raylet = raylet
        self._raylet_at = raylet_at
        self._node_id = node_id
        self._node_address = node_address
        self._on_reply = on_reply
        self._on_worker_failure = on_worker_failure
        self._on_new_key = on_new_key
        self._keys: dict[tuple[SchedulingKey, bytes], KeyQueue] = {}
        self._streams: dict[tuple[str, int], PushStream] = {}
        self._stream_nodes: dict[tuple[str, int], bytes] = {}
        self._dead_nodes: set[bytes] = set()
        # Tasks pushed and not answered yet, with where they went.
        self._pushed: dict[bytes, tuple[KeyQueue, Lease]] = {}
        self._request_ids = itertools.count(1)
        self._request_prefix = os.urandom(8)  # request ids are unique per owner
        self._background = TaskSet()
        self._closed = False

    def stats(self) -> dict[str, int]:
        return {
            "queued": sum(len(k.queue) for k in self._keys.values()),
            "leases": sum(len(k.leases) for k in self._keys.values()),
            "lease_requests": sum(len(k.requests) for k in self._keys.values()),
        }

    def submit(self, spec: TaskSpec) -> None:
        locality = self._locality(spec)
        key = spec.queue_key = (spec.scheduling_key, locality)
        kq = self._keys.get(key)
        if kq is None:
            kq = self._keys[key] = KeyQueue(
                key, dict(spec.resources), spec.strategy, locality, spec.runtime_env
            )
            self._on_new_key(spec)
        kq.queue.append(spec)
        self._pump(kq)

    def _locality(self, spec: TaskSpec) -> bytes:
        """The other node holding most of the task's store arguments ("" if none):
        its lease is asked of that node's raylet first, which runs it there if it
        has room (or spills it back), so the arguments need not move."""
        if spec.strategy is not None or not spec.resolved:
            return b""
        counts: dict[bytes, int] = {}
        for obj in spec.resolved:
            if obj.metadata == METADATA_IN_STORE:
                node_id = store_location(obj)[1]
                counts[node_id] = counts.get(node_id, 0) + 1
        if not counts:
            return b""
        best = max(counts, key=lambda n: counts[n])
        return b"" if best == self._node_id() else best

    # -- the synchronous core -------------------------------------------------
    def _pump(self, kq: KeyQueue) -> None:
        limit = self._config.max_tasks_in_flight_per_worker
        # Every lease gets a task; beyond that, only the tasks the lease
        # requests we keep in flight will not take are pipelined: those
        # requests may be granted (here, or on another node by spillback)
        # and run the tasks in parallel.
        reserve = self._config.max_pending_lease_requests
        dead: list[Lease] | None = None
        for lease in kq.leases:
            if lease.in_flight == 0 and lease.stream.broken:
                # Its worker died with nothing in flight (as it lingered): no
                # task goes there, so none spends a retry on a worker it never
                # reached. (With calls in flight, their failures return it.)
                dead = dead or []
                dead.append(lease)
                continue
            while (
                kq.queue
                and not lease.stalled
                and (lease.in_flight == 0 or (lease.in_flight < limit and len(kq.queue) > reserve))
            ):
                self._push(kq, lease, kq.queue.popleft())
        for lease in dead or ():
            self._return_lease(kq, lease, True)
        if self._closed:
            return
        if kq.queue:
            if kq.withdrawal is not None:
                kq.withdrawal.cancel()
                kq.withdrawal = None
            # Requests for leases beyond what the live ones can take.
            want = min(len(kq.queue), self._config.max_pending_lease_requests)
            while len(kq.requests) - len(kq.withdrawn) < want:
                request_id = self._request_prefix + next(self._request_ids).to_bytes(8, "big")
                kq.requests[request_id] = asyncio.ensure_future(
                    self._request_lease(kq, request_id, kq.queue[0].name)
                )
            return
        if kq.withdrawal is None and len(kq.requests) > len(kq.withdrawn):
            kq.withdrawal = asyncio.get_running_loop().call_later(
                self._config.lease_linger_s, self._withdraw_idle, kq
            )
        for lease in kq.leases:
            if lease.in_flight == 0 and lease.linger is None:
                lease.linger = asyncio.get_running_loop().call_later(
                    self._config.lease_linger_s, self._return_lease, kq, lease, False
                )

    def _push(self, kq: KeyQueue, lease: Lease, spec: TaskSpec) -> None:
        if lease.linger is not None:
            lease.linger.cancel()
            lease.linger = None
        lease.in_flight += 1
        spec.state = TaskState.PUSHED
        self._pushed[spec.task_id] = (kq, lease)
        wire = spec.wire()
        if lease.gpu_ids:
            wire = with_gpu_ids(wire, lease.gpu_ids)
        stream = lease.stream
        self._on_pushed(spec, lease.worker_id)
        on_item = None
        if spec.num_returns < 0:  # a streaming generator: items come before the reply
            on_item = functools.partial(self._on_item, spec, stream)
        if lease.on_done is None:
            lease.on_done = functools.partial(self._on_done, kq, lease)
        stream.push_with(wire, lease.on_done, spec, on_item)

    def _on_done(
        self,
        kq: KeyQueue,
        lease: Lease,
        spec: TaskSpec,
        stream: PushStream,
        reply: WireReply | None,
        error: BaseException | None,
    ) -> None:
        lease.in_flight -= 1
        self._pushed.pop(spec.task_id, None)
        if reply is None and not stream.exiting:
            if lease in kq.leases:
                self._return_lease(kq, lease, True)
            failure = error or ConnectionError("no reply")
            if self._closed or spec.cancelled:
                self._on_worker_failure(spec, failure)  # (nothing to explain)
            else:
                self._background.spawn(self._fail_explained(lease, spec, failure))
        elif reply is None or reply[4] is None:
            # Handed back unstarted (its worker waits on a running task, or
            # it exits), or pushed to an exiting worker that never read it.
            lease.stalled = True
            spec.state = TaskState.QUEUED
            kq.queue.appendleft(spec)
        else:
            lease.stalled = False
            self._on_reply(spec, reply, lease.stream)
        if stream.exiting and lease in kq.leases:
            self._return_lease(kq, lease, False, exiting=True)
        self._pump(kq)

    def node_died(self, node_id: bytes) -> None:
        """Tasks pushed to that node's workers fail over (retried elsewhere)."""
        self._dead_nodes.add(node_id)
        for address, stream in list(self._streams.items()):
            if self._stream_nodes.get(address) == node_id:
                stream.abandon(f"node {node_id.hex()[:12]} died")
        # Lease requests waiting there (a hung raylet never answers): ask again.
        for kq in self._keys.values():
            for request_id, (_, where) in list(kq.request_at.items()):
                task = kq.requests.get(request_id)
                if where == node_id and task is not None:
                    task.add_done_callback(functools.partial(self._pump_after, kq))
                    task.cancel()

    def _pump_after(self, kq: KeyQueue, _: asyncio.Future[Any]) -> None:
        self._pump(kq)

    def cancel(self, spec: TaskSpec, force: bool, recursive: bool) -> None:
        """Cancels a queued task here, or asks (or forces) its worker to stop it."""
        kq = self._keys.get(spec.queue_key)
        if kq is not None and spec in kq.queue:
            kq.queue.remove(spec)
            self._on_worker_failure(spec, ConnectionError("cancelled"))  # spec.cancelled is set
            self._pump(kq)
            return
        pushed = self._pushed.get(spec.task_id)
        if pushed is None:
            return
        kq, lease = pushed
        if force:
            self._return_lease(kq, lease, True)  # the raylet kills the worker
        else:
            lease.stream.send(CancelRequest(spec.task_id, recursive))

    def _return_lease(
        self, kq: KeyQueue, lease: Lease, disconnect: bool, exiting: bool = False
    ) -> None:
        if lease.linger is not None:
            lease.linger.cancel()
            lease.linger = None
        if lease not in kq.leases:
            return
        kq.leases.remove(lease)
        self._background.spawn(self._send_return(lease, disconnect, exiting))

    # -- I/O ------------------------------------------------------------------
    async def _request_lease(self, kq: KeyQueue, request_id: bytes, name: str) -> None:
        """Asks for a lease (at the arguments' node, else the local raylet),
        following spillbacks."""
        raylet, node = self._raylet(), b""
        located = self._node_address(kq.locality) if kq.locality else None
        if located is not None:
            raylet, node = self._raylet_at(*located), kq.locality
        spilled = False
        try:
            for _ in range(MAX_SPILLBACKS + 1):
                kq.request_at[request_id] = (raylet, node)
                try:
                    reply = await raylet.request_worker_lease(
                        LeaseRequest(
                            job_id=self._job_id(),
                            resources=kq.resources,
                            lease_key=repr(kq.key).encode(),
                            task_name=name,
                            request_id=request_id,
                            owner_id=self._owner_id,
                            strategy=kq.strategy,
                            spilled=spilled,
                            runtime_env=kq.runtime_env,
                        )
                    )
                except rpc.CONNECTION_ERRORS as e:
                    if raylet is self._raylet():
                        self._on_raylet_lost(e)  # the queue fails naming it
                        self._fail_queue(kq, e)
                        return
                    # The node it was sent to died: start over from ours.
                    raylet, node, spilled = self._raylet(), b"", False
                    continue
                if reply.status is not LeaseStatus.SPILLBACK or reply.retry_at is None:
                    break
                if request_id in kq.withdrawn:
                    return
                if reply.retry_at.node_id in self._dead_nodes:
                    # The raylet has not heard of that node's death yet: ask it again
                    # in a moment rather than wait at a dead (perhaps hung) node.
                    await asyncio.sleep(0.05)
                    raylet, node, spilled = self._raylet(), b"", False
                    continue
                raylet = self._raylet_at(reply.retry_at.host, reply.retry_at.port)
                node, spilled = reply.retry_at.node_id, True
            else:
                # Spilled back and forth (a stale view): ask again shortly.
                asyncio.get_running_loop().call_later(0.1, self._pump, kq)
                return
        finally:
            kq.requests.pop(request_id, None)
            kq.request_at.pop(request_id, None)
            withdrawn = request_id in kq.withdrawn
            kq.withdrawn.discard(request_id)
        if reply.status is LeaseStatus.FAILED:
            kind: type[exceptions.RayError] = exceptions.TaskUnschedulableError
            if reply.placement_group_removed:
                kind = exceptions.TaskPlacementGroupRemoved
            elif reply.runtime_env_failed:
                kind = exceptions.RuntimeEnvSetupError
            self._fail_queue(kq, kind(reply.error))
            return
        if reply.status is not LeaseStatus.GRANTED or reply.worker is None:
            if not withdrawn and kq.queue and not self._closed:
                self._fail_queue(kq, ConnectionError("the raylet cancelled the lease request"))
            return
        address = (reply.worker.host, reply.worker.port)
        stream = self._streams.get(address)
        if stream is None or stream.broken:
            name = f"{address[0]}:{address[1]}"
            peer = (reply.worker.worker_id, reply.worker.node_id)
            local = reply.worker.node_id == self._node_id()
            stream = PushStream(
                reply.worker.host, reply.worker.push_port, name, peer=peer, local=local
            )
            self._streams[address] = stream
            self._stream_nodes[address] = reply.worker.node_id
        lease = Lease(
            reply.lease_id, reply.worker.worker_id, stream, raylet, gpu_ids=tuple(reply.gpu_ids)
        )
        kq.leases.append(lease)
        if self._closed:
            self._return_lease(kq, lease, False)
            return
        self._pump(kq)

    def _withdraw_idle(self, kq: KeyQueue) -> None:
        """The queue stayed empty: its requests would bring leases with nothing
        to run (one granted meanwhile lingers, then goes back)."""
        kq.withdrawal = None
        if kq.queue or self._closed:
            return
        for request_id in kq.requests:
            if request_id not in kq.withdrawn:
                kq.withdrawn.add(request_id)
                self._background.spawn(self._withdraw(kq, request_id))

    async def _fail_explained(self, lease: Lease, spec: TaskSpec, error: BaseException) -> None:
        """A task whose worker's stream broke fails, or is retried, once the
        raylet has said how the worker ended (asked once per lease)."""
        if lease.ended is None:
            lease.ended = self._background.spawn(worker_ended(lease.raylet, lease.worker_id))
        try:
            ended = await asyncio.shield(lease.ended)
        except asyncio.CancelledError:  # this process stops: the task fails as is
            self._on_worker_failure(spec, error)
            raise
        self._on_worker_failure(spec, ended or error)

    async def _withdraw(self, kq: KeyQueue, request_id: bytes) -> None:
        raylet = kq.request_at.get(request_id, (self._raylet(), b""))[0]
        try:
            await raylet.cancel_worker_lease(CancelLeaseRequest(request_id=request_id))
        except rpc.CONNECTION_ERRORS:
            pass

    def _fail_queue(self, kq: KeyQueue, error: BaseException) -> None:
        while kq.queue:
            self._on_worker_failure(kq.queue.popleft(), error)

    async def _send_return(self, lease: Lease, disconnect: bool, exiting: bool = False) -> None:
        try:
            await lease.raylet.return_worker(
                ReturnWorkerRequest(
                    lease_id=lease.lease_id, disconnect=disconnect, worker_exiting=exiting
                )
            )
        except rpc.CONNECTION_ERRORS:
            pass

    async def close(self) -> None:
        """Cancels lease requests, returns every lease, closes the streams."""
        self._closed = True
        returns = []
        for kq in self._keys.values():
            if kq.withdrawal is not None:
                kq.withdrawal.cancel()
            for task in list(kq.requests.values()):
                task.cancel()
            for lease in list(kq.leases):
                if lease.linger is not None:
                    lease.linger.cancel()
                kq.leases.remove(lease)
                returns.append(self._send_return(lease, False))
        if returns:
            try:
                await asyncio.wait_for(asyncio.gather(*returns, return_exceptions=True), 1.0)
            except TimeoutError:
                pass
        for stream in self._streams.values():
            await stream.close()
        await self._background.close()
