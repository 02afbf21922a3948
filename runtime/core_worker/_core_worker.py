"""The core worker: the runtime inside every driver and worker process.

It owns the objects this process creates (put and task returns), counts
their references, submits tasks, runs tasks pushed to it (in a worker), and
answers other processes' requests for its objects.

:class:`CoreWorker` is the composition root: it holds the process's shared
tables (the memory store, the reference counter, lineage) and one part per
concern, each on its own module:

- ``bridge`` (:class:`~._loop.LoopBridge`): the loop, and hand-offs to it;
- ``objects`` (:class:`~._objects.ObjectClient`): put, local counts, freeing,
  serving owned objects; ``reader`` (:class:`~._reads.ObjectReader`): get, wait;
- ``tasks`` (:class:`~._task_manager.TaskManager`): pending tasks, replies,
  retries, cancellation; ``submitter``: leases and pushes;
- ``actor_client``: creating actors and calling them;
- ``exports`` (:class:`~._exports.Exports`): definitions and the job record;
- ``cluster`` (:class:`~._cluster_watch.ClusterWatch`): nodes and worker output;
- ``ownership``, ``recovery``: the borrower protocol, lost objects;
- ``executor`` (workers only): running the tasks pushed here.

Threads: all state is touched only on ``self.loop``. Methods that user code
calls from other threads (``objects.put``, ``tasks.submit_task``,
``reader.get``, ref counting) do their CPU work (pickling) on the calling
thread and hand the state change to the loop with :meth:`post`, which keeps
order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from typing import Any

from .. import exceptions
from .._private import rpc, serialization
from .._private.config import Config
from .._private.gcs_client import GcsClient
from .._private.ids import IdGenerator, random_id
from .._private.ids import worker_id as make_worker_id
from .._private.tasks import TaskSet
from ..protocol.rt import (
    AddJobRequest,
    Address,
    GcsStub,
    JobRequest,
    RayletStub,
    RegisterDriverRequest,
    RegisterWorkerRequest,
)
from . import _setup_hook
from ._actor_client import ActorClient
from ._cluster_watch import ClusterWatch
from ._executor import TaskExecutor
from ._exports import Exports
from ._generators import Generators
from ._lane import LaneHost
from ._lineage import Lineage
from ._loop import LoopBridge
from ._memory_store import MemoryStore
from ._objects import ObjectClient
from ._ownership import Ownership
from ._reads import ObjectReader
from ._recovery import ObjectRecovery
from ._reference import OwnerAddress, RefFactory
from ._reference_counter import ReferenceCounter
from ._service import CoreWorkerService
from ._states import State, WorkerMode
from ._store_client import StoreClient
from ._submitter import TaskSubmitter
from ._task_events import TaskEvents
from ._task_manager import TaskManager
from ._task_server import TaskServer
from ._user_metrics import UserMetrics

#: How often a retiring worker checks whether it may exit.
RETIRE_POLL_S = 0.05
#: How long a stopping core worker waits for its placement group removals' answers.
REMOVALS_WAIT_S = 2.0


class CoreWorker:
    def __init__(
        self,
        *,
        mode: WorkerMode,
        config: Config,
        host: str,
        gcs_address: tuple[str, int],
        raylet_address: tuple[str, int],
        make_ref: RefFactory,
        job_id: int = 0,
        worker_id: bytes | None = None,
        node_id: bytes = b"",
        namespace: str = "",
        log_to_driver: bool = True,
        store_socket: str = "",
        lane_host: LaneHost | None = None,
    ) -> None:
        """``make_ref`` makes the refs handed to user code (the API layer's ObjectRef);
        ``lane_host``: the thread a worker runs its sync tasks on (its main thread)."""
        self.mode = mode
        self.config = config
        self.host = host
        self.gcs_address = gcs_address
        self.raylet_address = raylet_address
        self.make_ref = make_ref
        self.job_id = job_id
        self.worker_id = worker_id or make_worker_id(b"D", node_id, random_id(8))
        self.node_id = node_id
        self.namespace = namespace
        # The job's (a driver's JobConfig; a worker learns the lifetime from the job record).
        self.job_metadata: dict[str, str] = {}
        self.default_actor_lifetime = "non_detached"
        # A worker's node's labels (told at registration; a driver looks them up).
        self.node_labels: dict[str, str] = {}
        # The job's LoggingConfig (a dict, from ``job_logging.check``), if it has one.
        self.job_logging: dict[str, Any] | None = None
        # This process's runtime environment (canonical JSON; "" for none): a
        # driver's is its job's; a worker's, the one it was started with.
        self.runtime_env = (
            os.environ.get("RUNTIME_WORKER_RUNTIME_ENV", "") if (mode is WorkerMode.WORKER) else ""
        )
        self.log_to_driver = log_to_driver
        self.lane_host = lane_host
        self.state = State.NEW
        self.ids = IdGenerator()
        self.bridge = LoopBridge()
        self.post = self.bridge.post  # the hot path: no extra frame per hand-off
        self.background = TaskSet()
        self.channels = rpc.ChannelPool()
        self._sock = rpc.bind_socket(host)
        self.port: int = self._sock.getsockname()[1]
        self.address: OwnerAddress = (host, self.port, self.worker_id)
        self._gcs: GcsClient | None = None
        self._raylet: RayletStub | None = None
        self._server: Any = None
        self.task_server: TaskServer | None = None  # a worker's task port
        self._started: asyncio.Future[None] | None = None
        # The shared tables.
        self.store = MemoryStore()
        self.refs = ReferenceCounter()
        self.lineage = Lineage(config.max_lineage_bytes)
        # The node's shared-memory store (None until connected).
        self.store_socket = store_socket
        self.store_client: StoreClient | None = None
        self.actor_id: bytes | None = None
        # Why this process cannot go on (None while its gcs and raylet live):
        # the error class that names the lost part, and its message. See on_lost.
        self.lost: tuple[type[exceptions.RaySystemError], str] | None = None
        # The parts.
        self.task_events = TaskEvents(self)
        self.user_metrics = UserMetrics(self)
        self.objects = ObjectClient(self)
        self.reader = ObjectReader(self)
        self.exports = Exports(self)
        self.cluster = ClusterWatch(self)
        self.ownership = Ownership(self)
        self.tasks = TaskManager(self)
        self.generators = Generators(self)
        self.submitter = TaskSubmitter(
            config=config,
            job_id=lambda: self.job_id,
            raylet=lambda: self.raylet,
            raylet_at=lambda host, port: RayletStub(self.channels.get(host, port)),
            node_id=lambda: self.node_id,
            node_address=self.cluster.node_address,
            on_reply=self.tasks.on_task_reply,
            on_worker_failure=self.tasks.on_worker_failure,
            on_new_key=self.tasks.on_new_scheduling_key,
            on_item=self.generators.on_item,
            on_raylet_lost=self.on_raylet_lost,
            owner_id=self.worker_id,
            on_pushed=self.task_events.pushed,
        )
        self.actor_client = ActorClient(self)
        self.recovery = ObjectRecovery(self)
        self.executor: TaskExecutor | None = None

    # -- the loop ---------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attaches to ``loop``; must run on the loop's thread."""
        self.bridge.bind(loop)
        self._started = loop.create_future()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self.bridge.loop

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Serves this worker's RPCs and connects it to its gcs and raylet."""
        if self.loop is None:
            self.bind(asyncio.get_running_loop())
        assert self._started is not None
        self.state = State.STARTING
        try:
            self._server = await rpc.start_server_on([CoreWorkerService(self)], self._sock)
            # A worker may start while its gcs restarts: it waits for it, as its
            # raylet does (which would have stopped, and this worker with it,
            # had the gcs been one that cannot come back).
            reconnect = self.config.gcs_reconnect_timeout_s if self.mode is WorkerMode.WORKER else 0
            self._gcs = GcsClient(self.channels.get(*self.gcs_address), reconnect)
            self._raylet = RayletStub(self.channels.get(*self.raylet_address))
            await self._gcs.learn_durability(self.config.gcs_reconnect_timeout_s)
            if self.mode is WorkerMode.DRIVER:
                await self._register_driver(self._gcs, self._raylet)
            else:
                await self._register_worker(self._raylet)
        except BaseException as e:
            if not self._started.done():
                self._started.set_exception(e)
                self._started.exception()  # retrieved: start() re-raises it
            raise
        if self.store_socket:
            self.store_client = StoreClient(
                self.store_socket, self.worker_id, self.objects.release_pending, self.raylet_gone
            )
        self.state = State.RUNNING
        self.task_events.start()
        self._started.set_result(None)

    async def _register_driver(self, gcs: GcsStub, raylet: RayletStub) -> None:
        if not self.namespace:
            self.namespace = f"anonymous-{random_id(8).hex()}"
        reply = await gcs.add_job(
            AddJobRequest(
                driver=Address(host=self.host, port=self.port, worker_id=self.worker_id),
                namespace=self.namespace,
                driver_pid=os.getpid(),
                entrypoint=" ".join(sys.argv),
                metadata=self.job_metadata,
            )
        )
        self.job_id = reply.job_id
        await self.exports.publish_job(self.job_id, self.namespace)
        await raylet.register_driver(
            RegisterDriverRequest(
                job_id=self.job_id,
                pid=os.getpid(),
                worker_id=self.worker_id,
                port=self.port,
                runtime_env=self.runtime_env,
            )
        )
        self.cluster.start(driver=True)

    async def _register_worker(self, raylet: RayletStub) -> None:
        self.namespace = await self.exports.adopt_job(self.job_id) or self.namespace
        self.executor = TaskExecutor(self)
        self.executor.start()
        self.task_server = TaskServer(self)
        await self.task_server.start()
        setup_error = await _setup_hook.run(self)
        reply = await raylet.register_worker(
            RegisterWorkerRequest(
                worker_id=self.worker_id,
                job_id=self.job_id,
                port=self.port,
                pid=os.getpid(),
                push_port=self.task_server.port,
                setup_error=setup_error,
            )
        )
        if setup_error:
            raise exceptions.RuntimeEnvSetupError(setup_error)  # (the raylet ends it)
        self.node_id = reply.node_id
        self.store_socket = reply.store_socket
        self.node_labels = dict(reply.node_labels)
        self.cluster.start(driver=False)

    async def wait_started(self) -> None:
        assert self._started is not None
        await asyncio.shield(self._started)

    async def stop(self) -> None:
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        if self.mode is WorkerMode.DRIVER and self._gcs is not None:
            # What its workers printed last is shown before they are told to go.
            with contextlib.suppress(*rpc.CONNECTION_ERRORS):
                await self.cluster.drain_logs()
            self.cluster.flush_dedup()
        await self.submitter.close()
        await self.actor_client.close()
        await self.ownership.close()
        if self._gcs is not None:
            # Its placement groups' removals are out before it goes (a detached
            # group's would be lost).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gcs.removals_landed(), REMOVALS_WAIT_S)
        if self.mode is WorkerMode.DRIVER and self._gcs is not None and self.job_id:
            with contextlib.suppress(TimeoutError, *rpc.CONNECTION_ERRORS):
                await asyncio.wait_for(
                    self._gcs.mark_job_finished(JobRequest(job_id=self.job_id)), 1.0
                )
        if self.executor is not None:
            await self.executor.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.task_events.flush(), 2.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.user_metrics.flush(), 2.0)
        await self.background.close()
        if self.task_server is not None:
            await self.task_server.stop()
        if self._server is not None:
            await rpc.stop_server(self._server)
        self.channels.close()
        self.bridge.drain()
        if self.store_client is not None:
            self.objects.flush_deletes()
            self.store_client.close()

    @property
    def gcs(self) -> GcsClient:
        assert self._gcs is not None
        return self._gcs

    @property
    def raylet(self) -> RayletStub:
        assert self._raylet is not None
        return self._raylet

    async def retire(self) -> None:
        """Ends this worker process once nothing it owns is in use any more
        (as Ray's worker drains before an intended exit); its replies are out
        by then. SIGTERM takes the process's own graceful way out."""
        # Polled: what blocks the exit lives in several parts, none of which
        # signals its end; this runs once per retiring worker.
        while self.exit_blocker(retiring=True):  # noqa: ASYNC110
            await asyncio.sleep(RETIRE_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    def on_lost(self, error: type[exceptions.RaySystemError], message: str) -> None:
        """A part this process cannot work without is gone (the first loss is
        the one told). Pending tasks fail now, naming it; later calls fail at
        their call site (``check_cluster``)."""
        if self.lost is not None:
            return
        self.lost = (error, message)
        failure = serialization.serialize_error(error(message))
        for spec in list(self.tasks.pending.values()):
            self.tasks.fail_task(spec, failure)

    def on_gcs_lost(self, cause: BaseException) -> None:
        """The gcs is gone (its stream broke while running): the cluster has ended."""
        host, port = self.gcs_address
        self.on_lost(
            exceptions.GcsLostError,
            f"the cluster's control service (the gcs at {host}:{port}) is gone ({cause})",
        )

    def on_raylet_lost(self, cause: BaseException) -> None:
        """This node's raylet is gone: no task can be leased, no object stored."""
        self.on_lost(
            exceptions.LocalRayletDiedError,
            f"this node's raylet (its scheduler and object store, {self.store_socket}) "
            f"is gone ({cause!r})",
        )

    def raylet_gone(self, cause: BaseException) -> exceptions.LocalRayletDiedError:
        """From any thread: the raylet's store is unreachable. Records the loss
        (on the loop) and returns the error for the caller to raise."""
        self.post(self.on_raylet_lost, cause)
        return exceptions.LocalRayletDiedError(
            f"this node's raylet (its scheduler and object store, {self.store_socket}) "
            f"is gone ({cause!r})"
        )

    def raylet_unreachable(self) -> bool:
        """A probe, on failure paths only: does this node's store refuse
        connections (its raylet is gone)? Then the loss is recorded."""
        path = self.store_socket
        if not path or self.lost is not None:
            return self.lost is not None
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError) as e:
            self.on_raylet_lost(e)
            return True
        except OSError:
            return False  # busy, not gone
        finally:
            probe.close()
        return False

    def check_cluster(self) -> None:
        """Raises the error naming a lost gcs or raylet, at the call site."""
        if self.lost is not None:
            raise self.lost[0](self.lost[1])

    def exit_blocker(self, retiring: bool = False) -> str:
        """Why this idle worker must not be stopped now ("" if it may)."""
        owned = sum(1 for _, entry in self.refs.items() if entry.owned)
        if owned:
            return f"it owns {owned} object(s) still in use"
        if self.ownership.stats()["pinned"]:
            return "it holds refs for a result's owner"
        if self.actor_id is not None:
            return "it hosts an actor"
        if retiring and self.executor is not None and self.executor.busy:
            return "it still runs a task"
        return ""
