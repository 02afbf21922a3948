"""The core worker: the runtime inside every driver and worker process.

It owns the objects this process creates (put and task returns), counts
their references, submits tasks, runs tasks pushed to it (in a worker), and
answers other processes' requests for its objects.

Threads: all state here is touched only on ``self.loop``. Methods that user
code calls from other threads (``put``, ``submit_task``, ``get``, ref
counting from ``ObjectRef``) do their CPU work (pickling) on the calling
thread and hand the state change to the loop with :meth:`post`, which keeps
order. Blocking calls (``get``, ``wait``) refuse to run on a thread that runs
an event loop and name their ``await`` form instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .. import _rpc, _serialization, exceptions
from .._config import Config
from .._ids import IdGenerator, random_id, return_id, task_of
from .._ids import worker_id as make_worker_id
from .._object_ref import ObjectRef, OwnerAddress
from .._serialization import SerializedObject
from .._tasks import TaskSet
from ..protocol.rt import (
    AddJobRequest,
    Address,
    Channel,
    CoreWorkerStub,
    Empty,
    GcsStub,
    GetAllNodesReply,
    GetObjectRequest,
    JobRequest,
    KvGetRequest,
    KvPutRequest,
    LogBatch,
    NodeInfo,
    ObjectStatus,
    RayletStub,
    RegisterDriverRequest,
    RegisterWorkerRequest,
    SubscribeRequest,
    WorkerBlockedRequest,
)
from ._actor_client import ActorClient
from ._executor import TaskExecutor, current_task_id, thread_state
from ._lineage import Lineage
from ._memory_store import MemoryStore
from ._ownership import Ownership, ReleasePins
from ._push_stream import PushStream
from ._recovery import ObjectRecovery
from ._reference_counter import ReferenceCounter
from ._service import CoreWorkerService
from ._states import State, WorkerMode
from ._store_client import LostInStore, StoreClient
from ._submitter import TaskSubmitter
from ._task_spec import (
    KIND_ACTOR_CALL,
    KIND_TASK,
    ArgSlot,
    TaskSpec,
    TaskState,
    WireReply,
)

logger = logging.getLogger("runtime")

FUNCTION_NAMESPACE = "fn"
JOB_NAMESPACE = "job"
#: How long one GetObject request waits at the owner before it is renewed.
OWNER_POLL_S = 30.0


class CoreWorker:
    def __init__(
        self,
        *,
        mode: WorkerMode,
        config: Config,
        host: str,
        gcs_address: tuple[str, int],
        raylet_address: tuple[str, int],
        job_id: int = 0,
        worker_id: bytes | None = None,
        node_id: bytes = b"",
        namespace: str = "",
        log_to_driver: bool = True,
        store_socket: str = "",
    ) -> None:
        self.mode = mode
        self.config = config
        self.host = host
        self.gcs_address = gcs_address
        self.raylet_address = raylet_address
        self.job_id = job_id
        self.worker_id = worker_id or make_worker_id(b"D", node_id, random_id(8))
        self.node_id = node_id
        self.namespace = namespace
        self.log_to_driver = log_to_driver
        self.state = State.NEW
        self.ids = IdGenerator()
        self.store = MemoryStore()
        self.refs = ReferenceCounter()
        self.ownership = Ownership(self)
        self.lineage = Lineage(config.max_lineage_bytes)
        # Where each owned object was made, for `runtime memory`.
        self.call_sites: dict[bytes, str] = {}
        self.channels = _rpc.ChannelPool()
        self.executor: TaskExecutor | None = None
        self._sock = _rpc.bind_socket(host)
        self.port: int = self._sock.getsockname()[1]
        self.address: OwnerAddress = (host, self.port, self.worker_id)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._posted: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._drain_scheduled = False
        self._background = TaskSet()
        self._exports: dict[bytes, asyncio.Future[None]] = {}
        self._fetches: dict[bytes, asyncio.Future[SerializedObject]] = {}
        self._gcs: GcsStub | None = None
        self._raylet: RayletStub | None = None
        self._server: Any = None
        self._started: asyncio.Future[None] | None = None
        self.submitter = TaskSubmitter(
            config=config,
            job_id=lambda: self.job_id,
            raylet=self._raylet_stub,
            raylet_at=lambda host, port: RayletStub(self.channels.get(host, port)),
            node_id=lambda: self.node_id,
            node_address=self._node_address,
            channels=self.channels,
            on_reply=self._on_task_reply,
            on_worker_failure=self._on_worker_failure,
            on_new_key=self._on_new_scheduling_key,
            owner_id=self.worker_id,
        )
        self.actor_client = ActorClient(self)
        self.recovery = ObjectRecovery(self)
        # The cluster's nodes as last heard (NODES channel; looked up on a miss).
        self._nodes: dict[bytes, NodeInfo] = {}
        self._nodes_refreshing = False
        # Owner-side bookkeeping of pending tasks (for cancel).
        self._pending: dict[bytes, TaskSpec] = {}
        self.actor_id: bytes | None = None
        # The node's shared-memory store (None until connected).
        self.store_socket = store_socket
        self.store_client: StoreClient | None = None
        self._release_scheduled = False
        # Owned objects freed from shared-memory stores, by the node holding them;
        # sent once per loop iteration.
        self._store_deletes: dict[bytes, list[bytes]] = {}
        self._delete_scheduled = False

    # -- threads and the loop ---------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attaches to ``loop``; must run on the loop's thread."""
        self.loop = loop
        self._loop_thread = threading.get_ident()
        self._started = loop.create_future()

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        """Runs ``fn(*args)`` on the loop, after everything posted before it."""
        if self.on_loop_thread():
            fn(*args)
            return
        self._posted.append((fn, args))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop = self.loop
            if loop is None or loop.is_closed():
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Reset first: an item appended after this point schedules a new drain.
        self._drain_scheduled = False
        posted = self._posted
        while posted:
            fn, args = posted.popleft()
            try:
                fn(*args)
            except Exception:
                logger.exception("posted call %s failed", getattr(fn, "__name__", fn))

    @staticmethod
    def check_blocking_allowed(call: str, alternative: str) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise exceptions.BlockingCallOnLoopError(
            f"runtime.{call}() blocks, and was called on a thread that runs an asyncio event "
            f"loop, which it would stall; use `{alternative}` instead"
        )

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Serves this worker's RPCs and connects it to its gcs and raylet."""
        if self.loop is None:
            self.bind(asyncio.get_running_loop())
        assert self._started is not None
        self.state = State.STARTING
        try:
            self._server = await _rpc.start_server_on([CoreWorkerService(self)], self._sock)
            self._gcs = GcsStub(self.channels.get(*self.gcs_address))
            self._raylet = RayletStub(self.channels.get(*self.raylet_address))
            if self.mode is WorkerMode.DRIVER:
                reply = await self._gcs.add_job(
                    AddJobRequest(
                        driver=Address(host=self.host, port=self.port, worker_id=self.worker_id),
                        namespace=self.namespace,
                        driver_pid=os.getpid(),
                    )
                )
                self.job_id = reply.job_id
                if not self.namespace:
                    self.namespace = f"anonymous-{random_id(8).hex()}"
                await self._gcs.kv_put(
                    KvPutRequest(
                        namespace=JOB_NAMESPACE,
                        key=str(self.job_id).encode(),
                        value=json.dumps(
                            {"sys_path": _importable_paths(), "namespace": self.namespace}
                        ).encode(),
                        overwrite=True,
                    )
                )
                await self._raylet.register_driver(
                    RegisterDriverRequest(
                        job_id=self.job_id,
                        pid=os.getpid(),
                        worker_id=self.worker_id,
                        port=self.port,
                    )
                )
                self._background.spawn(self._follow_gcs())
                self._nodes_refreshing = True
                self._background.spawn(self._refresh_nodes())
            else:
                await self._adopt_driver_paths()
                self.executor = TaskExecutor(self)
                self.executor.start()
                reply_w = await self._raylet.register_worker(
                    RegisterWorkerRequest(
                        worker_id=self.worker_id,
                        job_id=self.job_id,
                        port=self.port,
                        pid=os.getpid(),
                    )
                )
                self.node_id = reply_w.node_id
                self.store_socket = reply_w.store_socket
                self._background.spawn(self._watch_nodes())
        except BaseException as e:
            if not self._started.done():
                self._started.set_exception(e)
                self._started.exception()  # retrieved: start() re-raises it
            raise
        if self.store_socket:
            self.store_client = StoreClient(
                self.store_socket, self.worker_id, self._release_pending
            )
        self.state = State.RUNNING
        self._started.set_result(None)

    async def _adopt_driver_paths(self) -> None:
        """Lets this worker import what the job's driver can (its script's folder, ...)."""
        reply = await self.gcs.kv_get(
            KvGetRequest(namespace=JOB_NAMESPACE, key=str(self.job_id).encode())
        )
        if reply.found:
            job = json.loads(reply.value)
            paths = job.get("sys_path", [])
            sys.path[:0] = [p for p in paths if p not in sys.path]
            self.namespace = job.get("namespace", "")

    async def wait_started(self) -> None:
        assert self._started is not None
        await asyncio.shield(self._started)

    async def stop(self) -> None:
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        await self.submitter.close()
        await self.actor_client.close()
        await self.ownership.close()
        if self.mode is WorkerMode.DRIVER and self._gcs is not None and self.job_id:
            with contextlib.suppress(TimeoutError, *_rpc.CONNECTION_ERRORS):
                await asyncio.wait_for(
                    self._gcs.mark_job_finished(JobRequest(job_id=self.job_id)), 1.0
                )
        if self.executor is not None:
            await self.executor.close()
        await self._background.close()
        if self._server is not None:
            await _rpc.stop_server(self._server)
        self.channels.close()
        self._drain()
        if self.store_client is not None:
            self._flush_deletes()
            self.store_client.close()

    def _raylet_stub(self) -> RayletStub:
        assert self._raylet is not None
        return self._raylet

    @property
    def gcs(self) -> GcsStub:
        assert self._gcs is not None
        return self._gcs

    # -- the driver's subscription: job liveness and worker output ------------------
    async def _follow_gcs(self) -> None:
        """A driver's: its job lives while this stream does; output; node deaths."""
        channels = [Channel.JOBS, Channel.NODES]
        if self.log_to_driver:
            channels.append(Channel.LOGS)
        request = SubscribeRequest(channels=channels, job_id=self.job_id, owns_job=self.job_id)
        await self._subscribe(request)

    async def _watch_nodes(self) -> None:
        """A worker's: node deaths (its tasks and actor calls there fail over)."""
        await self._subscribe(SubscribeRequest(channels=[Channel.NODES]))

    async def _subscribe(self, request: SubscribeRequest) -> None:
        try:
            async for message in self.gcs.subscribe(request):
                if message.channel is Channel.LOGS and message.logs is not None:
                    self._print_logs(message.logs)
                elif message.channel is Channel.NODES and message.node is not None:
                    self._nodes[message.node.node_id] = message.node
                    if not message.node.alive:
                        self.submitter.node_died(message.node.node_id)
                        self.actor_client.actors.node_died(message.node.node_id)
        except _rpc.CONNECTION_ERRORS as e:
            if self.state is State.RUNNING:
                logger.error("lost the connection to the gcs: %s", e)

    def _print_logs(self, batch: LogBatch) -> None:
        prefix = batch.prefix or f"pid={batch.pid}"
        if batch.host and batch.host != self.host:
            prefix += f", ip={batch.host}"
        out = sys.stderr if batch.is_err else sys.stdout
        try:
            out.write("".join(f"({prefix}) {line}\n" for line in batch.lines))
            out.flush()
        except (OSError, ValueError):
            pass

    # -- the cluster's nodes -------------------------------------------------------------
    def _node_address(self, node_id: bytes) -> tuple[str, int] | None:
        """A live node's raylet address, if known here; a miss looks the nodes up
        (for next time)."""
        node = self._nodes.get(node_id)
        if node is None:
            if not self._nodes_refreshing:
                self._nodes_refreshing = True
                self._background.spawn(self._refresh_nodes())
            return None
        return (node.host, node.raylet_port) if node.alive else None

    async def _refresh_nodes(self) -> None:
        try:
            reply = await self.gcs.get_all_nodes(Empty())
        except _rpc.CONNECTION_ERRORS:
            return
        finally:
            self._nodes_refreshing = False
        for node in reply.nodes:
            self._nodes.setdefault(node.node_id, node)

    # -- reference counting (any thread) -------------------------------------------
    def add_local_ref(self, object_id: bytes, owner: OwnerAddress) -> None:
        self.post(self._add_local, object_id, owner)

    def _add_local(self, object_id: bytes, owner: OwnerAddress) -> None:
        if self.refs.add_local(object_id, owned=owner[2] == self.worker_id):
            self.ownership.borrowed(object_id, owner)

    def remove_local_ref(self, object_id: bytes) -> None:
        if self.state is State.STOPPED:
            return
        self.post(self._remove_local, object_id)

    def _remove_local(self, object_id: bytes) -> None:
        dropped = self.refs.remove_local(object_id)
        if dropped is not None:
            self._dropped(object_id, dropped.owned)

    def _dropped(self, object_id: bytes, owned: bool) -> None:
        """No count holds the object here any more."""
        if owned:
            self.free_owned([object_id])
        else:
            self.store.delete(object_id)  # a borrowed value cached here
            self.ownership.borrow_ended(object_id)

    # -- objects ----------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "put() of an ObjectRef is not allowed: pass the ref itself, or put a "
                "container that holds it"
            )
        object_id = self.ids.put_id()
        try:
            pickled = _serialization.pickle_value(value)
        except Exception as e:
            raise TypeError(
                f"put() could not serialize a value of type {type(value).__name__}: {e}"
            ) from e
        obj = self.store_or_inline(object_id, pickled)
        nested = pickled.refs
        ref = ObjectRef(object_id, self.address, self, counted=True)
        self.post(self._put_on_loop, object_id, obj, nested, _user_call_site("put"))
        return ref

    def store_or_inline(
        self, object_id: bytes, pickled: _serialization.Pickled, owner: bytes = b""
    ) -> SerializedObject:
        """Small values stay inline; large ones go to this node's shared-memory store."""
        if self.store_client is None or pickled.size < self.config.max_inline_object_size:
            return pickled.inline()
        self.store_client.put(object_id, pickled.inband, pickled.buffers, owner or self.worker_id)
        return _serialization.in_store(object_id, self.node_id)

    def serialize_value(
        self, value: Any, object_id: bytes, owner: bytes = b""
    ) -> tuple[SerializedObject, list[ObjectRef]]:
        pickled = _serialization.pickle_value(value)
        return self.store_or_inline(object_id, pickled, owner), pickled.refs

    def deserialize(self, obj: SerializedObject) -> Any:
        return _serialization.deserialize(obj, self._read_store)

    def _read_store(self, object_id: bytes) -> Any:
        if self.store_client is None:
            raise exceptions.RaySystemError("this process has no object store client")
        return self.store_client.get_value(object_id)

    def _release_pending(self) -> None:
        """From a finalizer, on any thread: have the loop send the releases."""
        if not self._release_scheduled:
            self._release_scheduled = True
            self.post(self._flush_releases)

    def _flush_releases(self) -> None:
        self._release_scheduled = False
        if self.store_client is not None:
            with contextlib.suppress(exceptions.RayError, OSError):
                self.store_client.flush_releases()

    def free_owned(self, object_ids: list[bytes]) -> None:
        """Owned objects nobody uses any more: out of memory, and out of the store."""
        for object_id in object_ids:
            self.ownership.release_contained(object_id)
            self.lineage.result_freed(object_id)
            self.call_sites.pop(object_id, None)
            obj = self.store.get_nowait(object_id)
            if obj is not None and obj.metadata == _serialization.METADATA_IN_STORE:
                node_id = _serialization.store_location(obj)[1]
                self._store_deletes.setdefault(node_id, []).append(object_id)
            self.store.delete(object_id)
        if self._store_deletes and not self._delete_scheduled:
            self._delete_scheduled = True
            assert self.loop is not None
            self.loop.call_soon(self._flush_deletes)

    def _flush_deletes(self) -> None:
        """This node's store directly; other nodes' through this node's raylet."""
        self._delete_scheduled = False
        deletes, self._store_deletes = self._store_deletes, {}
        for node_id, ids in deletes.items():
            if node_id != self.node_id:
                self._background.spawn(self.recovery.free_remote(node_id, ids))
            elif self.store_client is not None:
                with contextlib.suppress(exceptions.RayError, OSError):
                    self.store_client.delete(ids)

    def _put_on_loop(
        self, object_id: bytes, obj: SerializedObject, nested: list[ObjectRef], site: str
    ) -> None:
        self.call_sites[object_id] = site
        self.refs.add_owned(object_id, 1)
        self.store.put(object_id, obj)
        self.ownership.contain(object_id, nested)

    def knows_object(self, object_id: bytes) -> bool:
        return object_id in self.refs or object_id in self.store

    async def serve_object(self, object_id: bytes, timeout: float) -> SerializedObject | None:
        """An owned object for a borrower, once ready; None on timeout or if unknown."""
        obj = self.store.get_nowait(object_id)
        if obj is not None:
            return obj
        if not self.knows_object(object_id):
            return None
        try:
            return await asyncio.wait_for(
                self.store.wait_for(object_id), None if timeout < 0 else timeout
            )
        except TimeoutError:
            return None

    def _owned(self, ref: ObjectRef) -> bool:
        return ref._owner[2] == self.worker_id

    def _object_future(self, ref: ObjectRef) -> asyncio.Future[SerializedObject]:
        """A future for the object's serialized value (on the loop)."""
        if self._owned(ref):
            return self.store.wait_for(ref._id)
        obj = self.store.get_nowait(ref._id)
        if obj is not None:
            fut: asyncio.Future[SerializedObject] = asyncio.get_running_loop().create_future()
            fut.set_result(obj)
            return fut
        fetch = self._fetches.get(ref._id)
        if fetch is None:
            fetch = self._background.spawn(self._fetch(ref))
            self._fetches[ref._id] = fetch
        return asyncio.shield(fetch)

    async def _fetch(self, ref: ObjectRef) -> SerializedObject:
        """Gets a borrowed object's value from its owner."""
        host, port, _ = ref._owner
        stub = CoreWorkerStub(self.channels.get(host, port))
        try:
            while True:
                try:
                    reply = await stub.get_object(
                        GetObjectRequest(object_id=ref._id, timeout=OWNER_POLL_S)
                    )
                except _rpc.CONNECTION_ERRORS as e:
                    obj = _serialization.serialize_error(
                        exceptions.OwnerDiedError(
                            ref.hex(), f"its owner at {host}:{port} is unreachable ({e})"
                        )
                    )
                    break
                if reply.status is ObjectStatus.READY:
                    obj = SerializedObject(reply.metadata, reply.data)
                    break
                if reply.status is ObjectStatus.FREED:
                    obj = _serialization.serialize_error(
                        exceptions.ObjectFreedError(ref.hex(), "its owner no longer has it")
                    )
                    break
        finally:
            self._fetches.pop(ref._id, None)
        if ref._id in self.refs:
            self.store.put(ref._id, obj)
        return obj

    async def get_serialized(
        self,
        refs: Sequence[ObjectRef],
        deadline: float | None,
        lend_cpu: bool = False,
        fetch_local: bool = True,
    ) -> list[SerializedObject]:
        """The objects' serialized values, in order; waits for those not ready.

        ``fetch_local``: objects other nodes hold are pulled here too (to be
        read); a task's arguments are not (they go to wherever it runs).
        """
        objs: list[SerializedObject | None] = [self.store.get_nowait(r._id) for r in refs]
        missing = [i for i, obj in enumerate(objs) if obj is None]
        if not missing:
            if fetch_local:
                await self.recovery.localize_until(objs, deadline)
            return objs  # type: ignore[return-value]
        await self.wait_started()
        # A task that waits (sync on its thread: lend_cpu; async: in its context)
        # hands back the tasks queued behind it, and those that arrive meanwhile.
        executor = self.executor
        task_waits = executor is not None and (lend_cpu or current_task_id.get() is not None)
        if task_waits:
            assert executor is not None
            executor.waiting += 1
            executor.release_queued()
        if lend_cpu:
            await self._notify_blocked(True)
        futures = [self._object_future(refs[i]) for i in missing]
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, pending = await asyncio.wait(futures, timeout=timeout)
            if pending:
                for fut in pending:
                    fut.cancel()
                raise exceptions.GetTimeoutError(
                    f"get() timed out: {len(pending)} of {len(refs)} objects were not ready"
                )
            for i, fut in zip(missing, futures, strict=True):
                objs[i] = fut.result()
        finally:
            if task_waits:
                assert executor is not None
                executor.waiting -= 1
            if lend_cpu:
                await self._notify_blocked(False)
        if fetch_local:
            await self.recovery.localize_until(objs, deadline)
        return objs  # type: ignore[return-value]

    async def _notify_blocked(self, blocked: bool) -> None:
        if self.mode is not WorkerMode.WORKER or self._raylet is None:
            return
        with contextlib.suppress(*_rpc.CONNECTION_ERRORS):
            await self._raylet.notify_worker_blocked(
                WorkerBlockedRequest(worker_id=self.worker_id, blocked=blocked)
            )

    def get(self, refs: Sequence[ObjectRef], timeout: float | None) -> list[Any]:
        """Blocking get, for threads that run no event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ready = [self.store.get_nowait(r._id) for r in refs]
        lend_cpu = thread_state.in_sync_task
        if None in ready and not lend_cpu and all(r._owner[2] == self.worker_id for r in refs):
            # Owned objects, nothing to lend: wait for them directly, with no
            # coroutine on the loop (a sync get loop's hot path).
            self._wait_owned(refs, timeout)
            ready = [self.store.get_nowait(r._id) for r in refs]
        objs: list[SerializedObject]
        if None in ready:
            objs = self._run_blocking(self.get_serialized(refs, deadline, lend_cpu))
        else:
            objs = ready  # type: ignore[assignment]
            if self.recovery.remote_markers(objs):
                self._run_blocking(self.recovery.localize_until(objs, deadline))
        values = []
        for ref, obj in zip(refs, objs, strict=True):
            while True:
                try:
                    values.append(self.deserialize(obj))
                    break
                except LostInStore:
                    # Rebuilt from lineage, or the owner says why it cannot be.
                    obj = self._run_blocking(self.recovery.recover_until(ref, deadline))
        return values

    def _wait_owned(self, refs: Sequence[ObjectRef], timeout: float | None) -> None:
        """Blocks this (non-loop) thread until owned objects are ready, or raises."""
        done = threading.Event()
        left = [len(refs)]

        def one_ready() -> None:
            left[0] -= 1
            if left[0] == 0:
                done.set()

        def register() -> None:
            for ref in refs:
                self.store.on_ready(ref._id, one_ready)

        self.post(register)
        if not done.wait(timeout):
            raise exceptions.GetTimeoutError(
                f"get() timed out after {timeout}s: {left[0]} of {len(refs)} objects not ready"
            )

    async def get_async(self, refs: Sequence[ObjectRef], timeout: float | None) -> list[Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        objs = await self._on_own_loop(self.get_serialized(refs, deadline))
        values = []
        for ref, obj in zip(refs, objs, strict=True):
            while True:
                try:
                    values.append(self.deserialize(obj))
                    break
                except LostInStore:
                    obj = await self._on_own_loop(self.recovery.recover_until(ref, deadline))
        return values

    async def wait_async(
        self,
        refs: Sequence[ObjectRef],
        num_returns: int,
        timeout: float | None,
        fetch_local: bool = True,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        result = await self._on_own_loop(self._wait(refs, num_returns, timeout))
        if fetch_local:
            await self._on_own_loop(self._fetch_ready(result[0], deadline))
        return result

    def wait(
        self,
        refs: Sequence[ObjectRef],
        num_returns: int,
        timeout: float | None,
        fetch_local: bool = True,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        # Fast path on the caller's thread (dict reads): enough refs are ready.
        objects = self.store
        ready = [r for r in refs if r._id in objects]
        if len(ready) >= num_returns:
            chosen = {r._id for r in ready[:num_returns]}
            result = ready[:num_returns], [r for r in refs if r._id not in chosen]
        else:
            result = self._run_blocking(self._wait(refs, num_returns, timeout))
        if fetch_local and self.recovery.remote_markers(
            [self.store.get_nowait(r._id) for r in result[0]]
        ):
            self._run_blocking(self._fetch_ready(result[0], deadline))
        return result

    async def _fetch_ready(self, ready: Sequence[ObjectRef], deadline: float | None) -> None:
        """``wait(fetch_local=True)``: copies the ready objects other nodes hold
        here, within the time left (Ray's meaning of the flag, best effort)."""
        objs = [self.store.get_nowait(r._id) for r in ready]
        with contextlib.suppress(exceptions.GetTimeoutError, exceptions.ObjectStoreFullError):
            await self.recovery.localize_until(objs, deadline)

    async def _wait(
        self, refs: Sequence[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        ready = {r._id for r in refs if self.store.get_nowait(r._id) is not None}
        if len(ready) < num_returns:
            await self.wait_started()
            futures = {self._object_future(r): r._id for r in refs if r._id not in ready}
            deadline = None if timeout is None else time.monotonic() + timeout
            pending = set(futures)
            try:
                while len(ready) < num_returns and pending:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    done, pending = await asyncio.wait(
                        pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    if not done:
                        break
                    ready.update(futures[f] for f in done)
            finally:
                for fut in pending:
                    fut.cancel()
        ready_refs: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for ref in refs:
            if ref._id in ready and len(ready_refs) < num_returns:
                ready_refs.append(ref)
            else:
                not_ready.append(ref)
        return ready_refs, not_ready

    def _run_blocking(self, coro: Any) -> Any:
        assert self.loop is not None
        if self.on_loop_thread():
            coro.close()
            raise exceptions.BlockingCallOnLoopError("blocking call on the runtime's own loop")
        cf = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return cf.result()
        except BaseException:
            cf.cancel()
            raise

    async def _on_own_loop(self, coro: Any) -> Any:
        """Awaits a coroutine of this worker's from any loop."""
        assert self.loop is not None
        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    # -- ObjectRef's future support ----------------------------------------------
    def waiter(self, ref: ObjectRef, loop: asyncio.AbstractEventLoop | None) -> asyncio.Future[Any]:
        assert self.loop is not None
        if loop is not None and loop is not self.loop:
            return asyncio.wrap_future(self.concurrent_future(ref), loop=loop)
        if not self.on_loop_thread():
            return asyncio.wrap_future(self.concurrent_future(ref), loop=self.loop)
        obj = self.store.get_nowait(ref._id)
        if obj is not None and not self.recovery.remote_markers([obj]):
            fut: asyncio.Future[Any] = self.loop.create_future()
            try:
                fut.set_result(self.deserialize(obj))
            except LostInStore:
                pass  # the slow path rebuilds it
            except BaseException as e:
                fut.set_exception(e)
            if fut.done():
                return fut
        task = self.loop.create_task(self._value(ref))
        # A waiter nobody looks at again (a ref abandoned at shutdown) must not
        # log "exception was never retrieved": its error belongs to the ref.
        task.add_done_callback(_retrieve)
        return task

    async def _value(self, ref: ObjectRef) -> Any:
        (obj,) = await self.get_serialized([ref], None)
        while True:
            try:
                return self.deserialize(obj)
            except LostInStore:
                obj = await self.recovery.recover(ref)

    def concurrent_future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(self._value(ref), self.loop)

    def exit_blocker(self) -> str:
        """Why this idle worker must not be stopped now ("" if it may)."""
        owned = sum(1 for _, entry in self.refs.items() if entry.owned)
        if owned:
            return f"it owns {owned} object(s) still in use"
        if self.ownership.stats()["pinned"]:
            return "it holds refs for a result's owner"
        if self.actor_id is not None:
            return "it hosts an actor"
        return ""

    # -- functions ----------------------------------------------------------------
    def _ensure_exported(self, function_id: bytes, data: bytes) -> None:
        if function_id not in self._exports:
            self._exports[function_id] = self._background.spawn(self._export(function_id, data))

    async def _export(self, function_id: bytes, data: bytes) -> None:
        await self.wait_started()
        await self.gcs.kv_put(
            KvPutRequest(namespace=FUNCTION_NAMESPACE, key=function_id, value=data, overwrite=False)
        )

    async def fetch_function(self, function_id: bytes) -> bytes:
        reply = await self.gcs.kv_get(KvGetRequest(namespace=FUNCTION_NAMESPACE, key=function_id))
        if not reply.found:
            raise exceptions.RaySystemError(f"function {function_id.hex()} is not registered")
        return reply.value

    def _serialize_args(
        self, name: str, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[SerializedObject, list[ObjectRef], list[ObjectRef]]:
        """Pickles a call's arguments with its top-level refs set aside.

        Returns the pickled ``(args, kwargs)``, the top-level refs (resolved by
        the owner before the task runs) and the refs nested inside values.
        Arguments too large to travel inline are put into the store first and
        passed by ref, so the worker reads them from shared memory.
        """
        arg_refs: list[ObjectRef] = []

        def slot(value: Any) -> Any:
            if isinstance(value, ObjectRef):
                arg_refs.append(value)
                return ArgSlot(len(arg_refs) - 1)
            return value

        plain_args = [slot(a) for a in args]
        plain_kwargs = {k: slot(v) for k, v in kwargs.items()}
        try:
            pickled = _serialization.pickle_value((plain_args, plain_kwargs))
        except Exception as e:
            raise _argument_error(name, args, kwargs, e) from e
        limit = self.config.max_inline_object_size
        if pickled.size >= limit and self.store_client is not None:
            plain_args = [slot(self._maybe_put(a, limit)) for a in plain_args]
            plain_kwargs = {k: slot(self._maybe_put(v, limit)) for k, v in plain_kwargs.items()}
            pickled = _serialization.pickle_value((plain_args, plain_kwargs))
        return pickled.inline(), arg_refs, pickled.refs

    def _maybe_put(self, value: Any, limit: int) -> Any:
        """A large argument becomes a ref to it in the store."""
        if isinstance(value, ArgSlot) or type(value) in (int, float, bool, type(None)):
            return value
        if _serialization.pickle_value(value).size < limit:
            return value
        return self.put(value)

    # -- tasks: submission ------------------------------------------------------------
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
    ) -> list[ObjectRef]:
        """Submits a task from any thread; raises at once on bad arguments."""
        args_data, arg_refs, nested = self._serialize_args(name, args, kwargs)
        task_id = self.ids.task_id()
        return_ids = [return_id(task_id, i) for i in range(num_returns)]
        spec = TaskSpec(
            task_id=task_id,
            function_id=function_id,
            name=name,
            args_data=args_data,
            arg_refs=arg_refs,
            num_returns=num_returns,
            resources=resources,
            max_retries=max_retries,
            retry_exceptions=retry_exceptions,
            return_ids=return_ids,
            retries_left=max_retries,
            owner_id=self.worker_id,
            strategy=strategy,
        )
        out = [ObjectRef(oid, self.address, self, counted=True) for oid in return_ids]
        self.post(self._submit_on_loop, spec, nested, function_data)
        return out

    def _submit_on_loop(
        self, spec: TaskSpec, nested: list[ObjectRef], function_data: bytes
    ) -> None:
        self._pending[spec.task_id] = spec
        for object_id in spec.return_ids:
            self.refs.add_owned(object_id, 1)
            self.call_sites[object_id] = f"{spec.name}() result"
        self.refs.add_submitted([r._id for r in spec.arg_refs])
        spec.nested = nested  # held until the reply: the worker registers by then
        self._ensure_exported(spec.function_id, function_data)
        export = self._exports[spec.function_id]
        if not spec.arg_refs and export.done() and not export.exception():
            spec.state = TaskState.QUEUED
            self.submitter.submit(spec)
        else:
            self._background.spawn(self._submit_when_ready(spec))

    async def _submit_when_ready(self, spec: TaskSpec) -> None:
        if await self._prepare(spec):
            self.submitter.submit(spec)

    async def _prepare(self, spec: TaskSpec) -> bool:
        """Waits for the definition's export and the ref arguments; False if failed."""
        try:
            await asyncio.shield(self._exports[spec.function_id])
        except Exception as e:
            self.fail_task(
                spec,
                _serialization.serialize_error(
                    exceptions.RaySystemError(f"could not register {spec.name}(): {e}")
                ),
            )
            return False
        if spec.arg_refs:
            objs = await self.get_serialized(spec.arg_refs, None, fetch_local=False)
            for obj in objs:
                if _serialization.is_error(obj):
                    # A failed dependency fails this task with the same error.
                    self.fail_task(spec, obj)
                    return False
            spec.resolved = objs
        if spec.cancelled:
            self.fail_task(spec, _cancelled(spec))
            return False
        spec.state = TaskState.QUEUED
        return True

    def _on_new_scheduling_key(self, spec: TaskSpec) -> None:
        self._background.spawn(self._warn_if_infeasible(f"task {spec.name}()", spec.resources))

    async def _warn_if_infeasible(self, what: str, resources: dict[str, float]) -> None:
        """Warns (once per scheduling key or actor) when no live node could ever fit it."""
        try:
            reply: GetAllNodesReply = await self.gcs.get_all_nodes(Empty())
        except _rpc.CONNECTION_ERRORS:
            return
        for node in reply.nodes:
            if node.alive and all(
                node.resources_total.get(k, 0.0) >= v for k, v in resources.items()
            ):
                return
        totals = [dict(n.resources_total) for n in reply.nodes if n.alive]
        logger.warning(
            "%s needs resources %s, which no node in the cluster has (nodes: %s); "
            "it is infeasible and waits until a node that fits joins",
            what,
            resources,
            totals,
        )

    # -- cancellation -------------------------------------------------------------------
    async def cancel(self, ref: ObjectRef, force: bool) -> None:
        if not self._owned(ref):
            raise ValueError(
                "only the owner of a ref (the process that submitted its task) can cancel it"
            )
        spec = self._pending.get(task_of(ref._id))
        if spec is None or spec.state is TaskState.FINISHED:
            return  # finished already: nothing to cancel
        if spec.kind == KIND_ACTOR_CALL:
            if force:
                raise ValueError("force=True is not supported for actor calls; use runtime.kill()")
            self.actor_client.cancel_call(spec)
            return
        spec.cancelled = True
        if spec.state is TaskState.RESOLVING:
            return  # _prepare sees the flag
        self.submitter.cancel(spec, force)

    # -- tasks: completion --------------------------------------------------------------
    def _on_task_reply(self, spec: TaskSpec, reply: WireReply, stream: PushStream) -> None:
        _, ok, returns, application_error, _ = reply
        if not ok and self.recovery.lost_argument(spec, returns[0]):
            return
        if not ok:
            if application_error and spec.retries_left != 0 and _should_retry(spec, returns[0]):
                if spec.retries_left > 0:
                    spec.retries_left -= 1
                logger.info("retrying %s() after an exception", spec.name)
                self.submitter.submit(spec)
                return
            self.fail_task(spec, returns[0])
            return
        self._store_returns(spec, reply, stream)
        self._finish_task(spec)

    def _store_returns(self, spec: TaskSpec, reply: WireReply, stream: PushStream) -> None:
        """Keeps a task's results, and takes over the refs nested in them."""
        returns, nested = reply[2], reply[4] or []
        in_store = [
            oid
            for oid, obj in zip(spec.return_ids, returns, strict=False)
            if obj.metadata == _serialization.METADATA_IN_STORE and oid in self.refs
        ]
        if spec.kind == KIND_TASK:
            self.lineage.record(spec, in_store)
        for index, (object_id, obj) in enumerate(zip(spec.return_ids, returns, strict=False)):
            if object_id not in self.refs:
                continue  # nobody wants this result any more
            self.store.put(object_id, obj)
            inner = nested[index] if index < len(nested) else []
            if inner:
                # Ownership rule 3: the result holds the refs it contains.
                self.ownership.contain(
                    object_id, [ObjectRef(oid, owner, self) for oid, owner in inner]
                )
        if any(nested):
            # Rule 2: the worker held them for us until now; let it go once
            # our own registrations (for refs we do not own) are done.
            task_id = spec.task_id
            self.ownership.after_registrations(lambda: stream.send(ReleasePins(task_id)))

    def _on_worker_failure(self, spec: TaskSpec, error: BaseException) -> None:
        if spec.cancelled:
            self.fail_task(spec, _cancelled(spec))
            return
        if isinstance(error, exceptions.TaskUnschedulableError):
            unschedulable = exceptions.TaskUnschedulableError(
                f"{spec.name}() cannot be scheduled: {error}"
            )
            self.fail_task(spec, _serialization.serialize_error(unschedulable))
            return
        if spec.retries_left != 0 and self.state is State.RUNNING:
            if spec.retries_left > 0:
                spec.retries_left -= 1
            logger.warning("the worker running %s() died (%s); retrying", spec.name, error)
            self.submitter.submit(spec)
            return
        self.fail_task(
            spec,
            _serialization.serialize_error(
                exceptions.WorkerCrashedError(
                    f"the worker running {spec.name}() died and no retries are left "
                    f"(max_retries={spec.max_retries}): {error}"
                )
            ),
        )

    def fail_task(self, spec: TaskSpec, error: SerializedObject) -> None:
        for object_id in spec.return_ids:
            if object_id in self.refs:
                self.store.put(object_id, error)
        self._finish_task(spec)

    def _finish_task(self, spec: TaskSpec) -> None:
        """The task is done: it no longer holds its arguments."""
        spec.state = TaskState.FINISHED
        self._pending.pop(spec.task_id, None)
        rebuilt = self.recovery.reconstructions.pop(spec.task_id, None)
        if rebuilt is not None and not rebuilt.done():
            rebuilt.set_result(None)
        if spec.kind == KIND_ACTOR_CALL:
            self.actor_client.count_finished_call(spec.actor_key)
        for object_id, ref in self.refs.remove_submitted([r._id for r in spec.arg_refs]):
            self._dropped(object_id, ref.owned)
        spec.arg_refs = []
        spec.nested = []
        spec.resolved = []


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _user_call_site(what: str) -> str:
    """``what`` at the first frame outside this package (file:line)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return what
    return f"{what} at {os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _cancelled(spec: TaskSpec) -> SerializedObject:
    return _serialization.serialize_error(
        exceptions.TaskCancelledError(f"{spec.name}() was cancelled")
    )


def _importable_paths() -> list[str]:
    """The driver's import path, so its workers find the same modules."""
    paths = [os.getcwd() if p == "" else p for p in sys.path]
    return [p for p in paths if os.path.isdir(p)]


def _should_retry(spec: TaskSpec, error: SerializedObject) -> bool:
    policy = spec.retry_exceptions
    if policy is True:
        return True
    if not policy:
        return False
    try:
        err = _serialization.error_of(error)
    except Exception:
        return False
    cause = getattr(err, "cause_cls", type(err))
    return isinstance(cause, type) and issubclass(cause, policy)


def _argument_error(
    name: str, args: Sequence[Any], kwargs: dict[str, Any], error: Exception
) -> TypeError:
    """Names the argument that could not be pickled."""
    labelled = [(f"argument {i}", a) for i, a in enumerate(args)]
    labelled += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in labelled:
        if isinstance(value, ObjectRef):
            continue
        try:
            _serialization.pickle_value(value)
        except Exception as e:
            return TypeError(
                f"{name}(): could not serialize {label} of type {type(value).__name__}: {e}"
            )
    return TypeError(f"{name}(): could not serialize the arguments: {error}")
