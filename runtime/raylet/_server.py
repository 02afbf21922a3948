"""The raylet: one node's lease scheduler and worker pool, on one loop.

The scheduling decisions live in :class:`LeaseScheduler` (synchronous, no
I/O); this module feeds it events from RPCs, process exits and timers, and
carries out the actions it returns.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .. import exceptions
from .._private import cluster, metrics, rpc, runtime_env
from .._private import labels as node_labels
from .._private import resources as res
from .._private.config import Config
from .._private.gcs_client import GcsClient
from .._private.tasks import TaskSet
from ..protocol.rt import (
    Address,
    ContainsObjectReply,
    ContainsObjectRequest,
    CoreWorkerStub,
    Empty,
    EndedWorker,
    FreeObjectsRequest,
    LeaseReply,
    LeaseStatus,
    ListRuntimeEnvsReply,
    ListWorkersReply,
    NodeInfo,
    NodeStatsReply,
    ObjectSizesReply,
    ObjectSizesRequest,
    PullObjectReply,
    PullObjectRequest,
    RayletBase,
    RegisterDriverRequest,
    RegisterNodeRequest,
    ReportResourcesRequest,
    UnregisterNodeRequest,
    WorkerExitReply,
    WorkerExitRequest,
    WorkerInfo,
    WorkerLabelRequest,
)
from . import _spillback as spillback
from ._bundle_rpc import BundleHandlers
from ._cluster_view import ClusterView
from ._env_table import RuntimeEnvTable
from ._gcs_watch import GcsWatch
from ._lease_rpc import LeaseHandlers
from ._log_rpc import LogHandlers, own_log_names
from ._metrics import MetricsHandlers, UserMetricTable
from ._object_manager import ObjectManager
from ._reports import GcsReports, resource_report
from ._runtime_env import RuntimeEnvAgent, Setup, remove_folders
from ._scheduler import (
    Action,
    AskExit,
    Cancel,
    Grant,
    KillWorker,
    LeaseScheduler,
    StartWorker,
    WorkerState,
)
from ._worker_pool import WorkerPool
from .store import ObjectStore, StoreServer, store_socket_path

logger = logging.getLogger(__name__)

#: The longest label a worker's output lines carry (an actor's class or __repr__, its pid).
MAX_WORKER_LABEL = 256


#: A worker id's length, and the longest wait a GetWorkerExit may ask for.
WORKER_ID_BYTES = 16
MAX_EXIT_WAIT_S = 5.0


class Raylet(LeaseHandlers, BundleHandlers, GcsWatch, LogHandlers, MetricsHandlers, RayletBase):
    def __init__(
        self,
        config: Config,
        *,
        host: str,
        gcs_host: str,
        gcs_port: int,
        resources: dict[str, float],
        session_dir: str,
        object_store_memory: int,
        is_head: bool = False,
        labels: dict[str, str] | None = None,
        template_fd: int | None = None,
    ) -> None:
        """``template_fd``: this end of the socket pair of the worker template
        started beside the raylet (None: workers start as new interpreters)."""
        self.config = config
        self._template_fd = template_fd
        self.is_head = is_head
        self.start_time = time.time()
        self.host = host
        self.port = 0
        self.node_id = os.urandom(16)
        # Its own labels last: they are the runtime's to say.
        self.labels = {**(labels or {}), **node_labels.defaults(self.node_id, resources)}
        self.view = ClusterView(self.node_id, self.labels)
        self.gcs_address = (gcs_host, gcs_port)
        # Every node advertises its memory and its store's size, as in Ray.
        resources = {
            "memory": float(cluster.default_memory(object_store_memory)),
            "object_store_memory": float(object_store_memory),
            **resources,
        }
        self.resources = resources
        self.session_dir = session_dir
        logs = os.path.join(session_dir, "logs")
        # The logs this node serves besides its workers': its own, and the gcs's.
        self.component_logs = [
            n for n in own_log_names() if os.path.exists(os.path.join(logs, n))
        ] + (["gcs.log"] if is_head else [])
        num_cpus = int(resources.get("CPU", 1))
        self.num_cpus = max(1, num_cpus)
        self.scheduler = LeaseScheduler(
            resources,
            soft_worker_limit=self.num_cpus,
            max_starting=config.max_worker_startup_concurrency or self.num_cpus,
            idle_timeout_s=config.idle_worker_timeout_s,
            node_id=self.node_id,
        )
        self._request_ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[LeaseReply]] = {}
        # Owners' ids of waiting lease requests -> ours (to withdraw them).
        self._by_owner_id: dict[bytes, int] = {}
        self._channels = rpc.ChannelPool()
        self._gcs: GcsClient | None = None
        self._pool: WorkerPool | None = None
        self._tasks = TaskSet()
        self.user_metrics = UserMetricTable()
        self.metrics_port = 0
        self.metrics_server = metrics.MetricsServer(
            self._families,
            config.metrics_export_host,
            common={
                "SessionName": os.path.basename(session_dir),
                "NodeAddress": host,
                "NodeId": self.node_id.hex(),
                "Component": "raylet",
            },
        )
        self.reports = GcsReports(
            node_id=self.node_id,
            period_s=config.resource_report_period_s,
            tasks=self._tasks,
            report=self._resource_report,
        )
        self._register_deadlines: dict[bytes, asyncio.TimerHandle] = {}
        # The drivers of this node's jobs (their objects die with them).
        self._drivers: dict[int, bytes] = {}
        self._driver_info: dict[int, WorkerInfo] = {}
        self.gcs_lost = asyncio.Event()
        self.store_socket = store_socket_path(session_dir, self.node_id)
        self.object_store = StoreServer(
            ObjectStore(object_store_memory, config.object_spilling_threshold),
            self.store_socket,
            config.object_spilling_directory or os.path.join(session_dir, "spill"),
            config.store_frame_timeout_s,
        )
        self._setups: dict[bytes, Setup] = {}  # workers' prepared environments
        self.env_table = RuntimeEnvTable()  # what list_runtime_envs shows
        self.runtime_envs = RuntimeEnvAgent(
            # One cache per node, even when raylets share a session folder (one
            # machine): each deletes what its own workers stopped using.
            os.path.join(session_dir, "runtime_resources", self.node_id.hex()[:12]),
            lambda: self._require_gcs(),
        )
        self.object_manager = ObjectManager(
            store=self.object_store,
            node_id=self.node_id,
            view=self.view,
            chunk_size=config.object_transfer_chunk_size,
            channels=self._channels,
        )

    def _require_gcs(self) -> GcsClient:
        assert self._gcs is not None
        return self._gcs

    @property
    def object_manager_port(self) -> int:
        return self.object_manager.port

    # -- lifecycle ------------------------------------------------------------
    async def start(self, port: int) -> None:
        # A node may join while the gcs restarts: it waits for it (then learns
        # whether this gcs can come back at all, for later losses).
        self._gcs = GcsClient(
            self._channels.get(*self.gcs_address), self.config.gcs_reconnect_timeout_s
        )
        self._pool = WorkerPool(
            argv=self._worker_argv,
            env=self.config.to_env(),
            log_dir=os.path.join(self.session_dir, "logs"),
            host=self.host,
            publish_logs=self.reports.log,
            on_exit=self._on_worker_exit,
            template_fd=self._template_fd,
            template_timeout=self.config.worker_template_timeout_s,
        )
        self._pool.open()
        await self.object_store.start()
        await self.object_manager.start(self.host)
        sock = rpc.bind_socket(self.host, port)
        self.port = sock.getsockname()[1]
        self._server = await rpc.start_server_on([self], sock)
        metrics.time_rpcs(self._server)
        await self._gcs.register_node(RegisterNodeRequest(node=self._node_info()))
        await self._refresh_nodes()
        await self._gcs.learn_durability(self.config.gcs_reconnect_timeout_s)
        self.reports.start(self._gcs)
        for coro in (self._watch_gcs(), self._reap(), self._serve_metrics()):
            self._tasks.spawn(coro)
        logger.info(
            "raylet %s listening on %s:%d with %s",
            self.node_id.hex()[:8],
            self.host,
            self.port,
            res.describe(self.resources),
        )

    async def _serve_metrics(self) -> None:
        """Serves the node's metrics; the gcs learns the port with the next report."""
        self.metrics_port = await self.metrics_server.start()
        self.reports.resources_changed()

    async def stop(self) -> None:
        await self.metrics_server.close()
        if self._gcs is not None:
            try:
                await asyncio.wait_for(
                    self._gcs.unregister_node(UnregisterNodeRequest(node_id=self.node_id)), 1.0
                )
            except rpc.CONNECTION_ERRORS:  # TimeoutError is an OSError
                pass
        await self._tasks.close()
        if self._pool is not None:
            await self._pool.close()
        await rpc.stop_server(self._server)
        await self.object_manager.close()
        await self.object_store.close()
        self._channels.close()

    def _node_info(self) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            host=self.host,
            raylet_port=self.port,
            resources_total=res.to_float(self.scheduler.total),
            resources_available=res.to_float(self.scheduler.available),
            metrics_port=self.metrics_port,
            alive=True,
            session_dir=self.session_dir,
            pid=os.getpid(),
            store_socket=self.store_socket,
            object_store_memory=self.object_store.store.capacity,
            object_manager_port=self.object_manager_port,
            is_head=self.is_head,
            start_time=self.start_time,
            labels=self.labels,
        )

    def _worker_argv(self, worker_id: bytes, job_id: int) -> list[str]:
        gcs = f"{self.gcs_address[0]}:{self.gcs_address[1]}"
        return [
            *("--host", self.host, "--raylet-port", str(self.port), "--gcs-address", gcs),
            *("--node-id", self.node_id.hex(), "--worker-id", worker_id.hex()),
            *("--job-id", str(job_id), "--session-dir", self.session_dir),
        ]

    def _resource_report(self) -> ReportResourcesRequest:
        scheduler = self.scheduler
        return resource_report(
            self.node_id,
            scheduler.total,
            scheduler.available,
            scheduler.queue,
            self.object_store.store.used,
            self.metrics_port,
        )

    def _address(self, port: int, worker_id: bytes, push_port: int = 0) -> Address:
        """Where a core worker of this node (driver or worker) listens."""
        return Address(
            host=self.host,
            port=port,
            worker_id=worker_id,
            node_id=self.node_id,
            push_port=push_port,
        )

    # -- carrying out the scheduler's actions ---------------------------------
    def _apply(self, actions: Iterable[Action]) -> None:
        changed = False
        for action in actions:
            if isinstance(action, Grant):
                changed = True
                fut = self._waiting.pop(action.request_id, None)
                worker = action.worker
                reply = LeaseReply(
                    status=LeaseStatus.GRANTED,
                    lease_id=action.lease_id,
                    worker=self._address(worker.port, worker.worker_id, worker.push_port),
                    worker_pid=worker.pid,
                    gpu_ids=list(action.gpu_ids),
                )
                if fut is None or fut.done():
                    # Nobody is waiting any more: take the lease back.
                    self._apply(
                        self.scheduler.return_lease(action.lease_id, False, time.monotonic())
                    )
                else:
                    fut.set_result(reply)
            elif isinstance(action, StartWorker):
                self._tasks.spawn(self._start_worker(action))
            elif isinstance(action, KillWorker):
                assert self._pool is not None
                self._pool.kill(action.worker_id)
            elif isinstance(action, AskExit):
                self._tasks.spawn(self._ask_exit(action.worker_id))
            elif isinstance(action, Cancel):
                fut = self._waiting.pop(action.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(
                        spillback.cancelled_reply(action.group_removed, action.env_error)
                    )
        if changed:
            self.reports.resources_changed()

    async def _start_worker(self, action: StartWorker) -> None:
        """Sets up its runtime environment (if it has packages), then starts it."""
        assert self._pool is not None
        setup = None
        if action.env:
            began = time.monotonic()
            if runtime_env.needs_setup(runtime_env.from_wire(action.env)):
                try:
                    setup = await self.runtime_envs.prepare(action.env)
                except exceptions.RuntimeEnvSetupError as e:
                    logger.warning("runtime environment setup failed: %s", e)
                    took = time.monotonic() - began
                    self.env_table.set_up(action.env, took, str(e), self._env_users())
                    self._apply(self.scheduler.env_failed(action.worker_id, str(e)))
                    return
            self.env_table.set_up(action.env, time.monotonic() - began, "", self._env_users())
        loop = asyncio.get_running_loop()
        self._register_deadlines[action.worker_id] = loop.call_later(
            self.config.worker_register_timeout_s, self._register_timed_out, action.worker_id
        )
        if setup is not None:
            self._setups[action.worker_id] = setup  # released when it exits
        await self._pool.start(action.worker_id, action.job_id, action.env, setup)

    async def _ask_exit(self, worker_id: bytes) -> None:
        worker = self.scheduler.workers.get(worker_id)
        if worker is None:
            return
        try:
            reply = await asyncio.wait_for(
                CoreWorkerStub(self._channels.get(self.host, worker.port)).ask_exit(Empty()), 5.0
            )
            accepted = reply.accepted
        except rpc.CONNECTION_ERRORS:
            accepted = True  # gone or stuck: stop it
        if accepted and self._pool is not None:
            self._pool.told_to_exit(worker_id)
        self._apply(self.scheduler.exit_answered(worker_id, accepted, time.monotonic()))

    def _register_timed_out(self, worker_id: bytes) -> None:
        self._register_deadlines.pop(worker_id, None)
        worker = self.scheduler.workers.get(worker_id)
        if worker is not None and worker.state is WorkerState.STARTING:
            logger.error("worker %s did not register in time; killing it", worker_id.hex()[-8:])
            assert self._pool is not None
            self._pool.kill(worker_id)
            self._apply(self.scheduler.worker_died(worker_id))

    def _on_worker_exit(self, worker_id: bytes, code: int | None) -> None:
        handle = self._register_deadlines.pop(worker_id, None)
        if handle is not None:
            handle.cancel()
        worker = self.scheduler.workers.get(worker_id)
        if worker is not None:
            self.reports.labels.pop(worker.pid, None)
        self.object_store.owner_died(worker_id)
        self.reports.worker_died(worker_id)
        self.user_metrics.worker_died(worker_id)
        setup = self._setups.pop(worker_id, None)
        if setup is not None:
            self.runtime_envs.release(setup, time.monotonic())
        # Leases this worker held as an owner end with it.
        self._apply(self.scheduler.owner_died(worker_id, time.monotonic()))
        if worker is not None and worker.state is not WorkerState.DEAD:
            logger.info("worker %s exited with code %s", worker_id.hex()[-8:], code)
        self._apply(self.scheduler.worker_died(worker_id))
        self.reports.resources_changed()

    # -- the Raylet service ---------------------------------------------------
    def _reconsider(self) -> None:
        """The cluster changed: queued requests another node can take go there."""
        for req, decision in spillback.redirects(
            self.scheduler.queue, self.scheduler.available, self.view
        ):
            if req not in self.scheduler.queue:
                continue  # granted meanwhile
            fut = self._waiting.pop(req.request_id, None)
            self._apply(self.scheduler.withdraw(req))
            if fut is not None and not fut.done():
                fut.set_result(spillback.redirect_reply(decision))

    async def register_driver(self, message: RegisterDriverRequest) -> Empty:
        bad = runtime_env.invalid_wire(message.runtime_env)
        if bad:
            raise GRPCError(Status.INVALID_ARGUMENT, f"invalid job runtime_env: {bad}")
        if message.worker_id:
            self._drivers[message.job_id] = message.worker_id
            self._driver_info[message.job_id] = WorkerInfo(
                address=self._address(message.port, message.worker_id),
                pid=message.pid,
                job_id=message.job_id,
                is_driver=True,
            )
        if runtime_env.set_up_at_start(runtime_env.from_wire(message.runtime_env)):
            env = message.runtime_env
            self._apply(self.scheduler.prestart(message.job_id, self.num_cpus, env))
        return Empty()

    async def list_workers(self, message: Empty) -> ListWorkersReply:
        """This node's drivers and registered workers (for `runtime memory`),
        and the workers that ended (the state API's dead rows)."""
        rows = list(self._driver_info.values())
        rows += [
            WorkerInfo(
                address=self._address(w.port, w.worker_id, w.push_port),
                pid=w.pid,
                job_id=w.job_id,
                label=self.reports.labels.get(w.pid, ""),
            )
            for w in self.scheduler.workers.values()
            if w.state in (WorkerState.IDLE, WorkerState.LEASED)
        ]
        ends = self._pool.ends.items() if self._pool is not None else ()
        ended = [
            EndedWorker(
                worker_id=worker_id,
                pid=end.pid,
                job_id=end.job_id,
                exit_type=end.exit_type(),
                exit_detail=end.exit_detail(),
            )
            for worker_id, end in ends
        ]
        return ListWorkersReply(workers=rows, ended=ended)

    async def get_worker_exit(self, message: WorkerExitRequest) -> WorkerExitReply:
        """How one of this node's workers ended (for the error naming its death)."""
        if len(message.worker_id) != WORKER_ID_BYTES or not 0 <= message.wait_s <= MAX_EXIT_WAIT_S:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"a worker id is {WORKER_ID_BYTES} bytes, wait_s 0..{MAX_EXIT_WAIT_S:g}",
            )
        ended = None
        if self._pool is not None:
            ended = await self._pool.exit_status(message.worker_id, message.wait_s)
        if ended is None:
            return WorkerExitReply(known=False)
        pid, code = ended
        return WorkerExitReply(known=True, pid=pid, has_code=code is not None, code=code or 0)

    async def list_runtime_envs(self, message: Empty) -> ListRuntimeEnvsReply:
        return ListRuntimeEnvsReply(runtime_envs=self.env_table.entries(self._env_users()))

    def _env_users(self) -> Counter[str]:
        """Live workers per runtime environment (canonical JSON)."""
        return Counter(w.env for w in self.scheduler.workers.values() if w.env)

    async def get_node_stats(self, message: Empty) -> NodeStatsReply:
        workers = [w for w in self.scheduler.workers.values() if w.state is not WorkerState.DEAD]
        return NodeStatsReply(
            node=self._node_info(),
            num_workers=len(workers),
            num_idle_workers=sum(1 for w in workers if w.state is WorkerState.IDLE),
            num_pending_leases=len(self.scheduler.queue),
            bytes_pulled=self.object_manager.bytes_received,
            bytes_served=self.object_manager.bytes_sent,
            num_pulls=self.object_manager.num_pulls,
        )

    # -- objects of other nodes ---------------------------------------------------
    async def pull_object(self, message: PullObjectRequest) -> PullObjectReply:
        return await self.object_manager.pull_reply(message)

    async def free_objects(self, message: FreeObjectsRequest) -> Empty:
        self.object_manager.free(message)
        return Empty()

    async def contains_object(self, message: ContainsObjectRequest) -> ContainsObjectReply:
        return await self.object_manager.contains(message)

    async def get_object_sizes(self, message: ObjectSizesRequest) -> ObjectSizesReply:
        return self.object_manager.sizes(message)

    async def health_check(self, message: Empty) -> Empty:
        return Empty()

    # -- background loops -----------------------------------------------------
    async def set_worker_label(self, message: WorkerLabelRequest) -> Empty:
        worker = self.scheduler.workers.get(message.worker_id)
        if worker is not None:  # (one line, bounded: it prefixes every line the worker writes)
            label = message.label.replace("\n", " ")[:MAX_WORKER_LABEL]
            self.reports.labels[worker.pid] = label
        return Empty()

    async def _reap(self) -> None:
        period = max(0.05, self.config.idle_worker_timeout_s / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            self._apply(self.scheduler.reap_idle(now))
            stale = self.runtime_envs.collect(now, self.config.runtime_env_cache_ttl_s)
            if stale:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, remove_folders, stale)
