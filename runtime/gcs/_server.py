"""The gcs service: one asyncio loop serving the cluster's control plane."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from .._private import gcs_client, metrics, rpc, state
from .._private import labels as node_labels
from .._private import resources as res
from .._private import task_events as te
from .._private.config import Config
from .._private.ids import job_hex
from .._private.tasks import TaskSet
from ..protocol.rt import (
    ActorReply,
    AddJobReply,
    AddJobRequest,
    AddTaskEventsRequest,
    Channel,
    CreateActorReply,
    CreateActorRequest,
    CreatePlacementGroupReply,
    CreatePlacementGroupsReply,
    CreatePlacementGroupsRequest,
    Empty,
    ErrorEvent,
    GcsBase,
    GetAllNodesReply,
    GetNamedActorRequest,
    JobEvent,
    JobRequest,
    KillActorRequest,
    KvDelReply,
    KvDelRequest,
    KvGetReply,
    KvGetRequest,
    KvKeysReply,
    KvKeysRequest,
    KvPutReply,
    KvPutRequest,
    ListActorsReply,
    ListClusterEventsReply,
    ListJobsReply,
    ListPlacementGroupsReply,
    ListTasksReply,
    ListTasksRequest,
    LogBatch,
    PlacementGroupReply,
    PlacementGroupRequest,
    PlacementGroupState,
    PubMessage,
    RegisterNodeRequest,
    RemovePlacementGroupsRequest,
    ReportResourcesRequest,
    ResourceBatch,
    ResourceView,
    SubscribeRequest,
    UnregisterNodeRequest,
    WaitActorRequest,
    WorkerFailures,
)
from . import _metrics as gcs_metrics
from ._actors import ActorManager
from ._cluster_events import ERROR_SEVERITY, ClusterEventLog, Severity, Source
from ._health import HealthChecker
from ._metrics import ServiceDiscovery
from ._placement_groups import ID_BYTES as PLACEMENT_GROUP_ID_BYTES
from ._placement_groups import PlacementGroupManager
from ._pubsub import PubSub
from ._tables import GcsTables, JobState
from ._task_events import TaskEventStore

#: Why a node that stopped on purpose is dead (not an error).
NODE_STOPPED = "it stopped"

logger = logging.getLogger(__name__)

#: A job's metadata (``JobConfig(metadata=...)``): keys and values together, at most.
MAX_JOB_METADATA = 64 * 1024


class GcsService(GcsBase):
    def __init__(
        self,
        config: Config | None = None,
        session_dir: str = "",
        tables: GcsTables | None = None,
    ) -> None:
        """``tables``: recovered from the storage (``GcsTables.recover``); none: a
        new cluster's, in memory."""
        config = config or Config.load()
        self.config = config
        self.tables = tables or GcsTables()
        self._writes = TaskSet()  # changes written through after the fact (deaths, ends)
        # Recovered running jobs, finished unless their driver subscribes again in time.
        self._awaiting_drivers: dict[int, asyncio.TimerHandle] = {}
        self.task_events = TaskEventStore(config.task_events_max_num_task_in_gcs)
        self.events = ClusterEventLog()
        self.discovery = ServiceDiscovery(session_dir, config.metrics_export_host)
        self.metrics_server = metrics.MetricsServer(
            lambda: gcs_metrics.families(
                self.tables, self.task_events, self.actors, self.placement_groups
            ),
            config.metrics_export_host,
            config.metrics_export_port,
            common={"SessionName": os.path.basename(session_dir), "Component": "gcs"},
        )
        self.pubsub = PubSub()
        self.channels = rpc.ChannelPool()
        durable = self.tables.storage.durable
        self.actors = ActorManager(
            channels=self.channels,
            nodes=lambda: list(self.tables.nodes.values()),
            job_running=self._job_running,
            report_error=self._report_error,
            save=self.tables.save_actor if durable else None,
            forget=self.tables.forget_actor if durable else None,
            dead_kept=config.maximum_gcs_destroyed_actor_cached_count,
        )
        self.placement_groups = PlacementGroupManager(
            channels=self.channels,
            nodes=lambda: list(self.tables.nodes.values()),
            publish=self.pubsub.publish,
            group_removed=self.actors.group_removed,
            save=self.tables.save_group if durable else None,
            forget=self.tables.forget_group if durable else None,
        )
        # Nodes that reported resources since the last RESOURCES batch: their
        # last report's resources (JSON, as sent).
        self._changed_resources: dict[bytes, bytes] = {}
        self._resources_flush_scheduled = False
        self._resource_period = config.resource_report_period_s
        self.health = HealthChecker(
            channels=self.channels,
            nodes=lambda: list(self.tables.nodes.values()),
            mark_dead=self._mark_node_dead,
            period=config.health_check_period_s,
            timeout=config.health_check_timeout_s,
            threshold=config.health_check_failure_threshold,
        )

    async def start(self) -> None:
        """Takes up what a previous gcs on the same storage left, then starts."""
        tables = self.tables
        # Whether clients should wait for this gcs to come back if it dies.
        tables.kv[gcs_client.STORAGE_KV] = tables.storage.kind.encode()
        self.actors.recover(tables.recovered_actors)
        await self.placement_groups.recover(tables.recovered_groups)
        tables.recovered_actors, tables.recovered_groups = [], []
        # A job whose driver does not come back to this gcs ended meanwhile.
        for job_id, record in tables.jobs.items():
            if record.state is JobState.RUNNING:
                self._awaiting_drivers[job_id] = asyncio.get_running_loop().call_later(
                    self.config.gcs_reconnect_timeout_s, self._finish_job, job_id
                )
        self.health.start()
        self.placement_groups.start()

    def _job_running(self, job_id: int) -> bool:
        record = self.tables.jobs.get(job_id)
        return record is not None and record.state is JobState.RUNNING

    async def serve_metrics(self) -> None:
        """Serves the gcs's metrics and names every endpoint in the session."""
        self.discovery.gcs_port = await self.metrics_server.start()
        self.discovery.update(list(self.tables.nodes.values()))

    async def close(self) -> None:
        await self._writes.close()
        await self.metrics_server.close()
        await self.health.close()
        await self.placement_groups.close()
        await self.actors.close()
        self.channels.close()

    # -- nodes ----------------------------------------------------------------
    async def register_node(self, message: RegisterNodeRequest) -> Empty:
        node = message.node
        if node is None or len(node.node_id) != 16:
            raise GRPCError(Status.INVALID_ARGUMENT, "a node needs a 16-byte id")
        bad = res.invalid(node.resources_total) or node_labels.wire_error(
            node.labels, selector=False
        )
        if bad:
            raise GRPCError(Status.INVALID_ARGUMENT, f"invalid node: {bad}")
        node.alive = True
        self.tables.nodes[node.node_id] = node
        logger.info(
            "node %s registered at %s:%d", node.node_id.hex()[:8], node.host, node.raylet_port
        )
        self.events.add(
            Source.GCS,
            Severity.INFO,
            f"Node {node.node_id.hex()} joined at {node.host}:{node.raylet_port} with "
            + ", ".join(f"{k}: {v:g}" for k, v in sorted(node.resources_total.items())),
            node_id=node.node_id.hex(),
            ip=node.host,
        )
        await self.tables.save_node(node)
        self.pubsub.publish(PubMessage(channel=Channel.NODES, node=node))
        self.placement_groups.resources_changed()
        self.discovery.update(list(self.tables.nodes.values()))
        return Empty()

    async def unregister_node(self, message: UnregisterNodeRequest) -> Empty:
        self._mark_node_dead(message.node_id, NODE_STOPPED)
        return Empty()

    def _mark_node_dead(self, node_id: bytes, why: str) -> None:
        node = self.tables.nodes.get(node_id)
        if node is None or not node.alive:
            return
        node.alive = False
        node.resources_available = {}
        self._writes.spawn(self.tables.save_node(node))
        logger.warning("node %s at %s is dead: %s", node_id.hex()[:8], node.host, why)
        self.events.add(
            Source.GCS,
            Severity.INFO if why == NODE_STOPPED else Severity.ERROR,
            f"Node {node_id.hex()} at {node.host} is dead: {why}",
            node_id=node_id.hex(),
            ip=node.host,
        )
        self.actors.node_died(node_id)
        self.placement_groups.node_died(node_id)
        self.actors.owners_died(lambda owner: owner.node_id == node_id)
        self.pubsub.publish(PubMessage(channel=Channel.NODES, node=node))
        self.discovery.update(list(self.tables.nodes.values()))

    async def get_all_nodes(self, message: Empty) -> GetAllNodesReply:
        return GetAllNodesReply(nodes=list(self.tables.nodes.values()))

    async def report_resources(self, message: ReportResourcesRequest) -> Empty:
        node = self.tables.nodes.get(message.node_id)
        try:
            available, total = res.decode_sets(message.resources)
        except ValueError as e:
            raise GRPCError(Status.INVALID_ARGUMENT, f"invalid resource report: {e}") from None
        bad = res.invalid(available, allow_negative=True) or res.invalid(total)
        if bad:
            raise GRPCError(Status.INVALID_ARGUMENT, f"invalid resource report: {bad}")
        if node is not None and node.alive:
            node.resources_available = available
            if total:
                node.resources_total = total
            node.object_store_used = message.object_store_used
            node.pending = list(message.pending)
            if message.metrics_port and message.metrics_port != node.metrics_port:
                node.metrics_port = message.metrics_port
                self.discovery.update(list(self.tables.nodes.values()))
            # Passed on as the node wrote them (a checked report: no re-encoding).
            self._changed_resources[message.node_id] = message.resources
            self.placement_groups.resources_changed()
            if not self._resources_flush_scheduled:
                self._resources_flush_scheduled = True
                asyncio.get_running_loop().call_later(
                    self._resource_period, self._publish_resources
                )
        return Empty()

    def _publish_resources(self) -> None:
        """One batch per period for every subscriber, however many nodes report."""
        self._resources_flush_scheduled = False
        changed, self._changed_resources = self._changed_resources, {}
        views = [
            ResourceView(node_id=node_id, resources=raw)
            for node_id, raw in changed.items()
            if (node := self.tables.nodes.get(node_id)) is not None and node.alive
        ]
        if views:
            self.pubsub.publish(
                PubMessage(channel=Channel.RESOURCES, resources=ResourceBatch(views=views))
            )

    # -- jobs -----------------------------------------------------------------
    async def add_job(self, message: AddJobRequest) -> AddJobReply:
        host = message.driver.host if message.driver is not None else ""
        size = sum(len(k) + len(v) for k, v in message.metadata.items())
        if size > MAX_JOB_METADATA:
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"a job's metadata is at most {MAX_JOB_METADATA} characters, got {size}",
            )
        record = self.tables.add_job(
            message.namespace,
            message.driver_pid,
            host,
            message.entrypoint[: te.MAX_MESSAGE],
            dict(message.metadata),
        )
        await self.tables.save_job(record)
        logger.info("job %d started by pid %d", record.job_id, record.driver_pid)
        self.events.add(
            Source.GCS,
            Severity.INFO,
            f"Job {job_hex(record.job_id)} started: its driver is pid {record.driver_pid}"
            + (f" on {host}" if host else ""),
            job_id=job_hex(record.job_id),
        )
        return AddJobReply(job_id=record.job_id)

    async def mark_job_finished(self, message: JobRequest) -> Empty:
        self._finish_job(message.job_id)
        return Empty()

    def _finish_job(self, job_id: int) -> None:
        if self.tables.finish_job(job_id):
            self._writes.spawn(self.tables.save_job(self.tables.jobs[job_id]))
            logger.info("job %d finished", job_id)
            self.events.add(
                Source.GCS, Severity.INFO, f"Job {job_hex(job_id)} finished", job_id=job_hex(job_id)
            )
            self.actors.job_finished(job_id)
            self.placement_groups.job_finished(job_id)
            self.pubsub.publish(
                PubMessage(channel=Channel.JOBS, job=JobEvent(job_id=job_id, finished=True))
            )

    # -- key-value store ------------------------------------------------------
    async def kv_put(self, message: KvPutRequest) -> KvPutReply:
        added = self.tables.kv_put(message.namespace, message.key, message.value, message.overwrite)
        if added or message.overwrite:
            await self.tables.save_kv(message.namespace, message.key)
        return KvPutReply(added=added)

    async def kv_get(self, message: KvGetRequest) -> KvGetReply:
        value = self.tables.kv_get(message.namespace, message.key)
        if message.found_only:
            return KvGetReply(found=value is not None)
        return KvGetReply(found=value is not None, value=value or b"")

    async def kv_del(self, message: KvDelRequest) -> KvDelReply:
        deleted = self.tables.kv_del(message.namespace, message.key, message.by_prefix)
        await self.tables.forget_kv(message.namespace, deleted)
        return KvDelReply(deleted=len(deleted))

    async def kv_keys(self, message: KvKeysRequest) -> KvKeysReply:
        return KvKeysReply(keys=self.tables.kv_keys(message.namespace, message.prefix))

    # -- actors -----------------------------------------------------------------
    async def create_actor(self, message: CreateActorRequest) -> CreateActorReply:
        if message.actor is None:
            return CreateActorReply(ok=False, error="no actor in the request")
        bad = res.invalid(message.actor.resources)
        if bad:
            return CreateActorReply(ok=False, error=f"invalid actor: {bad}")
        reply = self.actors.create(message)
        if reply.ok and reply.actor is not None and not reply.existed:
            await self.actors.saved(reply.actor.actor_id)  # durable before it is told
        pg_id = message.actor.placement_group_id if message.actor is not None else b""
        if pg_id and self.placement_groups.state_of(pg_id) is PlacementGroupState.REMOVED:
            await self.actors.group_removed(pg_id)
        return reply

    async def wait_actor(self, message: WaitActorRequest) -> ActorReply:
        return await self.actors.wait(
            message.actor_id, message.min_restarts, message.lost_worker_id
        )

    async def get_named_actor(self, message: GetNamedActorRequest) -> ActorReply:
        return self.actors.get_named(message.name, message.namespace)

    async def kill_actor(self, message: KillActorRequest) -> Empty:
        await self.actors.kill(message.actor_id, message.no_restart, message.cause, message.exiting)
        return Empty()

    async def list_actors(self, message: Empty) -> ListActorsReply:
        return ListActorsReply(actors=[r.info for r in self.actors.actors.values()])

    # -- placement groups ---------------------------------------------------------
    async def create_placement_groups(
        self, message: CreatePlacementGroupsRequest
    ) -> CreatePlacementGroupsReply:
        results = []
        for info in message.placement_groups:
            if not info.bundles:
                results.append(
                    CreatePlacementGroupReply(ok=False, error="a placement group needs bundles")
                )
                continue
            results.append(self.placement_groups.create(info))
        # Acknowledged once stored (each group as it stands, in one wait).
        await asyncio.gather(
            *(
                self.placement_groups.saved(info.placement_group_id)
                for info, reply in zip(message.placement_groups, results, strict=True)
                if reply.ok
            )
        )
        return CreatePlacementGroupsReply(results=results)

    async def remove_placement_groups(self, message: RemovePlacementGroupsRequest) -> Empty:
        ids = message.placement_group_ids
        bad = next((i for i in ids if len(i) != PLACEMENT_GROUP_ID_BYTES), None)
        if bad is not None:
            raise GRPCError(Status.INVALID_ARGUMENT, f"not a placement group id: {bad.hex()!r}")
        await asyncio.gather(*(self.placement_groups.remove(pg_id) for pg_id in ids))
        return Empty()

    async def wait_placement_group(self, message: PlacementGroupRequest) -> PlacementGroupReply:
        return await self.placement_groups.wait(message.placement_group_id, message.timeout_s)

    async def get_placement_group(self, message: PlacementGroupRequest) -> PlacementGroupReply:
        return self.placement_groups.get(
            message.placement_group_id, message.name, message.namespace
        )

    async def list_placement_groups(self, message: Empty) -> ListPlacementGroupsReply:
        return ListPlacementGroupsReply(
            placement_groups=[r.info for r in self.placement_groups.groups.values()]
        )

    # -- observability -----------------------------------------------------------
    async def add_task_events(self, message: AddTaskEventsRequest) -> Empty:
        try:
            rows = te.decode(te.Batch(message.rows, message.ids, message.attempts, message.times))
        except ValueError as e:
            raise GRPCError(Status.INVALID_ARGUMENT, str(e)) from None
        self.task_events.add(
            message.job_id,
            rows,
            node_id=message.node_id.hex(),
            worker_id=message.worker_id.hex(),
            pid=message.pid,
            dropped=max(0, message.dropped),
        )
        return Empty()

    async def list_tasks(self, message: ListTasksRequest) -> ListTasksReply:
        try:
            filters = te.check_filters(json.loads(message.filters) if message.filters else [])
        except (ValueError, TypeError) as e:
            raise GRPCError(Status.INVALID_ARGUMENT, f"bad filters: {e}") from None
        rows: list[dict[str, Any]] = []
        total = 0
        limit = message.limit if message.limit > 0 else None
        records = self.task_events.records(message.job_id, message.newest_first)
        for record in records:
            row = None
            if filters:  # they may name any column: the full row is what they see
                row = record.row(job_hex(record.job_id), True)
                if not te.matches(row, filters):
                    continue
            total += 1
            # Rows past the limit are counted, not built (the dashboard polls).
            if message.summary or limit is None or len(rows) < limit:
                row = row or record.row(job_hex(record.job_id), message.detail)
                rows.append(row if message.detail else te.basic(row))
        if message.summary:
            data = json.dumps(state.summarize_tasks(rows)).encode()
        else:
            data = te.encode(rows)
        dropped = self.task_events.total_dropped(message.job_id)
        return ListTasksReply(rows=data, total=total, dropped=dropped)

    async def list_jobs(self, message: Empty) -> ListJobsReply:
        return ListJobsReply(jobs=[record.info() for record in self.tables.jobs.values()])

    def _report_error(self, job_id: int, kind: str, message: str) -> None:
        event = ErrorEvent(job_id=job_id, type=kind, message=message, time=time.time())
        self._error_event(event, Source.GCS)
        self.pubsub.publish(PubMessage(channel=Channel.ERRORS, error=event))

    async def publish_error(self, message: ErrorEvent) -> Empty:
        message.message = message.message[: te.MAX_MESSAGE]
        message.type = message.type[: te.MAX_TEXT]
        self._error_event(message, Source.CORE_WORKER)
        self.pubsub.publish(PubMessage(channel=Channel.ERRORS, error=message))
        return Empty()

    def _error_event(self, error: ErrorEvent, source: Source) -> None:
        fields = {"type": error.type}
        if error.job_id:
            fields["job_id"] = job_hex(error.job_id)
        severity = ERROR_SEVERITY.get(error.type, Severity.ERROR)
        self.events.add(source, severity, error.message, error.time or None, **fields)

    async def list_cluster_events(self, message: Empty) -> ListClusterEventsReply:
        return ListClusterEventsReply(events=self.events.events())

    # -- pubsub ---------------------------------------------------------------
    async def report_worker_failures(self, message: WorkerFailures) -> Empty:
        dead = set(message.worker_ids)
        self.actors.owners_died(lambda owner: owner.worker_id in dead)
        self.pubsub.publish(PubMessage(channel=Channel.WORKERS, workers=message))
        return Empty()

    async def publish_logs(self, message: LogBatch) -> Empty:
        self.pubsub.publish(PubMessage(channel=Channel.LOGS, logs=message))
        return Empty()

    async def subscribe(self, message: SubscribeRequest) -> AsyncIterator[PubMessage]:
        timer = self._awaiting_drivers.pop(message.owns_job, None)
        if timer is not None:
            timer.cancel()  # its driver is back
        sub = self.pubsub.subscribe(set(message.channels), message.job_id, message.owns_node)
        try:
            async for item in sub.messages():
                yield item
        finally:
            # The stream ended: its owner (a driver, a raylet) is gone.
            self.pubsub.unsubscribe(sub)
            if message.owns_job:
                self._finish_job(message.owns_job)
            if message.owns_node:
                self._mark_node_dead(message.owns_node, "its raylet's connection closed")
